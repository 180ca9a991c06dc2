"""MobileFaceNet (Chen et al., 2018) as a differentiable face-embedding network.

The layer names follow the "foamliu" state-dict layout so that ``mobilefacenet_foamliu.pt``
loads without renaming (307 keys). The architecture was read off that state dict and the
equivalent ONNX export (``mobilefacenet_128d.onnx``, the evaluation's reported MobileFaceNet):

    conv1     3x3/2, 3->64, BN, ReLU6                            112 -> 56
    dw_conv   depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU  (64)
    features  15 inverted residuals (expand 1x1 + BN + ReLU6, depthwise 3x3 + BN + ReLU6,
              project 1x1 + BN; skip connection when stride 1 and widths match)
              64->64 (t=2, s=2), 4 x 64->64 (t=2), 64->128 (t=4, s=2), 6 x 128->128 (t=4),
              128->128 (t=4, s=2), 2 x 128->128 (t=2)                56 -> 7
    conv2     1x1, 128->512, BN, ReLU6
    gdconv    global depthwise 7x7 + BN (linear)                    7 -> 1
    conv3     1x1, 512->128 (with bias), BN -> 128-d embedding (not L2-normalised)

Input: (B, 3, 112, 112) RGB face aligned on the ArcFace 5-point template, scaled as
(x - 127.5) / 127.5 for x in 0..255 (i.e. ``2 * x01 - 1``).

This module also holds the warp from an FFHQ-aligned crop to that input (templates and the
similarity fit are :mod:`streamrestore.faces.align`'s), because both the training identity loss
and the evaluation judges need exactly the same 112-px crop.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamrestore.errors import ModelError
from streamrestore.faces.align import ARCFACE_TEMPLATE_112, similarity_transform, template

EMBEDDING_SIZE = 128
INPUT_SIZE = 112


def ffhq_to_arcface_matrix(resolution: int) -> np.ndarray:
    """(2, 3) pixel matrix taking an FFHQ-aligned ``resolution`` crop to the 112-px ArcFace crop.

    Use with ``cv2.warpAffine(img, M, (112, 112))``.
    """
    return similarity_transform(template(resolution), ARCFACE_TEMPLATE_112)


def ffhq_to_arcface_theta(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(2, 3) ``F.affine_grid`` matrix (``align_corners=False``) for the ArcFace crop.

    In normalised coordinates the warp does not depend on the input resolution, so one matrix
    serves every crop size.
    """
    size_in = 512
    m = np.vstack([ffhq_to_arcface_matrix(size_in), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(m)  # output pixel -> input pixel
    # normalised u -> pixel x: x = (u + 1) * size / 2 - 0.5 (align_corners=False)
    out_from_norm = np.array([[INPUT_SIZE / 2, 0, INPUT_SIZE / 2 - 0.5], [0, INPUT_SIZE / 2, INPUT_SIZE / 2 - 0.5], [0, 0, 1]])
    norm_from_in = np.array([[2 / size_in, 0, 1 / size_in - 1], [0, 2 / size_in, 1 / size_in - 1], [0, 0, 1]])
    theta = norm_from_in @ inv @ out_from_norm
    return torch.tensor(theta[:2], dtype=dtype)


def arcface_prescale_size() -> int:
    """Side to which an FFHQ crop is first resized (with antialiasing) before the ArcFace warp.

    The ArcFace crop samples an FFHQ crop at about 0.29 output pixels per 512-px input pixel;
    resizing first to the size at which the warp is close to 1:1 (150 px) avoids the
    aliasing a bilinear warp would add when shrinking a large crop.
    """
    m = ffhq_to_arcface_matrix(512)
    scale = float(np.hypot(m[0, 0], m[1, 0]))  # output px per 512-input px
    return int(np.ceil(512 * scale))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels)


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 + BN + ReLU, then pointwise 1x1 + BN + ReLU (foamliu ``dw_conv``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)
        self.bn1 = _bn(channels)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = _bn(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.depthwise(x)))
        return self.act(self.bn2(self.pointwise(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck; ``conv`` is a Sequential so the state-dict keys match foamliu."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = in_channels * expansion
        self.use_skip = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, hidden, 1, bias=False), _bn(hidden), nn.ReLU6()),
            nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), _bn(hidden), nn.ReLU6()),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            _bn(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_skip else y


# (expansion t, output channels c, repeats n, first stride s), MobileFaceNet paper table 1
_BOTTLENECKS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


class MobileFaceNet(nn.Module):
    """128-d face embedding; see the module docstring for the layout and the input scaling."""

    def __init__(self, embedding_size: int = EMBEDDING_SIZE):
        super().__init__()
        if embedding_size <= 0:
            raise ValueError(f"embedding_size must be positive, got {embedding_size}")
        self.conv1 = nn.Sequential(nn.Conv2d(3, 64, 3, 2, 1, bias=False), _bn(64), nn.ReLU6())
        self.dw_conv = DepthwiseSeparable(64)
        blocks = []
        channels = 64
        for t, c, n, s in _BOTTLENECKS:
            for i in range(n):
                blocks.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        self.features = nn.Sequential(*blocks)
        self.conv2 = nn.Sequential(nn.Conv2d(channels, 512, 1, bias=False), _bn(512), nn.ReLU6())
        self.gdconv = nn.Module()
        self.gdconv.depthwise = nn.Conv2d(512, 512, 7, groups=512, bias=False)
        self.gdconv.bn = _bn(512)
        self.conv3 = nn.Conv2d(512, embedding_size, 1)
        self.bn = _bn(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, 3, 112, 112) RGB in [-1, 1]; returns (B, 128) raw (unnormalised) embeddings."""
        if x.ndim != 4 or x.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"MobileFaceNet expects (B, 3, 112, 112), got {tuple(x.shape)}")
        x = self.dw_conv(self.conv1(x))
        x = self.conv2(self.features(x))
        x = self.gdconv.bn(self.gdconv.depthwise(x))
        x = self.bn(self.conv3(x))
        return x.flatten(1)


def load_mobilefacenet(path: str | Path, device: torch.device | str = "cpu", trainable: bool = False) -> MobileFaceNet:
    """Build :class:`MobileFaceNet` and load a foamliu-layout state dict from ``path``.

    The network is returned in eval mode (BatchNorm uses its running statistics) and, unless
    ``trainable``, with ``requires_grad`` off: as a loss it passes gradients to its input only.

    Raises:
        ModelError: the file is missing or its keys/shapes are not the foamliu layout.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"MobileFaceNet weights not found at {path}; pass the path to mobilefacenet_foamliu.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip errors: the file is not a torch state dict
        raise ModelError(f"cannot read {path} as a torch state dict ({exc}); pass mobilefacenet_foamliu.pt") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
    net = MobileFaceNet()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path} is not a foamliu MobileFaceNet state dict: {str(exc).splitlines()[0]}") from exc
    net.eval().requires_grad_(trainable)
    return net.to(device)
