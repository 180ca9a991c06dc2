"""The forward pass of one training step (the training loop and per-identity adaptation share it).

Unlike :class:`~streamrestore.model.restorer.InstantRestorer` (inference: references encoded
once into caches, no gradients), it runs the references through the reference network on every
step, with gradients unless ``reference_grad=False``, and packs their raw keys/values with
:func:`~streamrestore.model.packing.pack_kv`.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from streamrestore.model.packing import pack_kv
from streamrestore.model.restorer import InstantRestoreNet

__all__ = ["TrainingModel"]


class TrainingModel(nn.Module):
    """Forward pass of one training step, as one module (so data-parallel wrappers see it).

    ``forward(degraded, references, ref_mask, noise, ref_noise, map_layer)`` returns the restored
    images (B, 3, R, R) in [0, 1] and, when ``map_layer`` names a shared layer, that layer's
    attention over the first reference (B, heads, queries, ref_tokens), else None.
    """

    def __init__(self, net: InstantRestoreNet, reference_grad: bool = True):
        super().__init__()
        self.net = net
        self.reference_grad = reference_grad

    def forward(self, degraded: torch.Tensor, references: torch.Tensor, ref_mask: torch.Tensor,
                noise: torch.Tensor, ref_noise: torch.Tensor, map_layer: str | None = None):
        net = self.net
        latents = net.encode(degraded)
        refs = None
        if bool(ref_mask.any()):
            # every slot, padding included: tensor shapes stay the same from step to step, which
            # on CPU is far cheaper than skipping the padding (oneDNN builds kernels per shape)
            flat = references.flatten(0, 1)
            with nullcontext() if self.reference_grad else torch.no_grad():
                ref_latents = net.encode(flat, reference=True)
                # ref_noise: (1, ...) one noise for all, or (>= N, ...) one per reference slot
                n = references.shape[1]
                per_slot = ref_noise if ref_noise.shape[0] == 1 else ref_noise[:n]
                kv = net.reference_kv(ref_latents, per_slot.expand(n, -1, -1, -1).repeat(references.shape[0], 1, 1, 1))
            refs = pack_kv(net, kv, ref_mask)
        maps = {map_layer: None} if (map_layer is not None and refs is not None) else None
        x0 = net.denoise(latents, noise, refs, attention_maps=maps)
        reference_faces = None
        if net.head_sees_references and bool(ref_mask.any()):
            # the mean of each face's real references; a face without any gets itself (None per face)
            weights = ref_mask.to(references.dtype)[:, :, None, None, None]
            mean = (references * weights).sum(1) / weights.sum(1).clamp(min=1)
            has = ref_mask.any(1)[:, None, None, None]
            reference_faces = torch.where(has, mean, degraded)
        restored = net.refine(degraded, net.decode(x0), reference_faces)
        probs = None
        if maps is not None and maps.get(map_layer) is not None:
            probs = maps[map_layer].for_reference(0)
        return restored, probs
