"""Evaluation runs: load cases, restore them every way that is compared, measure.

A case is one person: a degraded aligned crop, its ground truth, and reference crops of the
same person. Three kinds of data give cases (:func:`load_cases`):

- the InstantRestore test layout ``<id>/degraded.png, gt.png, conditioning/*`` (used as is);
- a packed dataset ``.npz`` (:mod:`streamrestore.data.pack`): per identity, the first crop
  is the ground truth and the others (other photos, or frames of a clip >= 1 s away) are its
  references; degraded with a fixed seed per identity;
- clean identity folders ``<id>/*.jpg|png`` (aligned in memory at 512 px like a pack) with the
  same fixed-seed degradation.

Methods (rows of the report, :data:`METHODS`):

- ``input``: the degraded crop itself;
- ``bicubic``: the classical baseline: area-downscale the degraded crop by
  :attr:`EvalConfig.bicubic_factor` (4: 512 -> 128 px, which averages away noise and JPEG
  blocks) and resize back with bicubic interpolation;
- ``model_norefs``, ``model_refs1``, ``model_refs4``: the model with no, the first one, and
  the first four references of the person;
- ``model_refs4_other``: the control: the first four references of the *next* case's person.

The model runs at its own resolution: the crops are resized to ``restorer.resolution`` (area
filter when shrinking, bicubic when enlarging) and its output is resized back to the ground
truth's size with bicubic interpolation; every metric is computed at the ground truth's size
(512 px for the InstantRestore set). Metrics: see :mod:`streamrestore.eval.metrics` and
:mod:`streamrestore.eval.judges`.
"""
from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from streamrestore.errors import InputError
from streamrestore.images import is_image, read_rgb
from streamrestore.reference_detail import ReferenceDetail, ReferenceDetailConfig

logger = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "METRICS",
    "EvalCase",
    "EvalConfig",
    "EvalResult",
    "load_cases",
    "bicubic_baseline",
    "evaluate",
]

METHODS = ("input", "bicubic", "model_norefs", "model_refs1", "model_refs4", "model_refs4_other")
#: Metric keys; ``id_<judge>`` is the cosine similarity to the ground truth under that judge.
METRICS = ("psnr", "ssim", "id_mobilefacenet", "id_paddle", "id_dlib", "lmd")

_TEST_LAYOUT_FILES = ("degraded.png", "gt.png")


@dataclass
class EvalCase:
    """One person: degraded crop, ground truth (same size, uint8 RGB, FFHQ-aligned), references."""

    name: str
    degraded: np.ndarray
    ground_truth: np.ndarray
    references: list[np.ndarray]

    def __post_init__(self) -> None:
        if self.degraded.shape != self.ground_truth.shape:
            raise ValueError(f"case {self.name}: degraded {self.degraded.shape} and ground truth "
                             f"{self.ground_truth.shape} differ in shape")


@dataclass(frozen=True)
class EvalConfig:
    """Options of an evaluation run.

    Attributes:
        preset: degradation preset for clean sets (packs, identity folders); the paper's severe
            range by default. Test-layout sets bring their own ``degraded.png``.
        seed: base of the fixed per-identity degradation seeds (seed + crc32(name)).
        limit: evaluate only the first N cases (sorted by name); None: all.
        many_refs: how many references ``model_refs4`` and the control use (4 as in the paper).
        bicubic_factor: downscale factor of the ``bicubic`` baseline.
        grid_cases: how many cases keep their images for the side-by-side grid.
        with_dlib: also judge with dlib's ResNet (~80 ms per image on a CPU core).
        reference_detail: the pipeline's reference detail stage on the rows with references
            (:class:`~streamrestore.reference_detail.ReferenceDetailConfig`; its default, as the
            pipeline; ``ReferenceDetailConfig.off()``: the model alone).
    """

    preset: str = "severe"
    seed: int = 0
    limit: int | None = None
    many_refs: int = 4
    bicubic_factor: int = 4
    grid_cases: int = 8
    with_dlib: bool = True
    reference_detail: ReferenceDetailConfig = field(default_factory=ReferenceDetailConfig)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be None or >= 1, got {self.limit}")
        if self.many_refs < 1:
            raise ValueError(f"many_refs must be >= 1, got {self.many_refs}")
        if self.bicubic_factor < 1:
            raise ValueError(f"bicubic_factor must be >= 1, got {self.bicubic_factor}")
        if self.grid_cases < 0:
            raise ValueError(f"grid_cases must be >= 0, got {self.grid_cases}")


