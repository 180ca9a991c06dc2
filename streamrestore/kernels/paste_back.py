"""Fused paste-back: restored crops → their frame, in one pass per face.

For every frame pixel ``(x, y)`` in a face's footprint, one pass does what
:class:`streamrestore.blend.PasteBack` does in several: the inverse warp (the crop is sampled at
``M @ (x, y, 1)``, bicubic, edge taps replicated), the per-channel colour gain/offset, the
feathered blend weight, and the blend into the uint8 frame (rounded to nearest).

The blend weight is analytic, so it costs no texture and no second warp:

- the crop's feather: ``s(u) * s(v)`` where ``s`` is the smoothstep ramp of
  :func:`streamrestore.blend.feather_mask` over a band of ``feather * R`` crop pixels (equal to
  that mask at pixel centres, zero outside the crop);
- the frame-edge fade, for faces cut by the frame border: the crop's pixels beyond the picture
  were constant padding, not face, so the weight ramps from 0 at each frame edge the crop's
  footprint crosses to 1 one band (in crop pixels) inside it. (The CPU ``PasteBack`` gets the
  same effect by eroding and blurring a warped "inside" mask.)

:func:`paste_weights` gives the same weight in crop space, and :func:`color_transform` the
per-face colour gain/offset from it (as ``PasteBack.color_transform``: the restored crop's
weighted per-channel mean, and within ``max_std_ratio`` its std, moved to the original crop's).
Faces are pasted in order, so where two overlap the later one is on top.

Two implementations of the same math: :func:`paste_back_reference` (PyTorch ``grid_sample``,
the CPU path) and :func:`paste_back_triton` (one Triton launch per face over its footprint);
:func:`paste_back` picks the kernel for CUDA tensors when Triton is importable.
"""
from __future__ import annotations

import functools
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from streamrestore.kernels.available import triton_available
from streamrestore.kernels.crop_warp import invert_matrices

__all__ = ["color_transform", "paste_back", "paste_back_reference", "paste_back_triton", "paste_weights"]

#: far-away edge position for frame edges a face's footprint does not cross
_NO_EDGE = 1.0e9


@functools.lru_cache(maxsize=64)
def _band(resolution: int, feather: float) -> float:
    return max(1.0, feather * resolution)


def _smoothstep(t: torch.Tensor) -> torch.Tensor:
    t = t.clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _check_feather(feather: float) -> None:
    if not 0.0 < feather <= 0.5:
        raise ValueError(f"feather must be in (0, 0.5], got {feather}")


class _FaceGeometry:
    """Per-face numbers both implementations use (host side, float64)."""

    def __init__(self, matrix: np.ndarray, inverse: np.ndarray, frame_hw: tuple[int, int], resolution: int):
        h, w = frame_hw
        r = resolution
        self.matrix = matrix
        # crop px per frame px (a similarity: the same in every direction)
        self.scale = math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))
        # footprint of the weight's support: crop square [-0.5, R - 0.5]^2 in frame coordinates
        corners = np.array([[-0.5, -0.5, 1], [r - 0.5, -0.5, 1], [-0.5, r - 0.5, 1], [r - 0.5, r - 0.5, 1]])
        foot = corners @ inverse.T
        lo, hi = foot.min(0), foot.max(0)
        # The picture spans [-0.5, W - 0.5] x [-0.5, H - 0.5]; only edges the footprint crosses fade.
        self.edges = (
            -0.5 if lo[0] < -0.5 else -_NO_EDGE,
            -0.5 if lo[1] < -0.5 else -_NO_EDGE,
            w - 0.5 if hi[0] > w - 0.5 else _NO_EDGE,
            h - 0.5 if hi[1] > h - 0.5 else _NO_EDGE,
        )
        self.x0 = max(int(math.floor(lo[0])), 0)
        self.y0 = max(int(math.floor(lo[1])), 0)
        self.x1 = min(int(math.ceil(hi[0])) + 1, w)
        self.y1 = min(int(math.ceil(hi[1])) + 1, h)

    @property
    def empty(self) -> bool:
        return self.x1 <= self.x0 or self.y1 <= self.y0


