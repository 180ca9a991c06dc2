"""Reference photos: from folders named on the command line to aligned crops + embeddings.

A reference set is one person's photos: whole photos or aligned crops that the face fills
(FFHQ-style, like InstantRestore's conditioning images), or a video of them, of which
:data:`FRAMES_PER_REFERENCE_VIDEO` frames evenly spaced over it are taken (another clip of the
person is what fits a face best: the model card). A photo or frame that cannot be used (no face
found, not readable) is skipped with a warning naming it; a set left without any usable photo
raises :class:`~streamrestore.errors.ReferencesError` listing them, as do missing folders.
Doubtful cases (several faces, a face unlike the rest) only warn.
"""
from __future__ import annotations

import itertools
import logging
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Sequence

import numpy as np

from streamrestore.errors import InputError, PhotoTooLargeError, ReferencesError, one_line
from streamrestore.faces.align import alignment_matrix, warp_to_template
from streamrestore.faces.detect import Detector, detect_padded
from streamrestore.faces.identity import FaceEmbedder, ReferenceSet, default_threshold
from streamrestore.hdr import to_sdr_picture
from streamrestore.images import IMAGE_SUFFIXES, UNREAD_PHOTO_FORMATS, read_rgb
from streamrestore.video.reader import VIDEO_SUFFIXES, VideoReader, probe, upright_rgb

__all__ = ["FRAMES_PER_REFERENCE_VIDEO", "parse_reference_specs", "check_reference_specs", "load_reference_sets",
           "list_reference_files", "reference_files_record", "reference_pictures"]

logger = logging.getLogger(__name__)

#: frames a reference video gives, evenly spaced over it: as many as the video benchmark's references
#: (4 frames of another clip of the person), with which its figures were measured
FRAMES_PER_REFERENCE_VIDEO = 4


