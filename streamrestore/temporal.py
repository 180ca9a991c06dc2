"""Temporal smoothing of restored faces, per track, in aligned-crop space.

A single-step restorer with fixed noise is already deterministic, but tiny input changes
(sensor noise, compression) still change its output a little every frame, which shows as
flicker on a still face. Where the aligned *input* did not change between two frames, the
previous output is kept; where it did change (a mouth moving, a head turning), the new output
wins. Works per pixel, so a talking mouth is not dragged while the forehead stays steady.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class TemporalConfig:
    """Args:
        strength: the most weight the previous output can keep, 0 turns smoothing off
            (default 0.6: halves frame-to-frame flicker on still regions while a sudden change
            is fully followed within two frames).
        tolerance: input change, in 0-255 levels averaged over a small window, at which the
            previous output's weight has fallen to 1/e of ``strength`` (default 6: above
            compression noise on typical video, below the change of a moving feature).
        window: side of the box filter that averages the input change, in crop pixels at 512
            (scaled with the crop size; default 9).
    """

    strength: float = 0.6
    tolerance: float = 6.0
    window: int = 9

    def __post_init__(self):
        if not 0.0 <= self.strength < 1.0:
            raise ValueError(f"strength must be in [0, 1), got {self.strength}")
        if self.tolerance <= 0:
            raise ValueError(f"tolerance must be positive, got {self.tolerance}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")


class TemporalSmoother:
    """Keeps the last input and output crop of each track and blends the next output."""

    def __init__(self, config: TemporalConfig = TemporalConfig()):
        self.config = config
        # track id -> (input, output): uint8 HWC arrays, or float CHW tensors (smooth_tensor)
        self._last: dict[int, tuple] = {}

    def smooth(self, track_id: int, original: np.ndarray, restored: np.ndarray) -> np.ndarray:
        """Returns the smoothed restored crop (uint8) for ``track_id``; remembers this frame."""
        cfg = self.config
        if cfg.strength == 0.0:
            return restored
        prev = self._last.get(track_id)
        out = restored
        if prev is not None and prev[0].shape == original.shape:
            prev_in, prev_out = prev
            # The change map is smooth by construction (box-averaged), so it is computed on a
            # 4x smaller grid and scaled back up: same weights, a fraction of the cost at 512.
            r = original.shape[0]
            small = max(8, r // 4)
            diff = cv2.resize(cv2.absdiff(original, prev_in), (small, small), interpolation=cv2.INTER_AREA)
            change = diff.mean(axis=2, dtype=np.float32)
            k = max(1, round(cfg.window * small / 512)) | 1
            change = cv2.blur(change, (k, k))
            keep = cfg.strength * np.exp(-change / cfg.tolerance)
            keep = cv2.resize(keep.astype(np.float32), (r, r), interpolation=cv2.INTER_LINEAR)
            out = cv2.blendLinear(prev_out, np.ascontiguousarray(restored), keep, 1.0 - keep)
        self._last[track_id] = (original, out)
        return out

    def smooth_tensor(self, track_id: int, original: "torch.Tensor", restored: "torch.Tensor") -> "torch.Tensor":
        """:meth:`smooth` for (3, R, R) float crops in [0, 1] on any torch device (the
        device-resident frame path); same weights, computed with torch ops where the crops are."""
        import torch
        import torch.nn.functional as F

        cfg = self.config
        if cfg.strength == 0.0:
            return restored
        prev = self._last.get(track_id)
        out = restored
        if prev is not None and isinstance(prev[0], torch.Tensor) and prev[0].shape == original.shape:
            prev_in, prev_out = prev
            r = original.shape[-1]
            small = max(8, r // 4)
            diff = (original - prev_in).abs().mean(dim=0, keepdim=True)[None] * 255.0
            change = F.adaptive_avg_pool2d(diff, small)
            k = max(1, round(cfg.window * small / 512)) | 1
            change = F.avg_pool2d(F.pad(change, (k // 2,) * 4, mode="reflect"), k, stride=1) if k > 1 else change
            keep = cfg.strength * torch.exp(-change / cfg.tolerance)
            keep = F.interpolate(keep, size=(r, r), mode="bilinear", align_corners=False)[0]
            out = keep * prev_out + (1.0 - keep) * restored
        self._last[track_id] = (original, out)
        return out

    def forget(self, live_track_ids) -> None:
        """Drops the state of tracks not in ``live_track_ids`` (ended tracks)."""
        live = set(live_track_ids)
        for tid in [t for t in self._last if t not in live]:
            del self._last[tid]
