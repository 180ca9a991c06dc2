"""Image losses of restoration: pixel error and (MS-)SSIM.

They live with the model because two trainers use them: the training loop
(:mod:`streamrestore.train`, which adds the identity and landmark losses) and the per-identity
adaptation (:mod:`streamrestore.model.adapt`). Both take float tensors ``(B, 3, R, R)`` in
[0, 1] and compute in float32 even under autocast (SSIM statistics lose too much in fp16).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["check_pair", "pixel_loss", "ssim_loss"]


def check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    """Raises ValueError unless ``pred`` and ``target`` are two (B, 3, H, W) tensors of one shape."""
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"expected two (B, 3, H, W) tensors of equal shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


def pixel_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean absolute (``"l1"``) or squared (``"l2"``) error."""
    check_pair(pred, target)
    if kind == "l1":
        return F.l1_loss(pred.float(), target.float())
    if kind == "l2":
        return F.mse_loss(pred.float(), target.float())
    raise ValueError(f"kind must be 'l1' or 'l2', got {kind!r}")


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, multiscale: bool = False) -> torch.Tensor:
    """``1 - SSIM`` (or ``1 - MS-SSIM``) with pytorch_msssim, data range 1.

    MS-SSIM uses 5 scales and needs a side > 16 * (window - 1); for crops too small for the
    standard 11-px window (e.g. 128 px) the largest odd window that fits is used, and below
    33 px plain SSIM is used instead.
    """
    from pytorch_msssim import ms_ssim, ssim  # noqa: PLC0415  (train-only dependency)

    check_pair(pred, target)
    pred, target = pred.float(), target.float()
    if not multiscale:
        return 1.0 - ssim(pred, target, data_range=1.0, size_average=True)
    side = min(pred.shape[-2:])
    win = 11
    while win >= 3 and side <= (win - 1) * 16:
        win -= 2
    if win < 3:
        return 1.0 - ssim(pred, target, data_range=1.0, size_average=True)
    return 1.0 - ms_ssim(pred, target, data_range=1.0, size_average=True, win_size=win)