def _kind(path: Path) -> str | None:
    """"photo", "video" or None, by the file's suffix."""
    suffix = path.suffix.lower()
    return "photo" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def parse_reference_specs(specs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """Parse ``--ref`` values: ``"DIR"`` (the set is named after the folder) or ``"NAME=DIR"``.

    DIR may also be a single photo or video (then the name defaults to the file's stem). A ``=`` only
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
        # (a folder or file named so, "x=y", is that path: a name would take "x" and look for "y")
        if separator and name and "/" not in name and "\\" not in name and not Path(spec).expanduser().exists():
            path = Path(rest).expanduser()
        else:
            name, path = "", Path(spec).expanduser()
        if not str(path) or str(path) == ".":
            raise ReferencesError(f"reference {spec!r}: no folder given; use DIR or NAME=DIR")
        if not name:
            resolved = path.resolve()
            name = resolved.stem if _kind(resolved) else resolved.name
        if not name.strip():
            raise ReferencesError(f"reference {spec!r}: cannot take a name from it; use NAME=DIR")
        parsed.append((name, path))
    refuse_repeated_names([name for name, _ in parsed])
    return parsed


def refuse_repeated_names(names: Sequence[str]) -> None:
    """Raises ReferencesError where two reference sets would go by one name, or by names that read the same: a
    folder's "José" from macOS is decomposed where the one typed is not, and "Anna " and "anna" are two people to
    the program and one on the screen."""
    seen: dict[str, list[str]] = {}
    for name in names:
        seen.setdefault(unicodedata.normalize("NFC", name).strip().casefold(), []).append(name)
    alike = [given for given in seen.values() if len(given) > 1]
    if alike:
        said = "; ".join(" and ".join(repr(n) for n in given) if len(set(given)) > 1 else given[0] for given in alike)
        raise ReferencesError(f"reference set name(s) {one_line(said)} given more than once (names that read the same "
                              "are one); name them apart with NAME=DIR")


def check_reference_specs(specs: Sequence[str | Path]) -> None:
    """Checks reference specs without reading any photo; cheap enough to run before any model
    is loaded.

    Args:
        specs: as for :func:`parse_reference_specs`.

    Raises:
        ReferencesError: a spec that cannot work: a name given twice, a folder that is missing
            or has no photo or video files.
    """
    for _name, path in parse_reference_specs(specs):
        list_reference_files(path, warn=False)


def reference_files_record(specs: Sequence[str | Path]) -> list[dict]:
    """What a record of a run says of its references: each set's ``name``, its folder's (or file's) absolute
    ``path`` and the sha256 of each of its photos and videos (``files``, by name): which pictures steered the
    faces, so that a run with other photos in the same folder reads as other settings.

    Raises:
        ReferencesError: as :func:`parse_reference_specs` and :func:`list_reference_files`.
    """
    from streamrestore.output_file import sha256_of

    def digest(file: Path) -> str:
        try:
            return sha256_of(file)
        except OSError as exc:  # (skipped by the run, with a warning: recorded as what it was)
            return f"unreadable ({exc.strerror or exc})"

    return [{"name": name or path.stem, "path": str(path.resolve()),
             "files": {file.name: digest(file) for file in list_reference_files(path, warn=False)}}
            for name, path in parse_reference_specs(specs)]


def list_reference_files(path: Path, *, warn: bool = True) -> list[Path]:
    """The photos and videos of one reference folder (or the single photo or video ``path``),
    sorted by name.

    Args:
        path: the folder, or a single photo or video.
        warn: other files are skipped with a warning (False: silently); hidden files are
            always skipped silently.

    Raises:
        ReferencesError: ``path`` is missing, is a file that is neither a photo nor a video, or
            a folder without either.
    """
    if not path.exists():
        raise ReferencesError(f"reference folder {path} does not exist")
    if path.is_file():
        if path.suffix.lower() in UNREAD_PHOTO_FORMATS:
            raise ReferencesError(f"reference {path}: {UNREAD_PHOTO_FORMATS[path.suffix.lower()]}")
        if _kind(path) is None:
            raise ReferencesError(
                f"reference {path} is neither a photo ({', '.join(sorted(IMAGE_SUFFIXES))}) nor a video; give a "
                "folder of photos, or a video of the person"
            )
        return [path]
    images, unread = [], []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".") or entry.is_dir():
            continue
        if _kind(entry):
            images.append(entry)
        elif entry.suffix.lower() in UNREAD_PHOTO_FORMATS:
            unread.append(entry)
        elif warn:
            logger.warning("reference folder %s: skipping %s (neither a photo nor a video)", path, entry.name)
    if unread and (warn or not images):
        names = ", ".join(entry.name for entry in unread[:3]) + (f" and {len(unread) - 3} more" if len(unread) > 3 else "")
        hint = UNREAD_PHOTO_FORMATS[unread[0].suffix.lower()]
        if not images:
            raise ReferencesError(f"reference folder {path} has only photos that cannot be read ({names}): {hint}")
        logger.warning("reference folder %s: skipping %s: %s", path, names, hint)
    if not images:
        raise ReferencesError(
            f"reference folder {path} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}) or videos; add photos "
            "of the person"
        )
    return images


class _SkippedPhoto(ReferencesError):
    """A reference photo that cannot be used: the error, and in a word why (``ReferenceSet.skipped``)."""

    def __init__(self, message: str, why: str, said: str | None = None) -> None:
        super().__init__(message)
        self.why = why
        #: what is said of it where it is skipped (a folder's other photos serve)
        self.said = said or message


#: the most pixels a reference photo is read at (a face's crop needs 512 px; a 100-megapixel camera's JPEG is
#: decoded at a quarter of its side, a larger PNG refused)
REFERENCE_PHOTO_PIXELS = 40_000_000


def reference_pictures(file: Path) -> Iterator[tuple[str, np.ndarray]]:
    """The pictures one reference file gives, as (label for messages, (H, W, 3) uint8 RGB): a photo
    itself; a video :data:`FRAMES_PER_REFERENCE_VIDEO` frames at evenly spaced instants, upright
    and deinterlaced, labelled ``"clip.mp4 at 12.3 s"``.

    Raises:
        ReferencesError: the photo cannot be read, or the video cannot be read or has no length.
    """
    if _kind(file) == "photo":
        try:
            yield file.name, read_rgb(file, most_pixels=REFERENCE_PHOTO_PIXELS)
        except PhotoTooLargeError as exc:  # (it names the file)
            raise _SkippedPhoto(f"reference photo {exc}", "too large") from None
        except InputError:
            raise _SkippedPhoto(f"cannot read reference photo {file}; is it a valid image? remove or replace it",
                                "not readable", said=f"reference photo {file} cannot be read as an image") from None
        return
    try:
        info = probe(file)
    except InputError as exc:
        raise ReferencesError(f"reference video {file}: {exc}") from None
    if not info.duration:
        raise ReferencesError(f"reference video {file}: its length is unknown, so its frames cannot be spread over "
                              "it; give frames of it saved as photos")
    first = (info.start_time - info.origin) if info.start_time is not None else 0.0
    if info.frame_count is not None and info.frame_count <= FRAMES_PER_REFERENCE_VIDEO:
        # (a clip of no more frames than picks: each whole frame once, in order; one frame exported as a video
        # had none at or after the first pick's instant, and stopped the run with "no usable photo: ;")
        given = spoiled = 0
        try:
            with VideoReader(file, deinterlace=True) as reader:
                for frame in itertools.islice(reader.frames(), 2 * FRAMES_PER_REFERENCE_VIDEO):  # (a count too low)
                    if _damaged_near(reader, frame):
                        spoiled += 1
                        continue
                    when = frame.time - info.origin if frame.time is not None else first
                    yield f"{file.name} at {when:.2f} s", to_sdr_picture(frame, upright_rgb(frame))
                    given += 1
                    if given == FRAMES_PER_REFERENCE_VIDEO:
                        break
        except InputError as exc:
            raise ReferencesError(f"reference video {file}: {exc}") from None
        if spoiled:
            logger.warning("reference video %s: %d of its frames spoiled by damaged data; left out", file, spoiled)
        return
    spacing = info.duration / FRAMES_PER_REFERENCE_VIDEO
    used: set[float] = set()
    for k in range(FRAMES_PER_REFERENCE_VIDEO):
        at = first + (k + 0.5) * spacing
        try:
            with VideoReader(file, start=at, deinterlace=True) as reader:
                frame, spoiled = _first_undamaged_frame(reader, until=at + spacing / 2)
        except InputError:
            frame, spoiled = None, 0
        if frame is None:
            if spoiled:
                logger.warning("reference video %s: damaged data from %.1f s to %.1f s (every frame there lost or "
                               "decoded with errors); no frame of it is used from there", file, at, at + spacing / 2)
            continue
        when = frame.time - info.origin if frame.time is not None else at
        if when in used:  # (the whole frame after a damaged stretch, found from two picks)
            continue
        used.add(when)
        if spoiled:  # (a damaged stretch gave the frame before it, repeated, at each lost instant: unsaid, twice used)
            logger.warning("reference video %s: damaged data at %.1f s; its frame at %.1f s is used instead",
                           file, at, when)
        yield f"{file.name} at {when:.1f} s", to_sdr_picture(frame, upright_rgb(frame))  # (an HDR clip: as faces are seen)


def _damaged_near(reader: VideoReader, frame) -> bool:
    """Whether damaged data spoiled ``frame`` (one ``reader`` gave) or a frame beside it: deinterlacing (bwdif)
    builds each frame from its neighbours."""
    near = 1.5 * float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.1
    at = frame.time - reader.info.origin if frame.time is not None else None
    return at is not None and any(abs(t - at) <= near for t in reader.damaged_times)


def _first_undamaged_frame(reader: VideoReader, until: float) -> tuple[object | None, int]:
    """The first frame ``reader`` gives that damaged data left whole, and how many damaged ones came before it;
    (None, count) where every frame up to ``until`` (seconds from the file's start) is damaged. A frame next to a
    damaged one counts as damaged: deinterlacing (bwdif) builds each frame from its neighbours."""
    spoiled = 0
    for frame in reader.frames():
        if not _damaged_near(reader, frame):
            return frame, spoiled
        spoiled += 1
        if frame.time is not None and frame.time - reader.info.origin > until:
            break
    return None, spoiled


def _outliers(name: str, files: list[str], embeddings: np.ndarray, threshold: float) -> list[int]:
    """The photos of a set to leave out: each one whose face does not look like the rest's where most of the set,
    two photos at least, does (said; a set's one stranger was given to the model beside the person, said "remove it if it shows
    someone else" and used all the same). Two photos unlike each other, or a set none of whose photos agree,
    are kept and said: which one is the person cannot be told."""
    if len(files) < 2:
        return []
    similarities = embeddings @ embeddings.T
    if len(files) == 2:
        if similarities[0, 1] < threshold:
            logger.warning(
                "reference set %s: %s and %s do not look like the same person (similarity %.2f < %.2f)",
                name, files[0], files[1], similarities[0, 1], threshold,
            )
        return []
    # Compare everyone with the medoid (the photo most like all others), so that one stranger
    # cannot drag the set's centre towards himself.
    medoid = int(np.argmax(similarities.sum(axis=1)))
    unlike = [index for index in range(len(files)) if index != medoid and similarities[index, medoid] < threshold]
    # (the medoid and those like it, most of the set: two burst shots alike are not the person beside three others)
    agreeing = len(files) - len(unlike)
    leave_out = agreeing >= 2 and agreeing > len(unlike)
    for index in unlike:
        logger.warning(
            "reference set %s: %s does not look like the other photos (similarity %.2f < %.2f); %s",
            name, files[index], similarities[index, medoid], threshold,
            "left out (someone else, or this person too unlike the other photos to help)" if leave_out else
            "remove it if it shows someone else",
        )
    return unlike if leave_out else []


#: the most pictures with a face of one reference set that are used (each costs a face detection; the restorer
#: takes few)
READ_AT_MOST = 24


def _pictures_of(name: str, path: Path, most: int | None, unusable: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """The pictures of one set's files (:func:`reference_pictures`, labelled by their paths), the first
    ``most`` of them; a file that cannot be read is skipped with a warning and named in ``unusable``."""
    given = 0
    files = list_reference_files(path)
    if most is None and len(files) > READ_AT_MOST:
        # spread over the folder first, the rest after: the caller stops at READ_AT_MOST faces found
        step = len(files) / READ_AT_MOST
        spread = [files[int(i * step)] for i in range(READ_AT_MOST)]
        chosen = set(spread)
        files = spread + [file for file in files if file not in chosen]
    for file in files:
        try:
            before = given
            for label, rgb in reference_pictures(file):
                if most is not None and given == most:
                    logger.info("reference set %s: using its first %d pictures", name, most)
                    return
                given += 1
                yield str(file.parent / label), rgb
            if given == before:  # (a video damaged at every instant read)
                logger.warning("reference video %s: no whole frame at the instants read; skipping it", file)
                unusable.append(f"{file.name} (damaged where read)")
        except _SkippedPhoto as exc:
            logger.warning("%s; skipping it", exc.said)
            unusable.append(f"{file.name} ({exc.why})")
        except ReferencesError as exc:
            logger.warning("%s; skipping it", exc)
            unusable.append(f"{file.name} (not readable)")


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
        max_images: keep only the first N pictures (photos by file name, a video's frames in
            order) of each set; the restorer's attention cost grows with N (default None: all).

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
        crops: dict[int, list[np.ndarray]] = {side: [] for side in sides}
        embeddings, files, unusable = [], [], []
        pictures = _pictures_of(name, path, max_images, unusable)
        for label, rgb in pictures:
            if max_images is None and len(files) == READ_AT_MOST:  # (300 photos: 93 s of silent start-up)
                logger.warning("reference set %s holds more photos or video frames than are read: the first %d with "
                               "a face, spread over it by name, are used (a few in the video's light and pose serve "
                               "best)", name, READ_AT_MOST)
                break
            what = "reference photo" if _kind(Path(label)) == "photo" else "reference video frame"
            faces = detect_padded(detector, rgb)
            if not faces:
                logger.warning("no face found in %s %s; skipping it (use a photo where the face is clearly visible)",
                               what, label)
                unusable.append(f"{Path(label).name} (no face)")
                continue
            face = max(faces, key=lambda f: f.size)
            if len(faces) > 1:
                logger.warning("%s %s shows %d faces; using the largest", what, label, len(faces))
            for side in sides:
                crops[side].append(warp_to_template(rgb, alignment_matrix(face.kps, side), side))
            embeddings.append(embedder.embed(rgb, [face])[0])
            files.append(label)
        if not files:
            raise ReferencesError(
                f"reference set {name}{'' if str(path) == name else f' ({path})'} has no usable photo: "
                f"{', '.join(unusable)}; "
                "add photos where the face is clearly visible"
            )
        embedding_array = np.stack(embeddings).astype(np.float32)
        left_out = _outliers(name, files, embedding_array, threshold)
        if left_out:
            kept = [index for index in range(len(files)) if index not in left_out]
            unusable += [f"{Path(files[index]).name} (unlike the other photos)" for index in left_out]
            embedding_array, files = embedding_array[kept], [files[index] for index in kept]
            crops = {side: [at_side[index] for index in kept] for side, at_side in crops.items()}
        by_side = {side: np.stack(c) for side, c in crops.items()}
        sets.append(ReferenceSet(name=name, crops=by_side[sides[-1]], embeddings=embedding_array, files=files,
                                 embedder=embedder.name, crops_at=by_side if len(sides) > 1 else {}, skipped=unusable))
    _warn_same_person(sets, threshold)
    return sets


def _warn_same_person(sets: Sequence[ReferenceSet], threshold: float) -> None:
    """Warn about two sets whose photos look like one person (mean similarity across them at least
    the embedder's same-person ``threshold``): each face of that person then goes to either set,
    by a hair (the same folder given under two names tied silently)."""
    for i, first in enumerate(sets):
        for second in sets[i + 1:]:
            similarity = float((first.embeddings @ second.embeddings.T).mean())
            if similarity >= threshold:
                logger.warning("reference sets %s and %s look like the same person (similarity %.2f >= %.2f): their "
                               "faces cannot be told apart; check that each set holds its own person's photos",
                               first.name, second.name, similarity, threshold)
