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

import torch
import torch.nn.functional as F

from streamrestore.types import Restorer

__all__ = ["ResampledRestorer", "at_crop_resolution"]


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

    def _shrink(self, faces: torch.Tensor) -> torch.Tensor:
        side = int(self.restorer.resolution)
        if faces.shape[-1] == side and faces.shape[-2] == side:
            return faces
        return F.interpolate(faces, size=(side, side), mode="area")

    def encode_references(self, faces: torch.Tensor) -> Any:
        """The wrapped restorer's encoding of the references, shrunk to its size."""
        return self.restorer.encode_references(self._shrink(faces))

    def restore(self, faces: torch.Tensor, caches: Sequence[Any], noise_seeds: Sequence[int] | None = None
                ) -> torch.Tensor:
        """``faces`` plus the wrapped restorer's change on their shrunk copies, enlarged."""
        small = self._shrink(faces)
        out = self.restorer.restore(small, caches, noise_seeds=noise_seeds)
        change = out.to(faces.dtype) - small
        change = F.interpolate(change, size=tuple(faces.shape[-2:]), mode="bicubic", align_corners=False)
        return (faces + change).clamp(0.0, 1.0)


def at_crop_resolution(restorer: Restorer, resolution: int | None) -> Restorer:
    """``restorer`` run on crops of ``resolution`` px (:class:`ResampledRestorer`), or as it is
    when ``resolution`` is None or not above its own."""
    if resolution is None or int(resolution) <= int(restorer.resolution):
        return restorer
    return ResampledRestorer(restorer, resolution)
