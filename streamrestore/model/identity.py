"""A restorer that returns its input: proves the pipeline's geometry and timing without a model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class IdentityReferences:
    """What :class:`IdentityRestorer` keeps per identity: only how many references it was given."""

    count: int


class IdentityRestorer:
    """Implements the :class:`streamrestore.types.Restorer` protocol and changes nothing.

    Args:
        resolution: side of the aligned crops it receives (default 512, the paper's size).
    """

    name = "identity"

    def __init__(self, resolution: int = 512):
        if resolution <= 0:
            raise ValueError(f"resolution must be positive, got {resolution}")
        self.resolution = resolution

    def encode_references(self, faces: torch.Tensor) -> IdentityReferences:
        return IdentityReferences(count=int(faces.shape[0]))

    def restore(self, faces: torch.Tensor, caches: Sequence[IdentityReferences | None],
                noise_seeds: Sequence[int] | None = None) -> torch.Tensor:
        """``faces`` as given; ``noise_seeds`` is ignored (there is no noise)."""
        if len(caches) != faces.shape[0]:
            raise ValueError(f"got {faces.shape[0]} faces but {len(caches)} caches")
        return faces  # callers never write into the result (the pipeline copies out)
