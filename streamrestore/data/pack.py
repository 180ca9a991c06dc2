"""Training data: find identities, align their faces once, pack them, serve training samples.

Three steps, each usable on its own:

1. **Sources** (:class:`FaceSource`): one photo or one video clip and the identity it shows.
   :func:`discover_sources` reads identity folders (``<root>/<id>/*.jpg|png``, the
   InstantRestore layouts ``<root>/<id>/cropped_images/`` and ``<root>/<id>/gt.png +
   conditioning/``) and single-person videos (one identity per clip);
   :func:`shared_sources` lists the shared media of ``../shared/data`` by its MANIFEST, with
   the licence class its README gives (only **train-ok** may train a shipped model).
2. **Packing** (:func:`pack_dataset`): detect and align every face once onto the FFHQ template
   at one resolution and write all crops, labels, landmarks, source paths and licence classes
   into one ``.npz`` (JPEG-coded crops; a few MiB), so the training set moves to a GPU machine
   as one small file. Eval-only sources are refused unless ``allow_eval_only=True``.
   :class:`PackedFaces` loads it back.
3. **Samples** (:class:`RestorationDataset`): a torch ``Dataset`` of (degraded target, clean
   target, 1-4 references of the same person, never the target itself, reference mask,
   landmarks) with seeded degradations from :mod:`streamrestore.data.degrade`; hold-out
   splits are by identity (:meth:`PackedFaces.split`).

Pack the train-ok shared set (prints the figures)::

    python -m streamrestore.data.pack --shared ../shared --resolution 128 --out runs/trainok_128.npz
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from streamrestore.errors import InputError
from streamrestore.images import IMAGE_SUFFIXES, read_rgb
from streamrestore.faces.align import alignment_matrix, warp_to_template

logger = logging.getLogger(__name__)

__all__ = [
    "TRAIN_OK",
    "EVAL_ONLY",
    "UNKNOWN",
    "TRAIN_OK_FOLDERS",
    "EvalOnlyDataError",
    "FaceSource",
    "licence_class",
    "shared_sources",
    "discover_sources",
    "PackReport",
    "pack_dataset",
    "PackedFaces",
    "RestorationDataset",
    "split_identities",
    "sample_video_frames",
]

#: Licence classes recorded for every source and every packed crop.
TRAIN_OK = "train-ok"  # permissive licence: may train weights that ship
EVAL_ONLY = "eval-only"  # non-commercial or unlicensed: evaluation only
UNKNOWN = "unknown"  # the user's own data: we cannot tell; the user answers for it

#: Top-level folders of ``shared/data`` that its README lists as train-ok. Everything else in
#: that folder (instantrestore, dmdnet, asffnet, codeformer, keep, pgtformer, gpen) is eval-only.
TRAIN_OK_FOLDERS = frozenset({
    "deepface", "face_recognition", "facenet_pytorch", "gfpgan", "liveportrait",
    "sadtalker", "video_retalking", "pcavs", "tpsmm", "dlib",
    # added to the shared folder on 2026-12-01 (MIT / Apache-2.0 repositories)
    "latentsync", "styletalk", "paddlegan", "mimictalk", "real3dportrait", "dpe", "xportrait",
    "photomaker", "compreface", "pulid", "ghost", "hallo", "3ddfa_v2", "joyvasa", "memo", "consisid",
})

#: Licence texts (MANIFEST ``license`` column, prefix match) that count as permissive. A row of
#: a train-ok folder whose licence is not one of these is treated as eval-only, so a file added
#: later under a stricter licence is not trained on by accident.
_PERMISSIVE_PREFIXES = ("MIT", "Apache-2.0", "CC BY 4.0", "Boost Software License")

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi"})

#: Left/right partner of each of the 5 landmarks (for horizontal flips): eyes and mouth corners swap.
_FLIP_ORDER = np.array([1, 0, 2, 4, 3])


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


def licence_class(local_path: str, licence_text: str | None = None) -> str:
    """The class of a file of ``shared/data`` given its path there (``"deepface/img1.jpg"``).

    Train-ok needs both: a folder the README lists as train-ok and (when given) a permissive
    licence in the MANIFEST row.
    """
    top = Path(local_path).parts[0] if Path(local_path).parts else ""
    if top not in TRAIN_OK_FOLDERS:
        return EVAL_ONLY
    if licence_text is not None and not licence_text.strip().startswith(_PERMISSIVE_PREFIXES):
        return EVAL_ONLY
    return TRAIN_OK


def _shared_data_root(path: Path) -> Path | None:
    """The ``shared/data`` folder that contains ``path`` (found by its MANIFEST.tsv), if any."""
    path = path.resolve()
    for folder in (path, *path.parents):
        if (folder / "MANIFEST.tsv").is_file():
            return folder
    return None


def _classify_path(path: Path, default: str) -> str:
    # Files inside the shared data folder always get the class its README gives, whatever the
    # caller says: an eval-only set cannot be relabelled train-ok by accident.
    root = _shared_data_root(path)
    if root is None:
        return default
    return licence_class(str(path.resolve().relative_to(root)))


def _read_manifest(data_root: Path) -> list[dict[str, str]]:
    manifest = data_root / "MANIFEST.tsv"
    if not manifest.is_file():
        raise InputError(f"{manifest} not found; pass the shared data folder (the one with MANIFEST.tsv)")
    with manifest.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def shared_sources(data_root: str | Path, classes: Sequence[str] = (TRAIN_OK,), *,
                   identities: Iterable[str] | None = None) -> list[FaceSource]:
    """Single-person photos and clips of ``shared/data`` in the given licence classes.

    Identities come from the MANIFEST ``identity`` column: named people and ``deepface:idNN`` /
    ``anon:...`` groups keep their label across files; files marked ``-`` (unknown person) are
    their own identity (a clip: its frames reference each other; a photo: a singleton that only
    curriculum-style self references can use); ``multi`` files (group photos, crowd scenes,
    stage clips) are left out because nothing says who is who.

    Args:
        data_root: the ``shared/data`` folder.
        classes: licence classes to keep; the default is what a shipped model may see.
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
        licence = licence_class(local, row.get("license"))
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