@dataclass
class EvalResult:
    """Per-image metric rows, the averaged table, and the images kept for the grid."""

    per_image: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    images: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # case -> column -> image
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Cases


def _resize(image: np.ndarray, size: int, *, bicubic_up: bool = True) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    shrink = image.shape[0] > size
    interp = cv2.INTER_AREA if shrink else (cv2.INTER_CUBIC if bicubic_up else cv2.INTER_LINEAR)
    return cv2.resize(image, (size, size), interpolation=interp)


def _case_seed(name: str, seed: int) -> int:
    return (zlib.crc32(name.encode("utf-8")) + int(seed)) % (2**31 - 1)


def is_test_layout(folder: Path) -> bool:
    """True when ``folder`` holds InstantRestore test cases (``<id>/degraded.png`` etc.)."""
    return any(all((d / f).is_file() for f in _TEST_LAYOUT_FILES) for d in folder.iterdir() if d.is_dir())


def _test_layout_cases(folder: Path) -> list[EvalCase]:
    cases = []
    for case_dir in sorted(d for d in folder.iterdir() if d.is_dir()):
        if not all((case_dir / f).is_file() for f in _TEST_LAYOUT_FILES):
            logger.warning("eval: %s lacks degraded.png or gt.png; skipped", case_dir)
            continue
        gt = read_rgb(case_dir / "gt.png")
        degraded = read_rgb(case_dir / "degraded.png")
        if degraded.shape != gt.shape:
            degraded = _resize(degraded, gt.shape[0])
        cond = case_dir / "conditioning"
        refs = [read_rgb(p) for p in sorted(cond.iterdir()) if is_image(p)] \
            if cond.is_dir() else []
        cases.append(EvalCase(case_dir.name, degraded, gt, refs))
    return cases


def _pack_cases(pack, config: EvalConfig, identities: Sequence[str] | None) -> list[EvalCase]:
    from streamrestore.data.degrade import degrade  # noqa: PLC0415

    cases = []
    names = sorted(identities if identities is not None else pack.identities)
    for name in names:
        members = pack.indices_of(name)
        if len(members) < 2:
            continue
        target = int(members[0])
        refs = []
        for r in members[1:]:
            same_source = pack.source[r] == pack.source[target]
            if same_source and not (np.isfinite(pack.time_s[target])
                                    and abs(float(pack.time_s[r] - pack.time_s[target])) >= 1.0):
                continue
            refs.append(pack.image(int(r)))
        if not refs:
            continue
        gt = pack.image(target)
        cases.append(EvalCase(name, degrade(gt, config.preset, _case_seed(name, config.seed)), gt, refs))
    return cases


