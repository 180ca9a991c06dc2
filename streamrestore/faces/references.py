"""Reference photos: from folders named on the command line to aligned crops + embeddings.

A reference set is one person's photos: whole photos or aligned crops that the face fills
(FFHQ-style, like InstantRestore's conditioning images). A photo that cannot be used (no face
found, not readable) is skipped with a warning naming it; a set left without any usable photo
raises :class:`~streamrestore.errors.ReferencesError` listing them, as do missing folders.
Doubtful cases (several faces, a face unlike the rest) only warn.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from streamrestore.errors import InputError, ReferencesError
from streamrestore.faces.align import alignment_matrix, warp_to_template
from streamrestore.faces.detect import Detector, detect_padded
from streamrestore.faces.identity import FaceEmbedder, ReferenceSet, default_threshold
from streamrestore.images import IMAGE_SUFFIXES, UNREAD_PHOTO_FORMATS, read_rgb

__all__ = ["parse_reference_specs", "check_reference_specs", "load_reference_sets",
           "list_reference_images"]

logger = logging.getLogger(__name__)


def parse_reference_specs(specs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """Parse ``--ref`` values: ``"DIR"`` (the set is named after the folder) or ``"NAME=DIR"``.

    DIR may also be a single photo (then the name defaults to the file's stem). A ``=`` only
    separates a name when the part before it has no path separator, so paths containing
    ``=`` still work as plain DIRs.

    Args:
        specs: the values; paths count as plain DIRs.

    Returns:
        (name, path) of each set, in the order given.

    Raises:
        ReferencesError: a spec without a folder or a usable name, or a name given twice.
    """
    parsed: list[tuple[str, Path]] = []
    for spec in specs:
        spec = str(spec)
        name, separator, rest = spec.partition("=")
        if separator and name and "/" not in name and "\\" not in name:
            path = Path(rest).expanduser()
        else:
            name, path = "", Path(spec).expanduser()
        if not str(path) or str(path) == ".":
            raise ReferencesError(f"reference {spec!r}: no folder given; use DIR or NAME=DIR")
        if not name:
            resolved = path.resolve()
            name = resolved.stem if resolved.suffix.lower() in IMAGE_SUFFIXES else resolved.name
        if not name.strip():
            raise ReferencesError(f"reference {spec!r}: cannot take a name from it; use NAME=DIR")
        parsed.append((name, path))
    names = [name for name, _ in parsed]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ReferencesError(
            f"reference set name(s) {', '.join(duplicates)} given more than once; name them apart with NAME=DIR"
        )
    return parsed


def check_reference_specs(specs: Sequence[str | Path]) -> None:
    """Checks reference specs without reading any photo; cheap enough to run before any model
    is loaded.

    Args:
        specs: as for :func:`parse_reference_specs`.

    Raises:
        ReferencesError: a spec that cannot work: a name given twice, a folder that is missing
            or has no image files.
    """
    for _name, path in parse_reference_specs(specs):
        list_reference_images(path, warn=False)


def list_reference_images(path: Path, *, warn: bool = True) -> list[Path]:
    """The photos of one reference folder (or the single photo ``path``), sorted by name.

    Args:
        path: the folder, or a single photo.
        warn: non-image files are skipped with a warning (False: silently); hidden files are
            always skipped silently.

    Raises:
        ReferencesError: ``path`` is missing, is a file that is not a photo, or a folder
            without photos.
    """
    if not path.exists():
        raise ReferencesError(f"reference folder {path} does not exist")
    if path.is_file():
        if path.suffix.lower() in UNREAD_PHOTO_FORMATS:
            raise ReferencesError(f"reference {path}: {UNREAD_PHOTO_FORMATS[path.suffix.lower()]}")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ReferencesError(
                f"reference {path} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))}); give a folder of photos"
            )
        return [path]
    images, unread = [], []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".") or entry.is_dir():
            continue
        if entry.suffix.lower() in IMAGE_SUFFIXES:
            images.append(entry)
        elif entry.suffix.lower() in UNREAD_PHOTO_FORMATS:
            unread.append(entry)
        elif warn:
            logger.warning("reference folder %s: skipping %s (not an image file)", path, entry.name)
    if unread and (warn or not images):
        names = ", ".join(entry.name for entry in unread[:3]) + (f" and {len(unread) - 3} more" if len(unread) > 3 else "")
        hint = UNREAD_PHOTO_FORMATS[unread[0].suffix.lower()]
        if not images:
            raise ReferencesError(f"reference folder {path} has only photos that cannot be read ({names}): {hint}")
        logger.warning("reference folder %s: skipping %s: %s", path, names, hint)
    if not images:
        raise ReferencesError(
            f"reference folder {path} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}); add photos of the person"
        )
    return images


def _read_reference(file: Path) -> np.ndarray:
    try:
        return read_rgb(file)
    except InputError:
        raise ReferencesError(f"cannot read reference photo {file}; is it a valid image? remove or replace it") from None


def _warn_outliers(name: str, files: list[str], embeddings: np.ndarray, threshold: float) -> None:
    """Warn about photos whose face does not look like the rest of the set."""
    if len(files) < 2:
        return
    similarities = embeddings @ embeddings.T
    if len(files) == 2:
        if similarities[0, 1] < threshold:
            logger.warning(
                "reference set %s: %s and %s do not look like the same person (similarity %.2f < %.2f)",
                name, files[0], files[1], similarities[0, 1], threshold,
            )
        return
    # Compare everyone with the medoid (the photo most like all others), so that one stranger
    # cannot drag the set's centre towards himself.
    medoid = int(np.argmax(similarities.sum(axis=1)))
    for index, file in enumerate(files):
        if index != medoid and similarities[index, medoid] < threshold:
            logger.warning(
                "reference set %s: %s does not look like the other photos (similarity %.2f < %.2f); "
                "remove it if it shows someone else",
                name, file, similarities[index, medoid], threshold,
            )


def load_reference_sets(specs: Sequence[str | Path], detector: Detector, embedder: FaceEmbedder,
                        resolution: int | Sequence[int], *, max_images: int | None = None) -> list[ReferenceSet]:
    """Load every reference set named by ``specs``.

    Each photo's face is found (also in a padded copy, for crops the face fills), aligned to
    the FFHQ template at ``resolution`` and embedded. Photos without a face, or unreadable, are
    skipped with a warning.

    Args:
        specs: as for :func:`parse_reference_specs`.
        detector: finds the face in each photo (the largest is used).
        embedder: embeds each face (for matching tracks to sets, and the outlier warnings).
        resolution: side of the aligned crops; several sides (a pipeline that cuts faces at
            several, ``crop_resolution="auto"``): ``crops`` at the largest, and each side
            aligned from the photo itself in ``crops_at`` (a crop shrunk from a larger one is
            softer than what the restorer was trained on).
        max_images: keep only the first N photos (by file name) of each set; the restorer's
            attention cost grows with N (default None: all).

    Raises:
        ReferencesError: a spec or folder that cannot work (see :func:`check_reference_specs`),
            or a set with no usable photo left.
        ValueError: ``max_images`` is below 1.
    """
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be None or >= 1, got {max_images!r}")
    sides = sorted({int(resolution)} if isinstance(resolution, (int, np.integer)) else {int(r) for r in resolution})
    threshold = getattr(embedder, "threshold", None)
    if threshold is None:
        threshold = default_threshold(embedder.name)
    sets = []
    for name, path in parse_reference_specs(specs):
        images = list_reference_images(path)
        if max_images is not None and len(images) > max_images:
            logger.info("reference set %s: using the first %d of %d photos", name, max_images, len(images))
            images = images[:max_images]
        crops: dict[int, list[np.ndarray]] = {side: [] for side in sides}
        embeddings, files, unusable = [], [], []
        for file in images:
            try:
                rgb = _read_reference(file)
            except ReferencesError:
                logger.warning("reference photo %s cannot be read as an image; skipping it", file)
                unusable.append(f"{file.name} (not readable)")
                continue
            faces = detect_padded(detector, rgb)
            if not faces:
                logger.warning("no face found in reference photo %s; skipping it (use a photo where the face "
                               "is clearly visible)", file)
                unusable.append(f"{file.name} (no face)")
                continue
            face = max(faces, key=lambda f: f.size)
            if len(faces) > 1:
                logger.warning("reference photo %s shows %d faces; using the largest", file, len(faces))
            for side in sides:
                crops[side].append(warp_to_template(rgb, alignment_matrix(face.kps, side), side))
            embeddings.append(embedder.embed(rgb, [face])[0])
            files.append(str(file))
        if not files:
            raise ReferencesError(
                f"reference set {name} ({path}) has no usable photo: {', '.join(unusable)}; "
                "add photos where the face is clearly visible"
            )
        embedding_array = np.stack(embeddings).astype(np.float32)
        _warn_outliers(name, files, embedding_array, threshold)
        by_side = {side: np.stack(c) for side, c in crops.items()}
        sets.append(ReferenceSet(name=name, crops=by_side[sides[-1]], embeddings=embedding_array, files=files,
                                 embedder=embedder.name, crops_at=by_side if len(sides) > 1 else {}))
    return sets
