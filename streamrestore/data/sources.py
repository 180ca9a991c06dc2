"""Sources of training and evaluation faces, and the licence class each one carries.

A :class:`FaceSource` is one photo or one video clip and the identity it shows.
:func:`discover_sources` reads identity folders (``<root>/<id>/*.jpg|png``, the InstantRestore
layouts ``<root>/<id>/cropped_images/`` and ``<root>/<id>/gt.png + conditioning/``) and
single-person videos (one identity per clip); :func:`shared_sources` lists a curated data
folder (one with a ``MANIFEST.tsv``, like ``shared/data``) with the licence class of each file
(only **train-ok** may train a shipped model). Next step: :func:`streamrestore.data.pack.pack_dataset`.

Which folders of a curated data folder are train-ok is not known here: callers pass it
(``train_ok_folders``, e.g. read by :func:`read_train_ok_folders` from ``configs/shared_data.toml``).
Without it every file of such a folder is eval-only, so a set cannot become train-ok by accident.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable, Sequence

from streamrestore import toml_text
from streamrestore.errors import InputError
from streamrestore.images import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

__all__ = [
    "TRAIN_OK",
    "EVAL_ONLY",
    "UNKNOWN",
    "VIDEO_SUFFIXES",
    "EvalOnlyDataError",
    "FaceSource",
    "licence_class",
    "read_train_ok_folders",
    "shared_sources",
    "discover_sources",
]

#: Licence classes recorded for every source and every packed crop.
TRAIN_OK = "train-ok"  # permissive licence: may train weights that ship
EVAL_ONLY = "eval-only"  # non-commercial or unlicensed: evaluation only
UNKNOWN = "unknown"  # the user's own data: we cannot tell; the user answers for it

#: Licence texts (MANIFEST ``license`` column, prefix match) that count as permissive. A row of
#: a train-ok folder whose licence is not one of these is treated as eval-only, so a file added
#: later under a stricter licence is not trained on by accident.
_PERMISSIVE_PREFIXES = ("MIT", "Apache-2.0", "CC BY 4.0", "Boost Software License")

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi"})


class EvalOnlyDataError(InputError):
    """Eval-only (non-commercial / unlicensed) data was given to something that trains."""


# --------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class FaceSource:
    """One photo or one video clip showing one identity.

    Attributes:
        path: the file.
        identity: label; sources with equal labels are the same person.
        licence: :data:`TRAIN_OK`, :data:`EVAL_ONLY` or :data:`UNKNOWN`.
        kind: ``"image"`` or ``"video"`` (frames are sampled far apart; they are references of
            each other).
        name: how the source is recorded in the pack (a path relative to the data root).
    """

    path: Path
    identity: str
    licence: str = UNKNOWN
    kind: str = "image"
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("image", "video"):
            raise ValueError(f"kind must be 'image' or 'video', got {self.kind!r}")
        if self.licence not in (TRAIN_OK, EVAL_ONLY, UNKNOWN):
            raise ValueError(f"licence must be {TRAIN_OK!r}, {EVAL_ONLY!r} or {UNKNOWN!r}, got {self.licence!r}")
        if not self.identity:
            raise ValueError(f"identity of {self.path} must not be empty")
        if not self.name:
            object.__setattr__(self, "name", str(self.path))


def read_train_ok_folders(path: str | Path) -> frozenset[str]:
    """The ``train_ok_folders`` list of a TOML file (such as ``configs/shared_data.toml``): the
    top-level folders of a curated data folder that its README lists as train-ok."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"licence list {path} not found; pass the TOML file with train_ok_folders "
                         "(configs/shared_data.toml in the repository)")
    try:
        folders = toml_text.loads(path.read_text(encoding="utf-8")).get("train_ok_folders")
    except toml_text.TOMLDecodeError as exc:
        raise InputError(f"{path} is not valid TOML: {exc}") from None
    if not isinstance(folders, list) or not all(isinstance(f, str) and f for f in folders):
        raise InputError(f"{path} must set train_ok_folders to a list of folder names, got {folders!r}")
    return frozenset(folders)


def licence_class(local_path: str, licence_text: str | None = None, train_ok_folders: Collection[str] = ()) -> str:
    """The class of a file of a curated data folder given its path there (``"deepface/img1.jpg"``).

    Train-ok needs both: a top-level folder in ``train_ok_folders`` (the folders its README lists
    as train-ok; none by default) and (when given) a permissive licence in the MANIFEST row.
    """
    top = Path(local_path).parts[0] if Path(local_path).parts else ""
    if top not in train_ok_folders:
        return EVAL_ONLY
    if licence_text is not None and not licence_text.strip().startswith(_PERMISSIVE_PREFIXES):
        return EVAL_ONLY
    return TRAIN_OK


def _shared_data_root(path: Path) -> Path | None:
    """The curated data folder that contains ``path`` (found by its MANIFEST.tsv), if any."""
    path = path.resolve()
    for folder in (path, *path.parents):
        if (folder / "MANIFEST.tsv").is_file():
            return folder
    return None