def load_cases(data: str | Path, config: EvalConfig = EvalConfig(), *, models_dir: str | Path | None = None,
               identities: Sequence[str] | None = None) -> list[EvalCase]:
    """The evaluation cases in ``data`` (a test-layout folder, identity folders, or a ``.npz`` pack).

    ``identities`` restricts a pack or identity folders to these names (e.g. the held-out half
    of :meth:`streamrestore.data.pack.PackedFaces.split`). ``models_dir`` (the evaluation models
    folder, :class:`~streamrestore.model_files.EvalModelFiles`) gives the SCRFD detector used to
    align identity folders.
    """
    from streamrestore.data.pack import PackedFaces, pack_dataset  # noqa: PLC0415
    from streamrestore.data.sources import discover_sources  # noqa: PLC0415

    data = Path(data)
    if not data.exists():
        raise InputError(f"evaluation data {data} does not exist; pass a folder of <id>/gt.png + conditioning/ "
                         "or of identity folders, or a packed .npz")
    if data.is_file():
        if data.suffix != ".npz":
            raise InputError(f"{data} is not a folder or a packed .npz dataset")
        cases = _pack_cases(PackedFaces(data), config, identities)
    elif is_test_layout(data):
        cases = _test_layout_cases(data)
        if identities is not None:
            cases = [c for c in cases if c.name in set(identities)]
    else:
        import tempfile  # noqa: PLC0415

        from streamrestore.faces.detect import ScrfdDetector  # noqa: PLC0415
        from streamrestore.model_files import EvalModelFiles  # noqa: PLC0415

        sources = [s for s in discover_sources(data) if s.kind == "image"]
        if identities is not None:
            sources = [s for s in sources if s.identity in set(identities)]
        files = EvalModelFiles.from_dir(models_dir) if models_dir is not None else None
        detector = ScrfdDetector(files.detector) if files is not None and not files.missing("detector") else None
        with tempfile.TemporaryDirectory() as tmp:
            # evaluation only: the licence gate of the packer is for training packs
            pack_dataset(sources, Path(tmp) / "eval.npz", 512, detector=detector, models_dir=models_dir,
                         allow_eval_only=True, encoding="png", max_upscale=4.0, max_bytes=2**40)
            cases = _pack_cases(PackedFaces(Path(tmp) / "eval.npz"), config, None)
    cases.sort(key=lambda c: c.name)
    if config.limit is not None:
        cases = cases[: config.limit]
    if not cases:
        raise InputError(f"no evaluation case in {data}: each person needs a ground truth and at least one reference")
    return cases


# --------------------------------------------------------------------------------------------
# Methods


