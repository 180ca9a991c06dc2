"""A restorer run on aligned crops larger than the ones it was made for.

``lite`` restores 128-px crops. A face in a frame is usually larger than that (the video
benchmark's 256-px clips hold theirs at ~2 frame pixels per crop pixel, 720p clips at 3-6), and
what the pipeline does around the model — registering the reference photos' detail onto the face,
the gates, the temporal fusion, the paste-back — works at the crop's size. :class:`ResampledRestorer`
lets those stages work on larger crops while the model keeps its own size: each crop is shrunk
to the model's side (area average), restored, and the model's *change* (output minus its shrunk
input) is enlarged (bicubic) and added to the large crop. A face the model leaves alone comes
back exactly as it went in, at full resolution; what the crop holds above the model's
resolution is the frame's own, and the reference detail stage can add the references' there.
Measured in ``docs/video_eval.md``, "Session 20".
"""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from streamrestore.types import Restorer

__all__ = ["AUTO_MAX_SIDE", "AUTO_MIN_FRAME_PIXELS", "ResampledRestorer", "at_crop_resolution", "auto_crop_side", "crop_sides",
           "restore_batches"]

#: ``crop_resolution="auto"`` gives a face the largest crop side (the model's ×1, ×2, ×4) that still
#: holds at least this many frame pixels per crop pixel. Measured on the video benchmark
#: (``docs/video_eval.md``, "Sessions 22-23"): faces shown at ≥ 2.5 frame px per 128-px crop pixel
#: (tpsmm 2.9, d14 3.6, d13 5.8) gain 0.09-0.34 dB face PSNR at 256/512, and the 256-px clips' faces (2.0)
#: at 256 gain less and flicker more (Andrew Ng 1.22x the input's E_warp, against 1.15x at 128).
AUTO_MIN_FRAME_PIXELS = 1.25
#: the largest side ``"auto"`` cuts (measured up to it; a model made for it or larger keeps its own)
AUTO_MAX_SIDE = 512



class ResampledRestorer:
    """Implements the :class:`streamrestore.types.Restorer` protocol at ``resolution`` around
    ``restorer`` (which keeps its own resolution). Other attributes (``device``, ``name``, ...)
    are the wrapped restorer's.

    Args:
        restorer: the restorer to run.
        resolution: side of the crops this one receives; larger than ``restorer.resolution``.

    Raises:
        ValueError: ``resolution`` is not larger than the restorer's.
    """

    def __init__(self, restorer: Restorer, resolution: int) -> None:
        if int(resolution) <= int(restorer.resolution):
            raise ValueError(f"resolution must be larger than the restorer's {restorer.resolution}, got {resolution}")
        self.restorer = restorer
        self.resolution = int(resolution)

    def __getattr__(self, name: str) -> Any:
        # only called for attributes this object lacks: the wrapped restorer's (device, name, ...)
        if name == "restorer":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.restorer, name)

    def encode_references(self, faces: torch.Tensor) -> Any:
        """The wrapped restorer's encoding of the references, shrunk to its size."""
        return self.restorer.encode_references(_shrink(faces, int(self.restorer.resolution)))

    def restore(self, faces: torch.Tensor, caches: Sequence[Any], noise_seeds: Sequence[int] | None = None
                ) -> torch.Tensor:
        """``faces`` plus the wrapped restorer's change on their shrunk copies, enlarged."""
        return restore_batches(self.restorer, [faces], caches, noise_seeds)[0]


