"""Batched affine crop warp: frames → aligned face crops (B, 3, R, R), float in [0, 1].

Every face is cut from its frame with its frame → crop similarity (the matrices
``streamrestore.faces.align.alignment_matrix`` returns). Conventions are OpenCV's
``warpAffine``: pixel centres sit at integer coordinates, crop pixel ``(u, v)`` shows the frame
at ``inverse(M) @ (u, v, 1)``, and taps outside the frame read ``border_value`` (a constant
border, as :func:`~streamrestore.faces.align.warp_to_template` uses). Bicubic uses the cubic
convolution kernel with a = -0.75 (OpenCV's and ``grid_sample``'s).

Two implementations of the same math:

- :func:`crop_warp_reference` — PyTorch ``grid_sample`` over each face's region of interest;
  runs anywhere and is what the CPU path uses.
- :func:`crop_warp_triton` — one Triton program per (face, block of crop pixels) reading the
  decoded uint8 HWC frames directly (no float copy of the frame is ever made).

:func:`crop_warp` picks the Triton kernel for CUDA tensors when Triton is importable, else the
reference. Unlike ``warp_to_template`` there is no pre-blur for faces shrunk by more than 2x
(a face over ~1000 px wide into a 512 crop): both implementations alias there alike.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from streamrestore.kernels.available import triton_available

__all__ = ["MODES", "crop_warp", "crop_warp_reference", "crop_warp_triton", "invert_matrices"]

#: interpolation modes both implementations support
MODES = ("bilinear", "bicubic")
#: extra frame pixels around a face's footprint that a bicubic tap may read
_TAP_MARGIN = 3


def invert_matrices(matrices) -> np.ndarray:
    """(B, 2, 3) frame → crop affines → their (B, 2, 3) crop → frame inverses, float64."""
    m = np.asarray(matrices, dtype=np.float64)
    if m.ndim != 3 or m.shape[1:] != (2, 3):
        raise ValueError(f"matrices must have shape (B, 2, 3), got {m.shape}")
    linear = m[:, :, :2]
    det = np.linalg.det(linear)
    if not np.all(np.isfinite(det)) or np.any(np.abs(det) < 1e-12):
        raise ValueError(f"matrices must be invertible, got determinants {det.tolist()}")
    inv_linear = np.linalg.inv(linear)
    inv_shift = -np.einsum("bij,bj->bi", inv_linear, m[:, :, 2])
    return np.concatenate([inv_linear, inv_shift[:, :, None]], axis=2)


def _check(frames: torch.Tensor, matrices, frame_index, resolution: int, mode: str):
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must have shape (F, H, W, 3) (decoded RGB, channels last), got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8 and not frames.dtype.is_floating_point:
        raise ValueError(f"frames must be uint8 (0..255) or float (0..1), got {frames.dtype}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(resolution, bool) or int(resolution) != resolution or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    inv = invert_matrices(matrices)
    b = inv.shape[0]
    if frame_index is None:
        if frames.shape[0] != 1 and b:
            raise ValueError(f"frame_index is needed when frames holds {frames.shape[0]} frames")
        index = np.zeros(b, dtype=np.int64)
    else:
        index = np.asarray(frame_index.cpu() if isinstance(frame_index, torch.Tensor) else frame_index, np.int64)
        if index.shape != (b,):
            raise ValueError(f"frame_index must have shape ({b},), got {index.shape}")
        if b and (index.min() < 0 or index.max() >= frames.shape[0]):
            raise ValueError(f"frame_index values must be in [0, {frames.shape[0]}), got {index.tolist()}")
    return inv, index


def _value_scale(frames: torch.Tensor) -> float:
    return 1.0 / 255.0 if frames.dtype == torch.uint8 else 1.0


def crop_warp_reference(frames: torch.Tensor, matrices, resolution: int, frame_index=None, *,
                        mode: str = "bicubic", border_value: float = 0.0) -> torch.Tensor:
    """Aligned crops (B, 3, R, R) float32 in [0, 1] on ``frames.device`` (PyTorch ``grid_sample``).

    Args:
        frames: (F, H, W, 3) RGB frames, uint8 (0..255) or float (0..1), channels last as decoded.
        matrices: (B, 2, 3) frame → crop affines (numpy or anything ``np.asarray`` takes).
        resolution: crop side R.
        frame_index: (B,) which frame each face is in; may be omitted when F == 1.
        mode: ``"bicubic"`` (default: the pipeline resamples twice, frame → crop → frame, and
            bilinear visibly blurs fine detail) or ``"bilinear"``.
        border_value: value (0..1) of taps outside the frame (default 0: black, so a face cut by
            the frame edge never gets a mirrored half head).
    """
    inv, index = _check(frames, matrices, frame_index, resolution, mode)
    r = int(resolution)
    b = inv.shape[0]
    out = torch.empty(b, 3, r, r, dtype=torch.float32, device=frames.device)
    if b == 0:
        return out
    _, h, w, _ = frames.shape
    scale = _value_scale(frames)
    uv = np.stack(np.meshgrid(np.arange(r, dtype=np.float64), np.arange(r, dtype=np.float64)), -1)  # (R, R, 2): u, v
    corners = np.array([[0, 0, 1], [r - 1, 0, 1], [0, r - 1, 1], [r - 1, r - 1, 1]], np.float64)
    for i in range(b):
        xy = uv @ inv[i, :, :2].T + inv[i, :, 2]  # (R, R, 2) frame positions of the crop pixels
        # Only the face's region of interest (+ the taps' reach) is converted to float.
        foot = corners @ inv[i].T
        x0 = max(int(math.floor(foot[:, 0].min())) - _TAP_MARGIN, 0)
        y0 = max(int(math.floor(foot[:, 1].min())) - _TAP_MARGIN, 0)
        x1 = min(int(math.ceil(foot[:, 0].max())) + _TAP_MARGIN + 1, w)
        y1 = min(int(math.ceil(foot[:, 1].max())) + _TAP_MARGIN + 1, h)
        if x1 <= x0 or y1 <= y0:  # the crop sees no picture at all
            out[i].fill_(min(max(border_value, 0.0), 1.0))
            continue
        roi = frames[int(index[i]), y0:y1, x0:x1].permute(2, 0, 1)[None].to(torch.float32)
        # Constant border: grid_sample pads with zeros, so sample (roi - border) and add it back.
        roi = roi * scale - border_value
        rw, rh = x1 - x0, y1 - y0
        grid = np.empty_like(xy)
        grid[..., 0] = (2.0 * (xy[..., 0] - x0) + 1.0) / rw - 1.0  # align_corners=False normalisation
        grid[..., 1] = (2.0 * (xy[..., 1] - y0) + 1.0) / rh - 1.0
        grid_t = torch.from_numpy(grid).to(device=frames.device, dtype=torch.float32)[None]
        crop = F.grid_sample(roi, grid_t, mode=mode, padding_mode="zeros", align_corners=False)
        out[i] = (crop[0] + border_value).clamp_(0.0, 1.0)
    return out


# -- Triton ---------------------------------------------------------------------------------

def _kernel_source():
    import triton
    import triton.language as tl

    def crop_warp_kernel(frames_ptr, inv_ptr, index_ptr, out_ptr, H, W, R,
                         stride_f, stride_h, stride_w, stride_c, value_scale, border,
                         BICUBIC: tl.constexpr, BLOCK: tl.constexpr):
        face = tl.program_id(0)
        offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        valid = offs < R * R
        u = (offs % R).to(tl.float32)
        v = (offs // R).to(tl.float32)
        a00 = tl.load(inv_ptr + face * 6 + 0)
        a01 = tl.load(inv_ptr + face * 6 + 1)
        a02 = tl.load(inv_ptr + face * 6 + 2)
        a10 = tl.load(inv_ptr + face * 6 + 3)
        a11 = tl.load(inv_ptr + face * 6 + 4)
        a12 = tl.load(inv_ptr + face * 6 + 5)
        x = a00 * u + a01 * v + a02
        y = a10 * u + a11 * v + a12
        frame = frames_ptr + tl.load(index_ptr + face).to(tl.int64) * stride_f
        xf = tl.floor(x)
        yf = tl.floor(y)
        tx = x - xf
        ty = y - yf
        xi = xf.to(tl.int32)
        yi = yf.to(tl.int32)
        acc0 = tl.zeros([BLOCK], dtype=tl.float32)
        acc1 = tl.zeros([BLOCK], dtype=tl.float32)
        acc2 = tl.zeros([BLOCK], dtype=tl.float32)
        if BICUBIC:
            a = -0.75
            # cubic convolution weights of the taps at floor-1 .. floor+2
            sx = tx + 1.0
            wx0 = ((a * sx - 5.0 * a) * sx + 8.0 * a) * sx - 4.0 * a
            wx1 = ((a + 2.0) * tx - (a + 3.0)) * tx * tx + 1.0
            sx = 1.0 - tx
            wx2 = ((a + 2.0) * sx - (a + 3.0)) * sx * sx + 1.0
            sx = 2.0 - tx
            wx3 = ((a * sx - 5.0 * a) * sx + 8.0 * a) * sx - 4.0 * a
            sy = ty + 1.0
            wy0 = ((a * sy - 5.0 * a) * sy + 8.0 * a) * sy - 4.0 * a
            wy1 = ((a + 2.0) * ty - (a + 3.0)) * ty * ty + 1.0
            sy = 1.0 - ty
            wy2 = ((a + 2.0) * sy - (a + 3.0)) * sy * sy + 1.0
            sy = 2.0 - ty
            wy3 = ((a * sy - 5.0 * a) * sy + 8.0 * a) * sy - 4.0 * a
            for j in tl.static_range(4):
                wy = wy0 if j == 0 else (wy1 if j == 1 else (wy2 if j == 2 else wy3))
                yy = yi + (j - 1)
                row_ok = valid & (yy >= 0) & (yy < H)
                # partial rows: a row sum, then its weight (the order grid_sample uses)
                r0 = tl.zeros([BLOCK], dtype=tl.float32)
                r1 = tl.zeros([BLOCK], dtype=tl.float32)
                r2 = tl.zeros([BLOCK], dtype=tl.float32)
                for k in tl.static_range(4):
                    wx = wx0 if k == 0 else (wx1 if k == 1 else (wx2 if k == 2 else wx3))
                    xx = xi + (k - 1)
                    ok = row_ok & (xx >= 0) & (xx < W)
                    p = frame + yy.to(tl.int64) * stride_h + xx.to(tl.int64) * stride_w
                    r0 += wx * tl.where(ok, tl.load(p, mask=ok, other=0).to(tl.float32) * value_scale, border)
                    r1 += wx * tl.where(ok, tl.load(p + stride_c, mask=ok, other=0).to(tl.float32) * value_scale, border)
                    r2 += wx * tl.where(ok, tl.load(p + 2 * stride_c, mask=ok, other=0).to(tl.float32) * value_scale, border)
                acc0 += wy * r0
                acc1 += wy * r1
                acc2 += wy * r2
        else:
            for j in tl.static_range(2):
                wy = (1.0 - ty) if j == 0 else ty
                yy = yi + j
                row_ok = valid & (yy >= 0) & (yy < H)
                for k in tl.static_range(2):
                    wgt = wy * ((1.0 - tx) if k == 0 else tx)
                    xx = xi + k
                    ok = row_ok & (xx >= 0) & (xx < W)
                    p = frame + yy.to(tl.int64) * stride_h + xx.to(tl.int64) * stride_w
                    acc0 += wgt * tl.where(ok, tl.load(p, mask=ok, other=0).to(tl.float32) * value_scale, border)
                    acc1 += wgt * tl.where(ok, tl.load(p + stride_c, mask=ok, other=0).to(tl.float32) * value_scale, border)
                    acc2 += wgt * tl.where(ok, tl.load(p + 2 * stride_c, mask=ok, other=0).to(tl.float32) * value_scale, border)
        base = out_ptr + face.to(tl.int64) * 3 * R * R + offs
        tl.store(base, tl.minimum(tl.maximum(acc0, 0.0), 1.0), mask=valid)
        tl.store(base + R * R, tl.minimum(tl.maximum(acc1, 0.0), 1.0), mask=valid)
        tl.store(base + 2 * R * R, tl.minimum(tl.maximum(acc2, 0.0), 1.0), mask=valid)

    return triton.jit(crop_warp_kernel)


@functools.lru_cache(maxsize=2)
def _compiled(interpret: bool):
    # triton.jit reads TRITON_INTERPRET when it wraps the function: one wrapper per mode.
    return _kernel_source()


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def crop_warp_triton(frames: torch.Tensor, matrices, resolution: int, frame_index=None, *,
                     mode: str = "bicubic", border_value: float = 0.0, block: int = 256) -> torch.Tensor:
    """Same as :func:`crop_warp_reference`, as one Triton kernel launch for all faces.

    Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (tests).
    """
    if not triton_available():
        raise RuntimeError("crop_warp_triton needs the 'triton' package (pip install 'streamrestore[gpu]')")
    inv, index = _check(frames, matrices, frame_index, resolution, mode)
    r = int(resolution)
    b = inv.shape[0]
    out = torch.empty(b, 3, r, r, dtype=torch.float32, device=frames.device)
    if b == 0:
        return out
    if block < 16 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 16, got {block}")
    inv_t = torch.from_numpy(inv.reshape(b, 6)).to(device=frames.device, dtype=torch.float32)
    index_t = torch.from_numpy(index).to(device=frames.device, dtype=torch.int32)
    kernel = _compiled(_interpreting())
    sf, sh, sw, sc = frames.stride()
    grid = (b, (r * r + block - 1) // block)
    kernel[grid](frames, inv_t, index_t, out, frames.shape[1], frames.shape[2], r, sf, sh, sw, sc,
                 _value_scale(frames), float(border_value), BICUBIC=mode == "bicubic", BLOCK=block)
    return out


def crop_warp(frames: torch.Tensor, matrices, resolution: int, frame_index=None, *,
              mode: str = "bicubic", border_value: float = 0.0) -> torch.Tensor:
    """Aligned crops of every face: the Triton kernel for CUDA frames when Triton is installed,
    else :func:`crop_warp_reference` (the CPU path). Arguments as for the reference."""
    if frames.is_cuda and triton_available():
        return crop_warp_triton(frames, matrices, resolution, frame_index, mode=mode, border_value=border_value)
    return crop_warp_reference(frames, matrices, resolution, frame_index, mode=mode, border_value=border_value)