def _geometry(matrices, frame_hw, resolution):
    m = np.asarray(matrices, dtype=np.float64)
    inv = invert_matrices(m)
    return [_FaceGeometry(m[i], inv[i], frame_hw, resolution) for i in range(m.shape[0])], inv


def _edge_fade(x: torch.Tensor, y: torch.Tensor, geo: _FaceGeometry, band: float) -> torch.Tensor:
    left, top, right, bottom = geo.edges
    d = torch.minimum(torch.minimum(x - left, right - x), torch.minimum(y - top, bottom - y))
    return _smoothstep(d * (geo.scale / band))


def paste_weights(matrices, frame_hw: tuple[int, int], resolution: int, feather: float = 0.1,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, R, R) float32 blend weight of each crop pixel (feather x frame-edge fade), as pasted."""
    _check_feather(feather)
    r = int(resolution)
    geos, inv = _geometry(matrices, frame_hw, r)
    band = _band(r, feather)
    coords = torch.arange(r, dtype=torch.float32, device=device)
    edge = torch.minimum(coords + 0.5, r - 0.5 - coords)
    ramp = _smoothstep(edge / band)
    feather_map = ramp[:, None] * ramp[None, :]
    out = feather_map.expand(len(geos), r, r).clone()
    v, u = torch.meshgrid(coords.double(), coords.double(), indexing="ij")
    for i, geo in enumerate(geos):
        if all(abs(e) == _NO_EDGE for e in geo.edges):
            continue  # the crop saw only picture
        a = torch.from_numpy(inv[i]).to(device)
        x = (a[0, 0] * u + a[0, 1] * v + a[0, 2]).float()
        y = (a[1, 0] * u + a[1, 1] * v + a[1, 2]).float()
        out[i] *= _edge_fade(x, y, geo, band)
    return out


def color_transform(restored: torch.Tensor, original: torch.Tensor, weight: torch.Tensor,
                    max_std_ratio: float = 1.25) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-face, per-channel ``(gain, offset)``, each (B, 3) float32, moving the weighted mean
    (and, within ``max_std_ratio``, the std) of ``restored`` to that of ``original``.

    ``restored``/``original``: (B, 3, R, R) in [0, 1]; ``weight``: (B, R, R) from
    :func:`paste_weights`. Statistics use every 4th pixel from R >= 128 on (the same numbers to
    a fraction of a level, 16x fewer reads), as ``PasteBack.color_transform`` does.
    """
    if max_std_ratio < 1.0:
        raise ValueError(f"max_std_ratio must be >= 1, got {max_std_ratio}")
    step = 4 if restored.shape[-1] >= 128 else 1
    res = restored[..., ::step, ::step].float()
    ref = original[..., ::step, ::step].float()
    w = weight[:, None, ::step, ::step].float()
    wsum = w.sum(dim=(2, 3), keepdim=True)
    empty = wsum <= 1e-6
    w = w / wsum.clamp_min(1e-6)
    mu_r = (res * w).sum(dim=(2, 3), keepdim=True)
    mu_o = (ref * w).sum(dim=(2, 3), keepdim=True)
    eps = 1e-3 / 255.0
    sd_r = ((res - mu_r) ** 2 * w).sum(dim=(2, 3), keepdim=True).sqrt() + eps
    sd_o = ((ref - mu_o) ** 2 * w).sum(dim=(2, 3), keepdim=True).sqrt() + eps
    gain = (sd_o / sd_r).clamp(1.0 / max_std_ratio, max_std_ratio)
    offset = mu_o - gain * mu_r
    gain = torch.where(empty, torch.ones_like(gain), gain)
    offset = torch.where(empty, torch.zeros_like(offset), offset)
    return gain[:, :, 0, 0], offset[:, :, 0, 0]


