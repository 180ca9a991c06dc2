"""GPU kernels of the frame path (Triton) and their plain PyTorch references.

- :mod:`streamrestore.kernels.crop_warp`: batched affine warp of decoded frames into aligned face crops.
- :mod:`streamrestore.kernels.paste_back`: inverse warp + feathered mask + colour gain/offset + blend of the
  restored crops into their frame, in one pass per face.

Each operation has a PyTorch reference implementation (``grid_sample``-based) with the same
math; the CPU path runs the reference, CUDA tensors run the Triton kernel when the optional
``triton`` package (``pip install 'streamrestore[gpu]'``) is importable. Tests compare the two
on CPU under ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

from streamrestore.kernels.available import triton_available
from streamrestore.kernels.crop_warp import crop_warp, crop_warp_reference, crop_warp_triton
from streamrestore.kernels.paste_back import (
    color_transform,
    paste_back,
    paste_back_reference,
    paste_back_triton,
    paste_weights,
)

__all__ = [
    "color_transform", "crop_warp", "crop_warp_reference", "crop_warp_triton", "paste_back",
    "paste_back_reference", "paste_back_triton", "paste_weights", "triton_available",
]
