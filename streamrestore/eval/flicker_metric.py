"""Temporal measures of a restored video: flicker (E_warp) and per-track identity spread.

**E_warp** (flow warping error, Lai et al., "Learning Blind Video Temporal Consistency", ECCV
2018): for each pair of consecutive frames, the previous frame of the candidate is warped to the
current one with the optical flow of a *reference* video, and the mean squared colour difference
(RGB in [0, 1], summed over the channels) is taken over the pixels the flow can follow. The flow
comes from the reference (the input the restorer was given), so a restorer cannot lower its
figure by changing the motion. Pixels that fail the forward-backward check are left out
(occlusions): with ``f`` the flow t -> t-1 and ``b`` the flow t-1 -> t sampled along ``f``, a
pixel counts when ``|f + b| < 0.5 + 0.01 (|f|^2 + |b|^2)``. Flow: OpenCV DIS, medium preset, on
the reference's grey frames. Figures are x 1e3 and the mean over all pairs; the same definition
as ``shared/tools/flicker.py`` (used to cross-check this code, not copied from it).

**Identity spread**: per track, the standard deviation over frames of the similarity of the
restored face to the references, as measured by a judge embedder (the paddle MobileFaceNet in
``streamrestore.eval``): a steady identity has a small spread. :class:`IdentitySpread` collects
the similarities; the caller chooses the judge and the face crops.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

__all__ = ["ReferenceFlow", "WarpError", "e_warp", "e_warp_files", "IdentitySpread", "identity_spread", "track_crops",
           "flow_with_occlusion", "warp_by_flow", "pixel_grid"]


def _as_unit(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) frames, got shape {rgb.shape}")
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    return rgb.astype(np.float32, copy=False)


def _grey(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype != np.uint8:
        rgb = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def pixel_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) float32 coordinate grids of an (H, W) picture, for ``cv2.remap`` with a flow."""
    h, w = shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return gx, gy