def _classify_path(path: Path, default: str, train_ok_folders: Collection[str]) -> str:
    # Files inside a curated data folder always get the class its README gives, whatever the
    # caller says: an eval-only set cannot be relabelled train-ok by accident.
    root = _shared_data_root(path)
    if root is None:
        return default
    return licence_class(str(path.resolve().relative_to(root)), None, train_ok_folders)


def _read_manifest(data_root: Path) -> list[dict[str, str]]:
    manifest = data_root / "MANIFEST.tsv"
    if not manifest.is_file():
        raise InputError(f"{manifest} not found; pass the shared data folder (the one with MANIFEST.tsv)")
    with manifest.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def shared_sources(data_root: str | Path, classes: Sequence[str] = (TRAIN_OK,), *,
                   train_ok_folders: Collection[str], identities: Iterable[str] | None = None) -> list[FaceSource]:
    """Single-person photos and clips of a curated data folder (``shared/data``) in the given
    licence classes.

    Identities come from the MANIFEST ``identity`` column: named people and ``deepface:idNN`` /
    ``anon:...`` groups keep their label across files; files marked ``-`` (unknown person) are
    their own identity (a clip: its frames reference each other; a photo: a singleton that only
    curriculum-style self references can use); ``multi`` files (group photos, crowd scenes,
    stage clips) are left out because nothing says who is who.

    Args:
        data_root: the folder with ``MANIFEST.tsv`` (e.g. ``shared/data``).
        classes: licence classes to keep; the default is what a shipped model may see.
        train_ok_folders: its top-level folders that its README lists as train-ok
            (:func:`read_train_ok_folders`); required, so that nobody trains on a folder by default.
        identities: keep only these identity labels (as returned in ``FaceSource.identity``).
    """
    data_root = Path(data_root)
    wanted = set(identities) if identities is not None else None
    sources = []
    for row in _read_manifest(data_root):
        local = row["local_path"]
        kind = row.get("kind", "")
        suffix = Path(local).suffix.lower()
        if kind not in ("image", "video") or (kind == "image" and suffix not in IMAGE_SUFFIXES):
            continue
        label = row.get("identity", "-").strip() or "-"
        if label == "multi":
            continue
        identity = label if label != "-" else f"{kind}:{local}"
        licence = licence_class(local, row.get("license"), train_ok_folders)
        if licence not in classes or (wanted is not None and identity not in wanted):
            continue
        path = data_root / local
        if not path.is_file():
            logger.warning("shared data: %s is in MANIFEST.tsv but missing on disk; skipped", local)
            continue
        sources.append(FaceSource(path=path, identity=identity, licence=licence, kind=kind, name=local))
    return sources


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def discover_sources(root: str | Path, *, licence: str = UNKNOWN, include_degraded: bool = False,
                     train_ok_folders: Collection[str] = ()) -> list[FaceSource]:
    """Sources under a folder of identities or videos.

    Recognised layouts (one identity per sub-folder, named after it):

    - ``<root>/<id>/*.jpg|png`` — photos of one person;
    - ``<root>/<id>/cropped_images/*`` — InstantRestore's training layout;
    - ``<root>/<id>/gt.png`` + ``conditioning/*`` — InstantRestore's test layout (``degraded.png``
      is skipped unless ``include_degraded``: it is the same photo as ``gt.png``, damaged);
    - ``<root>/<id>/*.mp4`` and ``<root>/*.mp4`` — single-person clips; a clip directly in
      ``root`` is its own identity (named after the file), clips inside ``<id>/`` share it.

    ``licence`` is recorded for every source, except that files inside a curated data folder
    (one with a ``MANIFEST.tsv`` above them, like ``shared/data``) always get the class its README
    gives them: train-ok only in one of ``train_ok_folders``, eval-only otherwise.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder {root} does not exist")
    out: list[FaceSource] = []

    def add(path: Path, identity: str, kind: str) -> None:
        out.append(FaceSource(path=path, identity=identity, licence=_classify_path(path, licence, train_ok_folders), kind=kind,
                              name=str(path.relative_to(root))))

    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES:
            add(entry, entry.stem, "video")
        if not entry.is_dir():
            continue
        identity = entry.name
        files: list[Path] = []
        if (entry / "cropped_images").is_dir():
            files += _images_in(entry / "cropped_images")
        if (entry / "gt.png").is_file() or (entry / "conditioning").is_dir():
            for name in ("gt.png",) + (("degraded.png",) if include_degraded else ()):
                if (entry / name).is_file():
                    files.append(entry / name)
            if (entry / "conditioning").is_dir():
                files += _images_in(entry / "conditioning")
        else:
            files += _images_in(entry)
        for file in files:
            add(file, identity, "image")
        for clip in sorted(p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES):
            add(clip, identity, "video")
    if not out:
        raise InputError(f"no identity folders, photos or clips found under {root}; expected <root>/<identity>/*.jpg")
    return out
