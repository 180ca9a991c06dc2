"""Packing: align every face of a list of sources once and write them all into one ``.npz``.

:func:`pack_dataset` detects and aligns every face once onto the FFHQ template at one
resolution and writes all crops, labels, landmarks, source paths and licence classes into one
``.npz`` (JPEG-coded crops; a few MiB), so the training set moves to a GPU machine as one small
file. Eval-only sources are refused unless ``allow_eval_only=True``. :class:`PackedFaces` loads
it back; hold-out splits are by identity (:meth:`PackedFaces.split`, :func:`split_identities`).
Sources come from :mod:`streamrestore.data.sources`; training samples are drawn from a pack by
:class:`streamrestore.data.samples.RestorationDataset`.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from streamrestore.data.sources import EVAL_ONLY, TRAIN_OK, UNKNOWN, EvalOnlyDataError, FaceSource
from streamrestore.errors import InputError
from streamrestore.faces.align import alignment_matrix, warp_to_template
from streamrestore.faces.detect import create_detector, detect_padded
from streamrestore.images import read_rgb
from streamrestore.video.reader import open_local_media, turned_upright

logger = logging.getLogger(__name__)

__all__ = [
    "PackReport",
    "pack_dataset",
    "PackedFaces",
    "split_identities",
    "sample_video_frames",
]


# --------------------------------------------------------------------------------------------
# Reading photos and sampling clips


def sample_video_frames(path: Path, count: int, min_gap_s: float) -> Iterator[tuple[float, np.ndarray]]:
    """Up to ``count`` (time, RGB frame) pairs spread evenly over the clip, ``min_gap_s`` apart.

    Frames far apart in time differ in pose and expression, which is what makes them useful as
    references of each other.
    """

    try:
        container = open_local_media(path)
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
                # as shown: a phone's portrait clip is stored sideways, and detectors want faces upright
                yield float(frame.time - start), turned_upright(frame.to_ndarray(format="rgb24"), frame.rotation)
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
        detector = create_detector("auto", models_dir=models_dir)

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
            raise InputError(f"packed dataset {self.path} not found; build it with `python -m streamrestore.data "
                             f"--out {self.path}` (see its --help; each config names the command that built its pack)")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError):  # (numpy's words, "pickled data", say nothing of what the file should be)
            raise InputError(f"{self.path} is not a packed face dataset (the .npz `python -m streamrestore.data` "
                             "writes)") from None
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