def _check(frames, restored, matrices, frame_index, gain, offset):
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"frames must be (F, H, W, 3) uint8, got {tuple(frames.shape)} {frames.dtype}")
    if restored.ndim != 4 or restored.shape[1] != 3 or restored.shape[2] != restored.shape[3]:
        raise ValueError(f"restored must have shape (B, 3, R, R), got {tuple(restored.shape)}")
    b = restored.shape[0]
    m = np.asarray(matrices, dtype=np.float64)
    if m.shape != (b, 2, 3):
        raise ValueError(f"matrices must have shape ({b}, 2, 3), got {m.shape}")
    if frame_index is None:
        if frames.shape[0] != 1 and b:
            raise ValueError(f"frame_index is needed when frames holds {frames.shape[0]} frames")
        index = [0] * b
    else:
        index = [int(i) for i in (frame_index.tolist() if isinstance(frame_index, torch.Tensor) else frame_index)]
        if len(index) != b or any(not 0 <= i < frames.shape[0] for i in index):
            raise ValueError(f"frame_index must hold {b} values in [0, {frames.shape[0]}), got {index}")
    if gain is None:
        gain = torch.ones(b, 3, device=restored.device)
    if offset is None:
        offset = torch.zeros(b, 3, device=restored.device)
    if tuple(gain.shape) != (b, 3) or tuple(offset.shape) != (b, 3):
        raise ValueError(f"gain and offset must have shape ({b}, 3), got {tuple(gain.shape)}, {tuple(offset.shape)}")
    return m, index, gain.float(), offset.float()


def _check_additive(additive: bool, gain, offset) -> None:
    if additive and (gain is not None or offset is not None):
        raise ValueError("an additive paste takes no gain or offset: colour-match the restored crop first")


def paste_back_reference(frames: torch.Tensor, restored: torch.Tensor, matrices, frame_index=None,
                         gain: torch.Tensor | None = None, offset: torch.Tensor | None = None, *,
                         feather: float = 0.1, additive: bool = False) -> torch.Tensor:
    """Blend ``restored`` (B, 3, R, R) in [0, 1] into ``frames`` (F, H, W, 3) uint8, in place;
    with ``additive``, add it instead: ``restored`` is then the model's change (restored minus
    its input, in [-1, 1]) and the frame keeps its own pixels where the change is 0.

    Args:
        frames: decoded RGB frames, channels last; modified in place and returned.
        restored: restored crops, float in [0, 1].
        matrices: (B, 2, 3) frame → crop affines that cut the crops.
        frame_index: (B,) frame of each face; may be omitted when F == 1.
        gain, offset: (B, 3) colour correction ``c * gain + offset`` (in [0, 1] units) from
            :func:`color_transform`; default none.
        feather: soft border width as a fraction of R (default 0.1, as ``PasteConfig``).
        additive: add the change ``restored`` (``PasteConfig.detail_transfer``); no ``gain``
            or ``offset`` then (colour-match the restored crop before taking the change).
    """
    _check_feather(feather)
    _check_additive(additive, gain, offset)
    m, index, gain, offset = _check(frames, restored, matrices, frame_index, gain, offset)
    r = restored.shape[-1]
    geos, _ = _geometry(m, frames.shape[1:3], r)
    band = _band(r, feather)
    dev = frames.device
    for i, geo in enumerate(geos):
        if geo.empty:
            continue
        ys = torch.arange(geo.y0, geo.y1, dtype=torch.float64, device=dev)
        xs = torch.arange(geo.x0, geo.x1, dtype=torch.float64, device=dev)
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        a = torch.from_numpy(geo.matrix).to(dev)
        u = (a[0, 0] * x + a[0, 1] * y + a[0, 2]).float()
        v = (a[1, 0] * x + a[1, 1] * y + a[1, 2]).float()
        grid = torch.stack([(2.0 * u + 1.0) / r - 1.0, (2.0 * v + 1.0) / r - 1.0], dim=-1)[None]
        # bicubic with edge taps clamped (= OpenCV's BORDER_REPLICATE); the weight is 0 out there anyway
        sample = F.grid_sample(restored[i : i + 1].float(), grid, mode="bicubic", padding_mode="border",
                               align_corners=False)[0]
        alpha = _smoothstep(torch.minimum(u + 0.5, r - 0.5 - u) / band) * _smoothstep(
            torch.minimum(v + 0.5, r - 0.5 - v) / band)
        alpha = alpha * _edge_fade(x.float(), y.float(), geo, band)
        roi = frames[index[i], geo.y0 : geo.y1, geo.x0 : geo.x1]
        old = roi.permute(2, 0, 1).float()
        if additive:
            blended = old + alpha * (sample * 255.0)  # a change of 0 gives the old value exactly
        else:
            color = (sample * gain[i, :, None, None] + offset[i, :, None, None]).clamp(0.0, 1.0) * 255.0
            blended = alpha * color + (1.0 - alpha) * old  # alpha == 0 gives the old value exactly
        roi.copy_(torch.floor(blended + 0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0))
    return frames