def discover_sources(root: str | Path, *, licence: str = UNKNOWN, include_degraded: bool = False) -> list[FaceSource]:
    """Sources under a folder of identities or videos.

    Recognised layouts (one identity per sub-folder, named after it):

    - ``<root>/<id>/*.jpg|png`` — photos of one person;
    - ``<root>/<id>/cropped_images/*`` — InstantRestore's training layout;
    - ``<root>/<id>/gt.png`` + ``conditioning/*`` — InstantRestore's test layout (``degraded.png``
      is skipped unless ``include_degraded``: it is the same photo as ``gt.png``, damaged);
    - ``<root>/<id>/*.mp4`` and ``<root>/*.mp4`` — single-person clips; a clip directly in
      ``root`` is its own identity (named after the file), clips inside ``<id>/`` share it.

    ``licence`` is recorded for every source, except that files inside the shared data folder
    always get the class its README gives them.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder {root} does not exist")
    out: list[FaceSource] = []

    def add(path: Path, identity: str, kind: str) -> None:
        out.append(FaceSource(path=path, identity=identity, licence=_classify_path(path, licence), kind=kind,
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


# --------------------------------------------------------------------------------------------
# Reading photos and sampling clips


def sample_video_frames(path: Path, count: int, min_gap_s: float) -> Iterator[tuple[float, np.ndarray]]:
    """Up to ``count`` (time, RGB frame) pairs spread evenly over the clip, ``min_gap_s`` apart.

    Frames far apart in time differ in pose and expression, which is what makes them useful as
    references of each other.
    """
    import av  # noqa: PLC0415

    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises many types for unreadable files
        raise InputError(f"cannot open video {path}: {exc}") from exc
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        if not duration or duration <= 0:
            duration = 1.0
        count = max(1, min(count, int(duration / max(min_gap_s, 1e-3)) + 1))
        # centres of `count` equal slices of the clip
        targets = [(k + 0.5) * duration / count for k in range(count)]
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        k = 0
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            if frame.time - start >= targets[k]:
                yield float(frame.time - start), frame.to_ndarray(format="rgb24")
                k += 1
                if k == len(targets):
                    break


# --------------------------------------------------------------------------------------------
# Packing


@dataclass
class PackReport:
    """What :func:`pack_dataset` did: counts and why faces were left out."""

    path: Path
    bytes: int = 0
    crops: int = 0
    identities: int = 0
    sources: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def summary(self) -> str:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) or "none"
        return (f"{self.path}: {self.crops} crops of {self.identities} identities from {self.sources} sources, "
                f"{self.bytes / 2**20:.2f} MiB; skipped {skipped}")


def _pick_face(faces, min_ratio: float):
    """The largest face, or None when another face is nearly as large (who is who is unclear)."""
    if not faces:
        return None, "no face"
    areas = [f.size ** 2 for f in faces]
    order = np.argsort(areas)[::-1]
    if len(faces) > 1 and areas[order[1]] > min_ratio * areas[order[0]]:
        return None, "several faces"
    return faces[int(order[0])], ""


def _encode(image: np.ndarray, encoding: str, quality: int) -> bytes:
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    if encoding == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]  # no chroma subsampling: sharp colour edges
        ok, buf = cv2.imencode(".jpg", bgr, params)
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a crop as {encoding}")
    return buf.tobytes()


def _thumbnail(image: np.ndarray) -> np.ndarray:
    """16x16 grey thumbnail, zero mean, unit norm: dot products are normalised cross-correlations,
    tolerant to the small shifts and blur that separate copies of one photo."""
    grey = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (16, 16), interpolation=cv2.INTER_AREA)
    vector = grey.astype(np.float32).ravel()
    vector -= vector.mean()
    return vector / (np.linalg.norm(vector) + 1e-6)


def pack_dataset(
    sources: Sequence[FaceSource],
    out_path: str | Path,
    resolution: int = 128,
    *,
    detector=None,
    models_dir: str | Path | None = None,
    allow_eval_only: bool = False,
    frames_per_video: int = 12,
    min_frame_gap_s: float = 0.5,
    max_upscale: float = 1.5,
    max_border: float = 0.3,
    second_face_ratio: float = 0.3,
    duplicate_similarity: float = 0.95,
    encoding: str = "jpeg",
    jpeg_quality: int = 95,
    max_bytes: int = 40 * 2**20,
) -> PackReport:
    """Detect, align and pack the faces of ``sources`` into one ``.npz`` at ``out_path``.

    One face per photo / sampled frame: the largest, aligned onto the FFHQ template at
    ``resolution`` (with the detector's 5 landmarks, kept in crop coordinates for the
    landmark attention loss).

    Args:
        sources: from :func:`shared_sources` or :func:`discover_sources`.
        out_path: the ``.npz`` to write (written under a temporary name, renamed when done).
        resolution: side of the square crops (128 for the lite model; 256/512 for bigger ones).
        detector: a :class:`streamrestore.faces.detect.Detector`; default SCRFD from
            ``models_dir`` (``create_detector("auto", models_dir=...)``).
        allow_eval_only: eval-only sources are refused (:class:`EvalOnlyDataError`) unless this
            is True: only evaluation packs should set it.
        frames_per_video: frames sampled per clip, spread evenly (at most one per ``min_frame_gap_s``).
        min_frame_gap_s: least time between two sampled frames of a clip.
        max_upscale: skip faces that would be enlarged by more than this to fill the crop: a
            clean target must not be a blurry upscale. 1.5 keeps faces of ~2/3 the crop size.
        max_border: skip crops with more than this fraction outside the source frame (filled
            black): heads cut by the frame edge teach the network black borders.
        second_face_ratio: skip photos/frames where a second face is at least this fraction of
            the largest one's area (cannot tell which is the labelled person).
        duplicate_similarity: a crop whose 16x16 grey thumbnail correlates with an already kept
            crop of *another source* at least this much (normalised cross-correlation) is a
            near-duplicate (the same photo at another size, a photo that is a frame of a clip)
            and is dropped, so a target is never its own reference under another file name.
            Measured on the shared train-ok set at 128 px: the six copies of one Obama photo
            (240p...1080p, obama.jpg, obama_small) correlate at 0.97-0.99 and a liveportrait
            photo with the clip it was taken from at 0.994, while distinct photos of one person
            reach 0.88 and different people 0.93 (two similar studio clips).
        encoding: ``"jpeg"`` (4:4:4, ``jpeg_quality``) or ``"png"`` (lossless, ~4x larger).
        max_bytes: refuse to write a pack larger than this (default 40 MiB); lower
            ``frames_per_video`` or ``jpeg_quality``.

    Returns:
        a :class:`PackReport`.
    """
    if resolution < 32:
        raise ValueError(f"resolution must be >= 32, got {resolution}")
    if encoding not in ("jpeg", "png"):
        raise ValueError(f"encoding must be 'jpeg' or 'png', got {encoding!r}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    if frames_per_video < 1:
        raise ValueError(f"frames_per_video must be >= 1, got {frames_per_video}")
    if max_upscale <= 0 or not 0 <= max_border <= 1 or not 0 < second_face_ratio <= 1:
        raise ValueError(f"bad limits: max_upscale={max_upscale}, max_border={max_border}, "
                         f"second_face_ratio={second_face_ratio}")
    sources = list(sources)
    if not sources:
        raise InputError("no sources to pack")
    eval_only = [s.name for s in sources if s.licence == EVAL_ONLY]
    if eval_only and not allow_eval_only:
        raise EvalOnlyDataError(
            f"{len(eval_only)} source(s) are eval-only (non-commercial or unlicensed), e.g. {eval_only[0]}; "
            "they must not train a model that ships. Remove them, or pass allow_eval_only=True for an evaluation pack"
        )
    if any(s.licence == UNKNOWN for s in sources):
        logger.warning("packing sources of unknown licence: make sure you may train on them")
    if detector is None:
        from streamrestore.faces.detect import create_detector  # noqa: PLC0415

        detector = create_detector("auto", models_dir=models_dir)
    from streamrestore.faces.detect import detect_padded  # noqa: PLC0415

    out_path = Path(out_path)
    report = PackReport(path=out_path)
    ones = None
    records: list[dict] = []
    for src_index, source in enumerate(sources):
        if source.kind == "video":
            frames = sample_video_frames(source.path, frames_per_video, min_frame_gap_s)
        else:
            try:
                image = read_rgb(source.path)
            except InputError:
                image = None
            if image is None:
                logger.warning("cannot read %s; skipped", source.path)
                report.skip("unreadable")
                continue
            frames = iter([(float("nan"), image)])
        for time_s, image in frames:
            face, why = _pick_face(detect_padded(detector, image), second_face_ratio)
            if face is None:
                report.skip(why)
                continue
            matrix = alignment_matrix(face.kps, resolution)
            if math.sqrt(abs(np.linalg.det(matrix[:, :2]))) > max_upscale:
                report.skip("face too small")
                continue
            if ones is None or ones.shape[:2] != image.shape[:2]:
                ones = np.full(image.shape, 255, np.uint8)
            border = 1.0 - warp_to_template(ones, matrix, resolution)[..., 0].mean() / 255.0
            if border > max_border:
                report.skip("crop outside the frame")
                continue
            crop = warp_to_template(image, matrix, resolution)
            kps = np.asarray(face.kps, np.float64) @ matrix[:, :2].T + matrix[:, 2]
            records.append({
                "crop": crop, "source": src_index, "time": time_s, "score": face.score,
                "landmarks": (kps / resolution).astype(np.float32), "border": border,
                "upscale": math.sqrt(abs(np.linalg.det(matrix[:, :2]))),
            })
    # Near-duplicates across sources: keep the first (sources come in the order given).
    thumbs = np.stack([_thumbnail(r["crop"]) for r in records]) if records else np.zeros((0, 256), np.float32)
    keep: list[int] = []
    for i, rec in enumerate(records):
        others = [j for j in keep if records[j]["source"] != rec["source"]]
        if others and float((thumbs[others] @ thumbs[i]).max()) >= duplicate_similarity:
            report.skip("near-duplicate")
            continue
        keep.append(i)
    records = [records[i] for i in keep]
    if not records:
        raise InputError("no usable face found in the sources; check the detector and the data")

    used_sources = sorted({r["source"] for r in records})
    source_pos = {s: k for k, s in enumerate(used_sources)}
    identity_names = sorted({sources[s].identity for s in used_sources})
    identity_pos = {name: k for k, name in enumerate(identity_names)}
    blobs = [_encode(r["crop"], encoding, jpeg_quality) for r in records]
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    arrays = {
        "version": np.int64(1),
        "resolution": np.int64(resolution),
        "encoding": np.str_(encoding),
        "data": np.frombuffer(b"".join(blobs), dtype=np.uint8),
        "offsets": offsets,
        "identity": np.array([identity_pos[sources[r["source"]].identity] for r in records], np.int32),
        "source": np.array([source_pos[r["source"]] for r in records], np.int32),
        "time_s": np.array([r["time"] for r in records], np.float32),
        "landmarks": np.stack([r["landmarks"] for r in records]),
        "score": np.array([r["score"] for r in records], np.float32),
        "border": np.array([r["border"] for r in records], np.float32),
        "upscale": np.array([r["upscale"] for r in records], np.float32),
        "identities": np.array(identity_names, dtype=np.str_),
        "source_names": np.array([sources[s].name for s in used_sources], dtype=np.str_),
        "source_kinds": np.array([sources[s].kind for s in used_sources], dtype=np.str_),
        "source_licences": np.array([sources[s].licence for s in used_sources], dtype=np.str_),
        "meta": np.str_(json.dumps({
            "frames_per_video": frames_per_video, "min_frame_gap_s": min_frame_gap_s, "max_upscale": max_upscale,
            "max_border": max_border, "second_face_ratio": second_face_ratio,
            "duplicate_similarity": duplicate_similarity, "jpeg_quality": jpeg_quality,
            "detector": getattr(detector, "name", type(detector).__name__), "skipped": report.skipped,
        })),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp.npz")
    np.savez(tmp, **arrays)  # already compressed crops: zip deflate would gain nothing
    size = tmp.stat().st_size
    if size > max_bytes:
        tmp.unlink()
        raise InputError(f"the pack would be {size / 2**20:.1f} MiB > {max_bytes / 2**20:.0f} MiB; "
                         "lower frames_per_video or jpeg_quality, or pack fewer sources")
    tmp.replace(out_path)
    report.bytes = size
    report.crops = len(records)
    report.identities = len(identity_names)
    report.sources = len(used_sources)
    return report


# --------------------------------------------------------------------------------------------
# Loading


def split_identities(names: Sequence[str], val_fraction: float = 0.15, seed: int = 0,
                     eligible: Sequence[bool] | None = None) -> tuple[list[str], list[str]]:
    """Deterministic (train, val) split of identity names.

    Only ``eligible`` identities (default: all) may go to validation; at least one does when
    ``val_fraction > 0`` and there is one. The draw depends on the names and ``seed`` only,
    not on their order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    names = list(names)
    eligible = [True] * len(names) if eligible is None else list(eligible)
    pool = sorted(n for n, ok in zip(names, eligible) if ok)
    rng = np.random.default_rng(seed)
    count = min(len(pool), max(1, round(val_fraction * len(pool)))) if val_fraction > 0 and pool else 0
    val = set(rng.permutation(pool)[:count].tolist()) if count else set()
    return sorted(n for n in names if n not in val), sorted(val)