def restore_batches(restorer: Restorer, batches: Sequence[torch.Tensor], caches: Sequence[Any],
                    noise_seeds: Sequence[int] | None = None) -> list[torch.Tensor]:
    """Batches of crops of several sides (each at least ``restorer.resolution``) restored in one
    call of ``restorer``: each batch shrunk to its side, and its change enlarged back onto it (a
    batch at its side comes back as the restorer returns it). ``caches`` and ``noise_seeds``: one
    per face, the batches' faces in order."""
    side = int(restorer.resolution)
    smalls = [_shrink(faces, side) for faces in batches]
    out = restorer.restore(smalls[0] if len(smalls) == 1 else torch.cat(smalls), caches, noise_seeds=noise_seeds)
    results, start = [], 0
    for faces, small in zip(batches, smalls):
        restored = out[start:start + len(faces)]
        start += len(faces)
        if small is not faces:
            change = _enlarge(restored.to(faces.dtype) - small, int(faces.shape[-1]))
            restored = (faces + change).clamp(0.0, 1.0)
        results.append(restored)
    return results


def _shrink(faces: torch.Tensor, side: int) -> torch.Tensor:
    if faces.shape[-1] == side and faces.shape[-2] == side:
        return faces
    return F.interpolate(faces, size=(side, side), mode="area")


def _enlarge(images: torch.Tensor, side: int) -> torch.Tensor:
    """(N, C, r, r) images enlarged to ``side`` px, bicubic (half-pixel centres). On the CPU by
    OpenCV: the same numbers as PyTorch's (to 1e-6) at a fifth of its time (one thread, 128 → 256:
    1.0 ms against 5.2; → 512: 1.4 against 18)."""
    if images.device.type != "cpu" or images.dtype != torch.float32 or images.requires_grad:
        return F.interpolate(images, size=(side, side), mode="bicubic", align_corners=False)
    out = [cv2.resize(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), (side, side), interpolation=cv2.INTER_CUBIC)
           for image in images]
    return torch.from_numpy(np.stack(out).reshape(len(out), side, side, -1)).permute(0, 3, 1, 2)


def at_crop_resolution(restorer: Restorer, resolution: int | None) -> Restorer:
    """``restorer`` run on crops of ``resolution`` px (:class:`ResampledRestorer`), or as it is
    when ``resolution`` is None or not above its own."""
    if resolution is None or int(resolution) <= int(restorer.resolution):
        return restorer
    return ResampledRestorer(restorer, resolution)


def crop_sides(model_side: int, crop_resolution: int | str | None) -> tuple[int, ...]:
    """The crop sides a pipeline may cut for a restorer of ``model_side`` px, smallest first:
    the model's own for None, one side for a number (never below the model's), and the model's
    side ×1, ×2 and ×4 up to :data:`AUTO_MAX_SIDE` for ``"auto"`` (:func:`auto_crop_side` picks
    one per face)."""
    if crop_resolution is None:
        return (int(model_side),)
    if crop_resolution == "auto":
        m = int(model_side)
        return tuple(side for side in (m, 2 * m, 4 * m) if side == m or side <= AUTO_MAX_SIDE)
    return (max(int(crop_resolution), int(model_side)),)


def auto_crop_side(frame_pixels: float, sides: Sequence[int], current: int | None = None,
                   hysteresis: float = 1.15) -> int:
    """The crop side for a face whose crop square spans ``frame_pixels`` pixels of the frame: the
    largest of ``sides`` with at least :data:`AUTO_MIN_FRAME_PIXELS` frame pixels per crop pixel.

    Args:
        frame_pixels: the aligned crop's side measured in frame pixels (the face's own scale).
        sides: the sides to choose from, smallest first (:func:`crop_sides`).
        current: the side the face's track has now; it is kept unless the face has grown or
            shrunk ``hysteresis`` times past the threshold (a face near a threshold would
            otherwise switch, and its temporal state reset, back and forth).
        hysteresis: see ``current``.
    """
    def pick(scale: float) -> int:
        best = sides[0]
        for side in sides:
            if frame_pixels * scale >= AUTO_MIN_FRAME_PIXELS * side:
                best = side
        return best

    if current is None or current not in sides:
        return pick(1.0)
    if pick(1.0 / hysteresis) > current:  # grown well past the next threshold
        return pick(1.0 / hysteresis)
    if pick(hysteresis) < current:  # shrunk well below this side's threshold
        return pick(hysteresis)
    return current