def bicubic_baseline(image: np.ndarray, factor: int = 4) -> np.ndarray:
    """The classical baseline: area-downscale by ``factor``, bicubic back to the input size."""
    size = image.shape[0]
    small = max(8, size // factor)
    down = cv2.resize(image, (small, small), interpolation=cv2.INTER_AREA)
    return cv2.resize(down, (size, size), interpolation=cv2.INTER_CUBIC)


def _to_batch(images: Sequence[np.ndarray], resolution: int):
    import torch  # noqa: PLC0415

    stack = np.stack([_resize(im, resolution) for im in images]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(stack)).float().div_(255.0)


def _restore(restorer, image: np.ndarray, cache, detail: ReferenceDetail | None = None,
             refs: Sequence[np.ndarray] = ()) -> np.ndarray:
    """The restorer's output for ``image`` at its size; with ``detail`` and ``refs``, the
    references' registered detail added as the pipeline adds it (at the restorer's resolution)."""
    import torch  # noqa: PLC0415

    batch = _to_batch([image], restorer.resolution)
    with torch.no_grad():
        out = restorer.restore(batch, [cache])
    out = out[0].detach().float().clamp(0, 1).mul(255).round().byte().cpu().numpy().transpose(1, 2, 0)
    out = np.ascontiguousarray(out)
    if detail is not None and refs and detail.config.enabled:
        face = np.ascontiguousarray(batch[0].mul(255).round().byte().numpy().transpose(1, 2, 0))
        prepared = detail.prepare(np.stack([_resize(r, restorer.resolution) for r in refs]))
        out = detail.apply(face, out, prepared)
    return _resize(out, image.shape[0])


def _encode(restorer, refs: Sequence[np.ndarray]):
    import torch  # noqa: PLC0415

    with torch.no_grad():
        return restorer.encode_references(_to_batch(refs, restorer.resolution))


# --------------------------------------------------------------------------------------------
# Measuring


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def average_rows(per_image: Sequence[dict]) -> list[dict]:
    """Average per-image metrics by method (NaN entries, e.g. missed landmarks, are skipped)."""
    rows = []
    for method in METHODS:
        mine = [r for r in per_image if r["method"] == method]
        row = {"method": method, "n": len(mine)}
        for key in METRICS:
            row[key] = _mean([r[key] for r in mine])
        row["lmd_missed"] = sum(1 for r in mine if not math.isfinite(r["lmd"]))
        rows.append(row)
    return rows


def evaluate(cases: Sequence[EvalCase], restorer, judges: dict, landmarks, config: EvalConfig = EvalConfig(),
             progress=None) -> EvalResult:
    """Restore every case by every method of :data:`METHODS` and measure each output.

    Args:
        cases: from :func:`load_cases`.
        restorer: anything implementing :class:`streamrestore.types.Restorer`.
        judges: ``{"mobilefacenet": ..., "paddle": ..., "dlib": ...}``
            (:func:`streamrestore.eval.judges.load_judges`); a missing judge gives NaN.
        landmarks: a :class:`streamrestore.eval.judges.LandmarkDetector` (None: LMD is NaN).
        progress: optional callable ``(done, total)`` after each case.
    """
    from streamrestore.eval.judges import cosine_similarity  # noqa: PLC0415
    from streamrestore.eval.metrics import landmark_distance, psnr, ssim  # noqa: PLC0415

    result = EvalResult()
    detail = ReferenceDetail(config.reference_detail)
    if len(cases) < 2:
        result.notes.append("model_refs4_other needs two cases; it is NaN here")
    for index, case in enumerate(cases):
        gt = case.ground_truth
        gt_embeddings = {name: judge.embed([gt])[0] for name, judge in judges.items()}
        gt_landmarks = landmarks.landmarks(gt) if landmarks is not None else None
        refs = case.references
        if not refs:
            raise InputError(f"case {case.name} has no reference photo")
        outputs = {"input": case.degraded, "bicubic": bicubic_baseline(case.degraded, config.bicubic_factor)}
        outputs["model_norefs"] = _restore(restorer, case.degraded, None)
        outputs["model_refs1"] = _restore(restorer, case.degraded, _encode(restorer, refs[:1]), detail, refs[:1])
        many = refs[: config.many_refs]
        outputs["model_refs4"] = _restore(restorer, case.degraded, _encode(restorer, many), detail, many)
        if len(cases) > 1:
            other = cases[(index + 1) % len(cases)].references[: config.many_refs]
            outputs["model_refs4_other"] = _restore(restorer, case.degraded, _encode(restorer, other), detail, other)
        for method in METHODS:
            row = {"case": case.name, "method": method, **{k: float("nan") for k in METRICS}}
            out = outputs.get(method)
            if out is not None:
                row["psnr"] = psnr(out, gt)
                row["ssim"] = ssim(out, gt)
                for name, judge in judges.items():
                    row[f"id_{name}"] = float(cosine_similarity(judge.embed([out])[0], gt_embeddings[name]))
                if gt_landmarks is not None:
                    row["lmd"] = landmark_distance(landmarks.landmarks(out), gt_landmarks)
            row["refs"] = {"model_refs1": 1, "model_refs4": min(config.many_refs, len(refs))}.get(method, 0)
            if method == "model_refs4_other" and out is not None:
                row["refs"] = min(config.many_refs, len(cases[(index + 1) % len(cases)].references))
            result.per_image.append(row)
        if index < config.grid_cases:
            result.images[case.name] = {
                "degraded": case.degraded, "no refs": outputs["model_norefs"],
                # one column name for all rows: a person with fewer references uses all of theirs
                f"{config.many_refs} refs": outputs["model_refs4"], "ground truth": gt,
            }
        if progress is not None:
            progress(index + 1, len(cases))
    result.rows = average_rows(result.per_image)
    few = [c.name for c in cases if len(c.references) < config.many_refs]
    if few:
        result.notes.append(f"{len(few)} case(s) have fewer than {config.many_refs} references "
                            f"(all of theirs were used): {', '.join(few[:8])}")
    return result
