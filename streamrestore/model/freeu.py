"""FreeU without FFTs: the skip-feature Fourier filter as small real matrix products.

FreeU (Si et al., 2023) changes the first two up blocks of the UNet: before each ResNet, half of
the backbone channels are multiplied by ``b`` and the skip features are low-pass re-weighted in
frequency space, ``ifft2(mask * fft2(skip))`` with ``mask`` 1 everywhere except ``scale`` on a
``2·threshold`` square around the zero frequency (after ``fftshift``; diffusers uses threshold 1,
scale ``s1``/``s2``). diffusers computes it with ``torch.fft``, which inductor cannot generate
code for and Torch-TensorRT has no converter for, so the compiled core splits around it.

The filter is linear and the mask is ``1 + (scale - 1)·(box_H ⊗ box_W)``: a box along each axis.
With ``P_n = F⁻¹·diag(box_n)·F`` (the 1-D filter, a complex n×n matrix) the real output is

    y = x + (scale - 1)·(Re P_H · x · Re P_Wᵀ − Im P_H · x · Im P_Wᵀ)

four (n×n) matmuls on an 8×8 or 16×16 map at paper scale. The matrices depend only on the map
size, so each up block owns its pair as non-persistent buffers (they follow ``.to()``, are not
in ``state_dict`` and are plain constants to ``torch.export``). They are built from cos/sin of
integer phases in float64, never with ``torch.fft``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from streamrestore.model.config import FreeU

#: half-width of the scaled low-frequency square (diffusers' FreeU uses 1)
FREEU_THRESHOLD = 1


def frequency_box(n: int, threshold: int) -> torch.Tensor:
    """The 1-D box of the FreeU mask along an axis of length ``n``, in *unshifted* frequency order.

    In shifted order (zero frequency at index ``n // 2``) the box covers the Python slice
    ``[n//2 - threshold : n//2 + threshold]``, exactly as the FFT version indexes it (so a
    negative start wraps the same way for tiny ``n``); ``ifftshift`` then moves shifted index
    ``j`` to frequency index ``(j - n//2) mod n``.
    """
    if n < 1:
        raise ValueError(f"axis length must be >= 1, got {n}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    shifted = torch.zeros(n, dtype=torch.float64)
    shifted[n // 2 - threshold : n // 2 + threshold] = 1.0
    return torch.roll(shifted, -(n // 2))


def axis_filter(n: int, threshold: int = FREEU_THRESHOLD) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts (float64, n×n) of ``P = F⁻¹·diag(box)·F`` along one axis.

    ``P[m, p] = (1/n)·Σ_k box[k]·exp(2πi·k·(m − p)/n)``; the phase is reduced modulo ``n`` in
    integers first so large sizes keep full precision.
    """
    box = frequency_box(n, threshold)
    idx = torch.arange(n, dtype=torch.int64)
    diff = idx[:, None] - idx[None, :]  # m - p
    phase = torch.remainder(idx[:, None, None] * diff[None], n).to(torch.float64) * (2 * math.pi / n)  # (k, m, p)
    weights = box[:, None, None] / n
    return (weights * torch.cos(phase)).sum(0), (weights * torch.sin(phase)).sum(0)


def fourier_filter_matmul(x: torch.Tensor, scale: float, rows: tuple[torch.Tensor, torch.Tensor],
                          cols: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """FreeU's skip filter on ``x`` (B, C, H, W) from the per-axis operators of :func:`axis_filter`.

    ``rows`` = (Re P_H, Im P_H), ``cols`` = (Re P_W, Im P_W), in ``x``'s dtype and device.
    """
    rows_re, rows_im = rows
    cols_re, cols_im = cols
    low = rows_re @ x @ cols_re.T - rows_im @ x @ cols_im.T
    return x + (scale - 1.0) * low


class FreeUSkipFilter(nn.Module):
    """FreeU on the input of one up-block ResNet, ``cat([backbone, skip], dim=1)``.

    Scales the first half of the ``backbone_channels`` backbone channels by ``backbone_scale``
    (``b1``/``b2``) and filters the skip channels with ``skip_scale`` (``s1``/``s2``) on a map of
    ``size`` (H, W). The per-axis operators are built once here for that size; another size (a
    UNet run at a resolution it was not built for) builds them on the fly, from the same
    cos/sin formula, so it is still FFT-free, only slower.
    """

    def __init__(self, backbone_channels: int, backbone_scale: float, skip_scale: float, size: tuple[int, int],
                 threshold: int = FREEU_THRESHOLD):
        super().__init__()
        if backbone_channels < 1:
            raise ValueError(f"backbone_channels must be >= 1, got {backbone_channels}")
        h, w = (int(s) for s in size)
        if h < 1 or w < 1:
            raise ValueError(f"size must be two positive lengths, got {size!r}")
        self.backbone_channels = int(backbone_channels)
        self.backbone_scale = float(backbone_scale)
        self.skip_scale = float(skip_scale)
        self.threshold = int(threshold)
        self.size = (h, w)
        rows, cols = axis_filter(h, threshold), axis_filter(w, threshold)
        # float32 like the FFT version's working precision; .to(dtype) of the network casts them with it
        for name, t in (("rows_re", rows[0]), ("rows_im", rows[1]), ("cols_re", cols[0]), ("cols_im", cols[1])):
            self.register_buffer(name, t.to(torch.float32), persistent=False)

    def extra_repr(self) -> str:
        return (f"backbone_channels={self.backbone_channels}, b={self.backbone_scale}, s={self.skip_scale}, "
                f"size={self.size}, threshold={self.threshold}")

    def filter_skip(self, skip: torch.Tensor) -> torch.Tensor:
        h, w = skip.shape[-2:]
        if (h, w) == self.size:
            rows, cols = (self.rows_re, self.rows_im), (self.cols_re, self.cols_im)
        else:
            rows, cols = axis_filter(h, self.threshold), axis_filter(w, self.threshold)
        like = dict(device=skip.device, dtype=skip.dtype)
        return fourier_filter_matmul(skip, self.skip_scale, tuple(t.to(**like) for t in rows),
                                     tuple(t.to(**like) for t in cols))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        c = self.backbone_channels
        half = c // 2
        return torch.cat([hidden[:, :half] * self.backbone_scale, hidden[:, half:c],
                          self.filter_skip(hidden[:, c:])], dim=1)


def _freeu_pre_hook(resnet: nn.Module, args: tuple):
    # A module-level function (not a closure) so deep copies of the UNet (LoRA merging for the
    # compiled backends) carry a hook that finds the copy's own filter.
    return (resnet.freeu(args[0]), *args[1:])


def install_freeu(unet: nn.Module, settings: FreeU, sample_size: int | tuple[int, int]) -> list[FreeUSkipFilter]:
    """FreeU on a diffusers ``UNet2DConditionModel`` as matrix products, for latents of ``sample_size``.

    Replaces ``unet.enable_freeu(s1, s2, b1, b2)`` (same output, see tests): each ResNet of up
    blocks 0 and 1 gets a :class:`FreeUSkipFilter` child named ``freeu`` and a forward pre-hook
    that applies it to the ResNet's input. A pre-hook rather than a rewritten up-block forward
    keeps diffusers' block code (and its state-dict names) untouched; the ResNet input is the
    only place where both the backbone and the skip features are in hand. Returns the filters.
    """
    if any(hasattr(r, "freeu") for block in unet.up_blocks for r in block.resnets):
        raise ValueError("FreeU is already installed on this UNet")
    if any(getattr(block, "s1", None) for block in unet.up_blocks):
        raise ValueError("diffusers' FFT FreeU is enabled on this UNet; call unet.disable_freeu() first")
    h, w = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
    n_down = len(unet.down_blocks)
    # channels entering each up block: the mid block's (= the last down block's) for block 0,
    # else the previous up block's output
    incoming = int(unet.config.block_out_channels[-1])
    filters = []
    for idx, block in enumerate(unet.up_blocks):
        if idx < 2:
            scales = (settings.b1, settings.s1) if idx == 0 else (settings.b2, settings.s2)
            factor = 2 ** (n_down - 1 - idx)  # up block idx works at the resolution of down block n-1-idx
            if h % factor or w % factor:
                raise ValueError(f"latent size {(h, w)} is not divisible by {factor} (UNet depth {n_down})")
            backbone = incoming
            for resnet in block.resnets:
                filt = FreeUSkipFilter(backbone, scales[0], scales[1], (h // factor, w // factor))
                filt.to(next(resnet.parameters()).device)
                resnet.freeu = filt
                resnet.register_forward_pre_hook(_freeu_pre_hook)
                filters.append(filt)
                backbone = resnet.out_channels
        incoming = block.resnets[-1].out_channels
    return filters