# -- Triton ---------------------------------------------------------------------------------

def _kernel_source():
    import triton
    import triton.language as tl

    def paste_back_kernel(frame_ptr, crop_ptr, gain_ptr, offset_ptr, face,
                          R, R_float, x0, y0, roi_w, n_pixels, stride_h, stride_w, stride_c,
                          m00, m01, m02, m10, m11, m12,
                          e_left, e_top, e_right, e_bottom, edge_scale, inv_band,
                          BLOCK: tl.constexpr, ADDITIVE: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = offs < n_pixels
        px = x0 + offs % roi_w
        py = y0 + offs // roi_w
        x = px.to(tl.float32)
        y = py.to(tl.float32)
        u = m00 * x + m01 * y + m02
        v = m10 * x + m11 * y + m12
        # feathered weight: smoothstep ramps at the crop border and at crossed frame edges
        rf = R_float
        tu = tl.minimum(tl.maximum(tl.minimum(u + 0.5, rf - 0.5 - u) * inv_band, 0.0), 1.0)
        tv = tl.minimum(tl.maximum(tl.minimum(v + 0.5, rf - 0.5 - v) * inv_band, 0.0), 1.0)
        d = tl.minimum(tl.minimum(x - e_left, e_right - x), tl.minimum(y - e_top, e_bottom - y))
        te = tl.minimum(tl.maximum(d * edge_scale, 0.0), 1.0)
        alpha = (tu * tu * (3.0 - 2.0 * tu)) * (tv * tv * (3.0 - 2.0 * tv)) * (te * te * (3.0 - 2.0 * te))
        # bicubic taps at floor-1 .. floor+2, clamped into the crop (replicated edge)
        uf = tl.floor(u)
        vf = tl.floor(v)
        tx = u - uf
        ty = v - vf
        ui = uf.to(tl.int32)
        vi = vf.to(tl.int32)
        a = -0.75
        s = tx + 1.0
        wx0 = ((a * s - 5.0 * a) * s + 8.0 * a) * s - 4.0 * a
        wx1 = ((a + 2.0) * tx - (a + 3.0)) * tx * tx + 1.0
        s = 1.0 - tx
        wx2 = ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0
        s = 2.0 - tx
        wx3 = ((a * s - 5.0 * a) * s + 8.0 * a) * s - 4.0 * a
        s = ty + 1.0
        wy0 = ((a * s - 5.0 * a) * s + 8.0 * a) * s - 4.0 * a
        wy1 = ((a + 2.0) * ty - (a + 3.0)) * ty * ty + 1.0
        s = 1.0 - ty
        wy2 = ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0
        s = 2.0 - ty
        wy3 = ((a * s - 5.0 * a) * s + 8.0 * a) * s - 4.0 * a
        plane = R * R
        crop = crop_ptr + face * 3 * plane  # < 2**31 elements for any batch of 512 px crops
        c0 = tl.zeros([BLOCK], dtype=tl.float32)
        c1 = tl.zeros([BLOCK], dtype=tl.float32)
        c2 = tl.zeros([BLOCK], dtype=tl.float32)
        for j in tl.static_range(4):
            wy = wy0 if j == 0 else (wy1 if j == 1 else (wy2 if j == 2 else wy3))
            vv = tl.minimum(tl.maximum(vi + (j - 1), 0), R - 1)
            r0 = tl.zeros([BLOCK], dtype=tl.float32)
            r1 = tl.zeros([BLOCK], dtype=tl.float32)
            r2 = tl.zeros([BLOCK], dtype=tl.float32)
            for k in tl.static_range(4):
                wx = wx0 if k == 0 else (wx1 if k == 1 else (wx2 if k == 2 else wx3))
                uu = tl.minimum(tl.maximum(ui + (k - 1), 0), R - 1)
                p = crop + vv * R + uu
                r0 += wx * tl.load(p, mask=valid, other=0.0).to(tl.float32)
                r1 += wx * tl.load(p + plane, mask=valid, other=0.0).to(tl.float32)
                r2 += wx * tl.load(p + 2 * plane, mask=valid, other=0.0).to(tl.float32)
            c0 += wy * r0
            c1 += wy * r1
            c2 += wy * r2
        fp = frame_ptr + py.to(tl.int64) * stride_h + px.to(tl.int64) * stride_w
        for ch in tl.static_range(3):
            c = c0 if ch == 0 else (c1 if ch == 1 else c2)
            old = tl.load(fp + ch * stride_c, mask=valid, other=0).to(tl.float32)
            if ADDITIVE:  # c is the model's change
                out = old + alpha * (c * 255.0)
            else:
                g = tl.load(gain_ptr + face * 3 + ch)
                o = tl.load(offset_ptr + face * 3 + ch)
                c = tl.minimum(tl.maximum(c * g + o, 0.0), 1.0) * 255.0
                out = alpha * c + (1.0 - alpha) * old
            out = tl.minimum(tl.maximum(tl.floor(out + 0.5), 0.0), 255.0)
            tl.store(fp + ch * stride_c, out.to(tl.uint8), mask=valid)

    return triton.jit(paste_back_kernel)


@functools.lru_cache(maxsize=2)
def _compiled(interpret: bool):
    # triton.jit reads TRITON_INTERPRET when it wraps the function: one wrapper per mode.
    return _kernel_source()


def paste_back_triton(frames: torch.Tensor, restored: torch.Tensor, matrices, frame_index=None,
                      gain: torch.Tensor | None = None, offset: torch.Tensor | None = None, *,
                      feather: float = 0.1, block: int = 256, additive: bool = False) -> torch.Tensor:
    """Same as :func:`paste_back_reference`, one Triton launch per face over its footprint.

    Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (tests).
    """
    if not triton_available():
        raise RuntimeError("paste_back_triton needs the 'triton' package (pip install 'streamrestore[gpu]')")
    _check_feather(feather)
    _check_additive(additive, gain, offset)
    if block < 16 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 16, got {block}")
    m, index, gain, offset = _check(frames, restored, matrices, frame_index, gain, offset)
    r = restored.shape[-1]
    geos, _ = _geometry(m, frames.shape[1:3], r)
    band = _band(r, feather)
    crops = restored.float().contiguous()
    gain = gain.to(frames.device).contiguous()
    offset = offset.to(frames.device).contiguous()
    kernel = _compiled(os.environ.get("TRITON_INTERPRET", "0") == "1")
    _, sh, sw, sc = frames.stride()
    for i, geo in enumerate(geos):
        if geo.empty:
            continue
        roi_w, roi_h = geo.x1 - geo.x0, geo.y1 - geo.y0
        n = roi_w * roi_h
        a = geo.matrix
        kernel[((n + block - 1) // block,)](
            frames[index[i]], crops, gain, offset, i, r, float(r), geo.x0, geo.y0, roi_w, n, sh, sw, sc,
            float(a[0, 0]), float(a[0, 1]), float(a[0, 2]), float(a[1, 0]), float(a[1, 1]), float(a[1, 2]),
            *(float(e) for e in geo.edges), geo.scale / band, 1.0 / band, BLOCK=block, ADDITIVE=bool(additive),
        )
    return frames


def paste_back(frames: torch.Tensor, restored: torch.Tensor, matrices, frame_index=None,
               gain: torch.Tensor | None = None, offset: torch.Tensor | None = None, *,
               feather: float = 0.1, additive: bool = False) -> torch.Tensor:
    """Paste every face back: the Triton kernel for CUDA frames when Triton is installed, else
    :func:`paste_back_reference` (the CPU path). Arguments as for the reference."""
    if frames.is_cuda and triton_available():
        return paste_back_triton(frames, restored, matrices, frame_index, gain, offset, feather=feather,
                                 additive=additive)
    return paste_back_reference(frames, restored, matrices, frame_index, gain, offset, feather=feather,
                                additive=additive)
