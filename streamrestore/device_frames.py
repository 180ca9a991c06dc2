"""The device-resident frame path: a frame goes to the restorer's device once, faces are cut and
pasted back there, and one copy comes back for encoding.

With the restorer on a GPU, the host path (``streamrestore.pixels`` + ``blend``, OpenCV on the
CPU) would send every crop to the GPU and every restored crop back, and keep the CPU busy with
warps while the GPU waits. Here instead, per frame:

1. upload: the decoded frame's Y/U/V planes (1.5 bytes a pixel; RGB frames as they are) go to
   the device, where they become an RGB frame;
2. crop: :func:`streamrestore.kernels.crop_warp.crop_warp` cuts every face of the frame in one batched warp;
3. restore: the crops go to the restorer without leaving the device;
4. paste: colour gain/offset per face (:func:`streamrestore.kernels.paste_back.color_transform`) and the fused
   inverse warp + feathered blend (:func:`streamrestore.kernels.paste_back.paste_back`);
5. download: the frame is converted back to Y/U/V on the device, keeping the original sample
   wherever the paste changed nothing, and copied back once.

On CUDA the kernels are Triton's; on other devices (tests, CPU) their PyTorch references run, so
this path can be checked anywhere. It differs from the host path in one way: the fused kernel
blends the restored crop over the frame and has no detail transfer (see ``PasteConfig``), so it
suits models whose crops are at least as large as the faces (the paper-scale 512 px model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from streamrestore.blend import PasteConfig
from streamrestore.kernels.crop_warp import crop_warp
from streamrestore.kernels.paste_back import color_transform, paste_back, paste_weights
from streamrestore.pixels import Yuv420Pixels, copy_timing, frame_like, plane_view, yuv420_frame, yuv_matrices

__all__ = ["DeviceFrame", "DeviceFramePath", "yuv420_to_rgb", "rgb_to_yuv420"]


def yuv420_to_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, to_rgb: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 RGB from uint8 planes: chroma upsampled bilinearly (samples at the centres
    of 2x2 blocks, as ``Yuv420Pixels.region``), then the 3x4 ``to_rgb`` matrix."""
    h, w = y.shape
    chroma = torch.stack([u, v])[None].float()
    chroma = F.interpolate(chroma, size=(2 * u.shape[0], 2 * u.shape[1]), mode="bilinear", align_corners=False)
    yuv = torch.cat([y[None].float(), chroma[0, :, :h, :w]])
    rgb = torch.einsum("ij,jhw->hwi", to_rgb[:, :3], yuv) + to_rgb[:, 3]
    return rgb.round_().clamp_(0, 255).to(torch.uint8)