def warp_by_flow(image: np.ndarray, flow: np.ndarray, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``image`` sampled at ``grid + flow`` (bilinear, edges replicated)."""
    gx, gy = grid
    return cv2.remap(image, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def flow_with_occlusion(dis, prev_grey: np.ndarray, grey: np.ndarray,
                        grid: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The flow from ``grey`` (t) back to ``prev_grey`` (t-1) and the mask of pixels it follows.

    A pixel counts as followed (not occluded) when the flow and the backward flow carried along
    it cancel to within 0.5 + 0.01 (|f|^2 + |b|^2) px (the usual forward-backward check, as in
    the shared ``flicker.py``). ``dis``: a ``cv2.DISOpticalFlow`` (the medium preset here).
    """
    forward = dis.calc(grey, prev_grey, None)  # t -> t-1
    backward = dis.calc(prev_grey, grey, None)  # t-1 -> t
    back = warp_by_flow(backward, forward, grid)
    sq = lambda f: (f * f).sum(axis=2)  # noqa: E731
    mask = np.sqrt(sq(forward + back)) < 0.5 + 0.01 * (sq(forward) + sq(back))
    return forward, mask


class ReferenceFlow:
    """The flow of a reference clip between consecutive frames, and the warp error of any
    stream's frame pair under it (one pair at a time; several streams may share it).

    :meth:`next_pair` takes the next reference frame and prepares the flow from it back to the
    one before and the mask of the pixels it follows (:func:`flow_with_occlusion`);
    :meth:`error` then measures a candidate's (previous, current) frames with them.
    """

    def __init__(self):
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._prev_grey: np.ndarray | None = None
        self._grid: tuple[np.ndarray, np.ndarray] | None = None
        self.flow: np.ndarray | None = None
        self.mask: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the previous frame (a scene cut: the next frame starts a new chain of pairs)."""
        self._prev_grey = self.flow = self.mask = None

    def next_pair(self, reference: np.ndarray) -> bool:
        """Move on to the pair (previous, this) of the reference; False when there is no pair
        (the first frame, or a change of size)."""
        grey = _grey(np.asarray(reference))
        prev, self._prev_grey = self._prev_grey, grey
        if prev is None or prev.shape != grey.shape:
            self.flow = self.mask = None
            return False
        if self._grid is None or self._grid[0].shape != grey.shape:
            self._grid = pixel_grid(grey.shape)
        self.flow, self.mask = flow_with_occlusion(self._dis, prev, grey, self._grid)
        return True

    def error(self, prev: np.ndarray, current: np.ndarray, region: tuple[int, int, int, int] | None = None) -> float:
        """Mean over followed pixels (inside the box ``region`` = (x0, y0, x1, y1) if given) of the
        squared RGB error in [0, 1] units, summed over channels; NaN when no pixel is left.
        Frames are (H, W, 3) uint8, or float in [0, 1], of the reference's size."""
        if self.flow is None:
            raise RuntimeError("error() needs a pair: call next_pair() with two frames first")
        prev, current = _as_unit(prev), _as_unit(current)
        if current.shape[:2] != self.mask.shape or prev.shape[:2] != self.mask.shape:
            raise ValueError(f"candidate {current.shape[:2]} and reference {self.mask.shape} differ in size")
        mask = self.mask
        if region is not None:
            x0, y0, x1, y1 = region
            inside = np.zeros_like(mask)
            inside[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
            mask = mask & inside
        if not mask.any():
            return math.nan
        diff = ((current - warp_by_flow(prev, self.flow, self._grid)) ** 2).sum(axis=2)
        return float(diff[mask].mean())


class WarpError:
    """Streaming E_warp: feed (reference, candidate) frame pairs in order with :meth:`add`.

    Frames are (H, W, 3) RGB, uint8 or float in [0, 1]; reference and candidate of one step
    must have the same size. Several candidates can share one reference's flow: pass a sequence
    of candidates to :meth:`add` (``errors[i]`` then collects candidate i's pairs).

    Args:
        candidates: how many candidate streams are measured against the reference (default 1).
        region: optional (x0, y0, x1, y1) box: measure only inside it (e.g. a face region).
    """

    def __init__(self, candidates: int = 1, region: tuple[int, int, int, int] | None = None):
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        self.region = region
        self._flow = ReferenceFlow()
        self._prev: list[np.ndarray] | None = None
        #: per candidate, the E_warp of every pair measured so far (not x 1e3)
        self.errors: list[list[float]] = [[] for _ in range(candidates)]

    def reset(self) -> None:
        """Forget the previous frame (e.g. at a scene cut: the next frame starts a new pair chain)."""
        self._flow.reset()
        self._prev = None

    def add(self, reference: np.ndarray, candidate: np.ndarray | Sequence[np.ndarray] | None = None) -> list[float]:
        """Adds one frame; returns this pair's E_warp per candidate (empty for the first frame
        or a pair with no followed pixel). ``candidate`` None measures the reference itself."""
        if candidate is None:
            candidate = reference
        cands = [candidate] if isinstance(candidate, np.ndarray) else list(candidate)
        if len(cands) != len(self.errors):
            raise ValueError(f"expected {len(self.errors)} candidates, got {len(cands)}")
        cands = [_as_unit(c) for c in cands]
        size = np.asarray(reference).shape[:2]
        for c in cands:
            if c.shape[:2] != size:
                raise ValueError(f"candidate {c.shape[:2]} and reference {size} differ in size")
        result: list[float] = []
        if self._flow.next_pair(reference):
            values = [self._flow.error(prev, cur, self.region) for cur, prev in zip(cands, self._prev)]
            if not math.isnan(values[0]):
                for errors, value in zip(self.errors, values):
                    errors.append(value)
                result = values
        self._prev = cands
        return result

    def value(self, candidate: int = 0) -> float:
        """Mean E_warp x 1e3 of candidate ``candidate`` over the pairs so far (nan if none)."""
        errors = self.errors[candidate]
        return 1e3 * float(np.mean(errors)) if errors else math.nan

    @property
    def pairs(self) -> int:
        return len(self.errors[0])


def e_warp(reference: Iterable[np.ndarray], candidate: Iterable[np.ndarray] | None = None) -> tuple[float, int]:
    """(mean E_warp x 1e3, pairs) of ``candidate`` frames with the flow of ``reference`` frames
    (the candidate defaults to the reference: the input's own E_warp)."""
    meter = WarpError()
    if candidate is None:
        for ref in reference:
            meter.add(ref)
    else:
        for ref, cand in zip(reference, candidate):
            meter.add(ref, cand)
    return meter.value(), meter.pairs


def _decoded(path: str | Path, max_frames: int | None) -> Iterator[np.ndarray]:
    from streamrestore.video.reader import open_local_media

    with open_local_media(path) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if max_frames is not None and i >= max_frames:
                return
            yield frame.to_ndarray(format="rgb24")


def e_warp_files(reference: str | Path, candidate: str | Path | None = None, *,
                 max_frames: int | None = None) -> tuple[float, float, int]:
    """E_warp x 1e3 of two video files, frame for frame: (reference's own, candidate's with the
    reference's flow, pairs). ``max_frames`` limits both to their first frames."""
    meter = WarpError(candidates=2)
    cand = _decoded(candidate if candidate is not None else reference, max_frames)
    for ref, out in zip(_decoded(reference, max_frames), cand):
        meter.add(ref, [ref, out])
    return meter.value(0), meter.value(1), meter.pairs


class IdentitySpread:
    """Per-track identity similarities over frames, and their spread.

    Add each frame's similarity of a track's restored face to its references (cosine of the
    judge's embeddings) with :meth:`add`, or the embedding itself with :meth:`add_embedding`
    when the reference embedding was given.

    Args:
        reference: optional (D,) or (N, D) reference embedding(s) (the mean of the rows is
            used), for :meth:`add_embedding`.
    """

    def __init__(self, reference: np.ndarray | None = None):
        self._reference = None
        if reference is not None:
            ref = np.asarray(reference, np.float64)
            ref = ref.mean(axis=0) if ref.ndim == 2 else ref.reshape(-1)
            self._reference = ref / max(float(np.linalg.norm(ref)), 1e-12)
        self.similarities: dict[Hashable, list[float]] = {}

    def add(self, track_id: Hashable, similarity: float) -> None:
        self.similarities.setdefault(track_id, []).append(float(similarity))

    def add_embedding(self, track_id: Hashable, embedding: np.ndarray) -> float:
        """Adds the cosine of ``embedding`` to the reference; returns it."""
        if self._reference is None:
            raise ValueError("IdentitySpread was built without a reference embedding")
        e = np.asarray(embedding, np.float64).reshape(-1)
        sim = float(e @ self._reference / max(float(np.linalg.norm(e)), 1e-12))
        self.add(track_id, sim)
        return sim

    def per_track(self, min_frames: int = 2) -> dict[Hashable, dict[str, float]]:
        """Per track with at least ``min_frames`` frames: ``{"mean", "std", "frames"}``."""
        return identity_spread(self.similarities, min_frames=min_frames)

    def spread(self, min_frames: int = 2) -> float:
        """The frame-weighted mean over tracks of the per-track standard deviation (nan if none)."""
        rows = self.per_track(min_frames).values()
        frames = sum(r["frames"] for r in rows)
        return sum(r["std"] * r["frames"] for r in rows) / frames if frames else math.nan


def identity_spread(similarities: Mapping[Hashable, Sequence[float]], *, min_frames: int = 2
                    ) -> dict[Hashable, dict[str, float]]:
    """Per track: mean and (population) standard deviation of its per-frame identity similarity."""
    out = {}
    for tid, values in similarities.items():
        v = np.asarray(values, np.float64)
        v = v[np.isfinite(v)]
        if len(v) >= min_frames:
            out[tid] = {"mean": float(v.mean()), "std": float(v.std()), "frames": int(len(v))}
    return out


def track_crops(frame: np.ndarray, faces, resolution: int) -> dict:
    """``{track_id: (R, R, 3) uint8 FFHQ-aligned crop}`` of a restored RGB ``frame``, for the
    faces a :class:`~streamrestore.pipeline.FaceRestorer` restored in it (its ``last_faces``):
    what to embed for :class:`IdentitySpread` (e.g. ``streamrestore.eval.judges.OnnxEmbedder``
    with the paddle model, via ``arcface_crop``)."""
    from streamrestore.faces.align import crop_face
    from streamrestore.pixels import pixels_of

    px = pixels_of(np.ascontiguousarray(frame), "rgb")
    return {f.track_id: crop_face(px, f.matrix, resolution) for f in faces}