class PackedFaces:
    """The crops of a pack written by :func:`pack_dataset` (decoded on demand).

    Attributes (numpy arrays, one entry per crop unless said otherwise):
        resolution, identity (index into ``identities``), source (index into
        ``source_names``), time_s (NaN for photos), landmarks ((N, 5, 2), x/y in [0, 1]),
        identities / source_names / source_licences / source_kinds (one per identity/source).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"packed dataset {self.path} not found; build it with pack_dataset()")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError) as exc:
            raise InputError(f"{self.path} is not a packed face dataset: {exc}") from exc
        if int(arrays.get("version", 0)) != 1:
            raise InputError(f"{self.path} is not a version-1 packed face dataset")
        self.resolution = int(arrays["resolution"])
        self.encoding = str(arrays["encoding"])
        self._data = arrays["data"]
        self._offsets = arrays["offsets"]
        self.identity = arrays["identity"]
        self.source = arrays["source"]
        self.time_s = arrays["time_s"]
        self.landmarks = arrays["landmarks"]
        self.score = arrays["score"]
        self.border = arrays["border"]
        self.identities = [str(s) for s in arrays["identities"]]
        self.source_names = [str(s) for s in arrays["source_names"]]
        self.source_kinds = [str(s) for s in arrays["source_kinds"]]
        self.source_licences = [str(s) for s in arrays["source_licences"]]
        self.meta = json.loads(str(arrays["meta"]))

    def __len__(self) -> int:
        return len(self.identity)

    @property
    def licence_classes(self) -> set[str]:
        """The licence classes present; ``{"train-ok"}`` for a pack a shipped model may use."""
        return set(self.source_licences)

    def require_train_ok(self) -> None:
        """Raise :class:`EvalOnlyDataError` unless every source of the pack is train-ok."""
        bad = [n for n, lic in zip(self.source_names, self.source_licences) if lic != TRAIN_OK]
        if bad:
            raise EvalOnlyDataError(f"{self.path} holds {len(bad)} source(s) that are not train-ok (e.g. {bad[0]}); "
                                    "a shipped model may only train on train-ok data")

    def image(self, index: int) -> np.ndarray:
        """Crop ``index`` as (R, R, 3) uint8 RGB."""
        blob = self._data[self._offsets[index]:self._offsets[index + 1]]
        bgr = cv2.imdecode(blob, cv2.IMREAD_COLOR)
        return np.ascontiguousarray(bgr[:, :, ::-1])

    def indices_of(self, identity: str | int) -> np.ndarray:
        """Crop indices of one identity (by name or index)."""
        k = self.identities.index(identity) if isinstance(identity, str) else int(identity)
        return np.flatnonzero(self.identity == k)

    def counts(self) -> dict[str, int]:
        """Number of crops per identity name."""
        return {name: int((self.identity == k).sum()) for k, name in enumerate(self.identities)}

    def split(self, val_fraction: float = 0.15, seed: int = 0, min_crops: int = 3) -> tuple[list[str], list[str]]:
        """(train, val) identity names; only identities with ``min_crops`` crops go to validation
        (a validation target needs references)."""
        counts = self.counts()
        return split_identities(self.identities, val_fraction, seed, [counts[n] >= min_crops for n in self.identities])


# --------------------------------------------------------------------------------------------
# Training samples


def _to_tensor(image: np.ndarray):
    import torch  # noqa: PLC0415

    # contiguous CHW float: torch CPU conv backward crashes on channels-last strided views
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def _flip(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flipped = landmarks[_FLIP_ORDER].copy()
    flipped[:, 0] = 1.0 - flipped[:, 0] - 1.0 / image.shape[1]  # pixel centres mirror about (R-1)/2
    return np.ascontiguousarray(image[:, ::-1]), flipped


class RestorationDataset:
    """Training samples from a :class:`PackedFaces`: a torch ``Dataset`` (map-style).

    Sample ``i`` is deterministic given ``(seed, epoch, i)`` (:meth:`set_epoch` changes the
    draws between epochs). Each sample is a dict of tensors:

    - ``degraded``, ``target``: (3, R, R) float in [0, 1];
    - ``references``: (max_refs, 3, R, R), zero beyond ``ref_count``; ``ref_mask``: (max_refs,)
      bool; ``ref_count``: int64; ``ref_indices``: (max_refs,) crop indices, -1 when padding;
    - ``landmarks``: (5, 2) of the target, ``ref_landmarks``: (max_refs, 5, 2), x/y in [0, 1];
    - ``identity``, ``index``: int64.

    References are other crops of the target's identity, never the target itself, and from the
    same clip only when at least ``min_time_gap_s`` apart from the target frame.

    Args:
        faces: the pack.
        identities: names to draw from (e.g. the train half of :meth:`PackedFaces.split`);
            default all.
        preset: degradation preset name or object (:mod:`streamrestore.data.degrade`), or a
            :class:`~streamrestore.data.degrade.DegradationMix` (one preset drawn per sample).
        min_refs, max_refs: the number of references is drawn uniformly in this range (capped
            by what the identity has); the paper uses 1-4.
        seed: base seed of all draws.
        samples_per_epoch: dataset length; default one sample per usable target crop.
        min_time_gap_s: least time between a target frame and a reference from the same clip.
        flip: mirror the target (with its degraded copy) and each reference independently
            with probability 1/2 (landmarks follow).
        max_border: leave out crops with more than this fraction of black border.
    """

    def __init__(self, faces: PackedFaces, identities: Sequence[str] | None = None, *, preset="severe",
                 min_refs: int = 1, max_refs: int = 4, seed: int = 0, samples_per_epoch: int | None = None,
                 min_time_gap_s: float = 1.0, flip: bool = True, max_border: float = 1.0):
        from streamrestore.data.degrade import DegradationMix, get_preset  # noqa: PLC0415

        if not 1 <= min_refs <= max_refs:
            raise ValueError(f"need 1 <= min_refs <= max_refs, got {min_refs}, {max_refs}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.faces = faces
        self.preset = preset if isinstance(preset, DegradationMix) else get_preset(preset)
        self.min_refs, self.max_refs = int(min_refs), int(max_refs)
        self.seed = int(seed)
        self.epoch = 0
        self.flip = flip
        wanted = set(faces.identities if identities is None else identities)
        unknown = wanted - set(faces.identities)
        if unknown:
            raise ValueError(f"identities not in the pack: {sorted(unknown)[:5]}")
        usable = faces.border <= max_border
        self._candidates: dict[int, np.ndarray] = {}
        for name in sorted(wanted):
            members = faces.indices_of(name)
            members = members[usable[members]]
            for t in members:
                refs = [int(r) for r in members if r != t and self._far_enough(int(t), int(r), min_time_gap_s)]
                if refs:
                    self._candidates[int(t)] = np.asarray(refs)
        self.targets = np.asarray(sorted(self._candidates), dtype=np.int64)
        if len(self.targets) == 0:
            raise ValueError("no target crop has a reference of the same identity; pack more photos per person")
        self.samples_per_epoch = int(samples_per_epoch or len(self.targets))

    def _far_enough(self, target: int, ref: int, gap: float) -> bool:
        f = self.faces
        if f.source[target] != f.source[ref]:
            return True
        # the same photo cannot be its own reference; frames of one clip only if far apart
        return bool(np.isfinite(f.time_s[target]) and abs(float(f.time_s[target] - f.time_s[ref])) >= gap)

    def set_epoch(self, epoch: int) -> None:
        """Draw new degradations and references for this epoch (still reproducible)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def references_of(self, target: int) -> np.ndarray:
        """Every crop index that may serve as a reference of crop ``target``."""
        return self._candidates[int(target)]

    def __getitem__(self, i: int) -> dict:
        import torch  # noqa: PLC0415

        from streamrestore.data.degrade import DegradationMix, degrade  # noqa: PLC0415

        if not 0 <= i < len(self):
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        target = int(self.targets[i % len(self.targets)])
        candidates = self._candidates[target]
        high = min(self.max_refs, len(candidates))
        count = int(rng.integers(min(self.min_refs, high), high + 1))
        chosen = rng.choice(candidates, size=count, replace=False)
        clean = self.faces.image(target)
        landmarks = self.faces.landmarks[target]
        if self.flip and rng.random() < 0.5:
            clean, landmarks = _flip(clean, landmarks)
        # a single preset draws nothing here, so its samples stay what they always were
        preset = self.preset.choose(rng) if isinstance(self.preset, DegradationMix) else self.preset
        degraded = degrade(clean, preset, int(rng.integers(0, 2**31 - 1)))
        r = self.faces.resolution
        refs = np.zeros((self.max_refs, r, r, 3), np.uint8)
        ref_landmarks = np.zeros((self.max_refs, 5, 2), np.float32)
        for k, index in enumerate(chosen):
            image, points = self.faces.image(int(index)), self.faces.landmarks[int(index)]
            if self.flip and rng.random() < 0.5:
                image, points = _flip(image, points)
            refs[k], ref_landmarks[k] = image, points
        indices = np.full(self.max_refs, -1, np.int64)
        indices[:count] = chosen
        return {
            "degraded": _to_tensor(degraded),
            "target": _to_tensor(clean),
            "references": torch.from_numpy(np.ascontiguousarray(refs.transpose(0, 3, 1, 2))).float().div_(255.0),
            "ref_mask": torch.arange(self.max_refs) < count,
            "ref_count": torch.tensor(count, dtype=torch.int64),
            "ref_indices": torch.from_numpy(indices),
            "landmarks": torch.from_numpy(np.ascontiguousarray(landmarks, dtype=np.float32)),
            "ref_landmarks": torch.from_numpy(ref_landmarks),
            "identity": torch.tensor(int(self.faces.identity[target]), dtype=torch.int64),
            "index": torch.tensor(target, dtype=torch.int64),
        }


# --------------------------------------------------------------------------------------------
# Command line: pack the shared train-ok set


def _default_shared() -> Path:
    import os  # noqa: PLC0415

    env = os.environ.get("STREAMRESTORE_SHARED")
    return Path(env) if env else Path("../shared")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamrestore.data.pack",
                                     description="Pack the train-ok faces of the shared data folder into one .npz.")
    parser.add_argument("--shared", type=Path, default=_default_shared(), help="the shared folder (data/ and models/)")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames-per-video", type=int, default=12)
    parser.add_argument("--detector", default="scrfd/det_2.5g.onnx", help="SCRFD file under <shared>/models")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    from streamrestore.faces.detect import ScrfdDetector  # noqa: PLC0415

    detector = ScrfdDetector(args.shared / "models" / args.detector)
    sources = shared_sources(args.shared / "data")
    report = pack_dataset(sources, args.out, args.resolution, detector=detector, frames_per_video=args.frames_per_video)
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