def rgb_to_yuv420(rgb: torch.Tensor, from_rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 Y (H, W), U and V (ceil(H/2), ceil(W/2)) of an (H, W, 3) uint8 RGB frame; chroma is
    the mean over each 2x2 block (the part of it inside the frame)."""
    yuv = torch.einsum("ij,hwj->ihw", from_rgb[:, :3], rgb.float()) + from_rgb[:, 3, None, None]
    chroma = F.avg_pool2d(yuv[None, 1:], 2, ceil_mode=True, count_include_pad=False)[0]
    y = yuv[0].round_().clamp_(0, 255).to(torch.uint8)
    u, v = (c.round().clamp(0, 255).to(torch.uint8) for c in chroma)
    return y, u, v


@dataclass
class DeviceFrame:
    """One frame on the device: its RGB pixels (modified in place by pastes) and, for 4:2:0
    sources, the original planes and matrices to go back with."""

    rgb: torch.Tensor  # (H, W, 3) uint8
    source: Any  # the host frame it came from (numpy array or av.VideoFrame)
    planes: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    from_rgb: torch.Tensor | None = None
    original: torch.Tensor | None = None  # RGB before any paste (4:2:0 sources)


class DeviceFramePath:
    """Cuts and pastes faces on ``device`` (see the module docstring).

    Args:
        device: where frames, crops and restored faces live (the restorer's device).
        resolution: side of the aligned crops.
        paste: blend settings; ``feather``, ``color_match`` and ``max_std_ratio`` apply,
            ``detail_transfer`` does not (the fused kernel blends whole crops).
    """

    def __init__(self, device: torch.device | str, resolution: int, paste: PasteConfig = PasteConfig()):
        if resolution <= 0:
            raise ValueError(f"resolution must be positive, got {resolution}")
        self.device = torch.device(device)
        self.resolution = int(resolution)
        self.paste_config = paste
        self._matrices: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _colour_matrices(self, pixels: Yuv420Pixels) -> tuple[torch.Tensor, torch.Tensor]:
        key = (int(pixels.frame.colorspace), int(pixels.frame.color_range))
        if key not in self._matrices:
            to_rgb, from_rgb = yuv_matrices(*key)
            self._matrices[key] = (torch.tensor(to_rgb, device=self.device), torch.tensor(from_rgb, device=self.device))
        return self._matrices[key]

    def upload(self, pixels, source) -> DeviceFrame:
        """The frame on the device (``pixels`` from ``streamrestore.pixels``; ``source`` is the
        host frame returned for it)."""
        if isinstance(pixels, Yuv420Pixels):
            to_rgb, from_rgb = self._colour_matrices(pixels)
            planes = tuple(torch.from_numpy(np.ascontiguousarray(p)).to(self.device, non_blocking=True) for p in pixels.planes)
            rgb = yuv420_to_rgb(*planes, to_rgb)
            return DeviceFrame(rgb, source, planes, from_rgb, rgb.clone())
        rgb = torch.from_numpy(np.ascontiguousarray(pixels.full())).to(self.device, non_blocking=True)
        return DeviceFrame(rgb, source)

    def crops(self, frame: DeviceFrame, matrices: np.ndarray) -> torch.Tensor:
        """(B, 3, R, R) float32 crops in [0, 1] of every face (``matrices``: (B, 2, 3))."""
        return crop_warp(frame.rgb[None], matrices, self.resolution)

    def paste(self, frame: DeviceFrame, restored: torch.Tensor, crops: torch.Tensor, matrices: np.ndarray) -> None:
        """Blends ``restored`` (B, 3, R, R) in [0, 1] into the frame; ``crops`` are what the
        restorer was given (for colour matching, and the change that
        ``PasteConfig.detail_transfer`` pastes, as the host path does)."""
        cfg = self.paste_config
        restored = restored.float()
        gain = offset = None
        if cfg.color_match:
            weight = paste_weights(matrices, tuple(frame.rgb.shape[:2]), self.resolution, cfg.feather, device=self.device)
            gain, offset = color_transform(restored, crops, weight, cfg.max_std_ratio)
        if cfg.detail_transfer:
            if gain is not None and offset is not None:
                restored = (restored * gain[:, :, None, None] + offset[:, :, None, None]).clamp(0.0, 1.0)
            paste_back(frame.rgb[None], restored - crops.float(), matrices, None, feather=cfg.feather, additive=True)
            return
        paste_back(frame.rgb[None], restored, matrices, None, gain, offset, feather=cfg.feather)

    def download(self, frame: DeviceFrame):
        """The restored frame on the host, of the source's kind: a new 4:2:0 ``av.VideoFrame``
        (samples the paste left alone keep their exact values), an RGB ``av.VideoFrame``, or an
        RGB numpy array."""
        if frame.planes is None:
            rgb = frame.rgb.cpu().numpy()
            if isinstance(frame.source, np.ndarray):
                return rgb
            h, w = rgb.shape[:2]
            out = frame_like(frame.source, "rgb24")
            plane_view(out.planes[0], h, w * 3).reshape(h, w, 3)[...] = rgb
            copy_timing(frame.source, out)
            return out
        y0, u0, v0 = frame.planes
        y1, u1, v1 = rgb_to_yuv420(frame.rgb, frame.from_rgb)
        changed = (frame.rgb != frame.original).any(dim=-1)
        block_changed = F.max_pool2d(changed[None, None].float(), 2, ceil_mode=True)[0, 0] > 0
        y = torch.where(changed, y1, y0)
        u = torch.where(block_changed, u1, u0)
        v = torch.where(block_changed, v1, v0)
        return yuv420_frame(frame.source, (y.cpu().numpy(), u.cpu().numpy(), v.cpu().numpy()))[0]
