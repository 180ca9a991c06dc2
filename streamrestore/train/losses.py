"""Training losses: pixel, (MS-)SSIM (both from :mod:`streamrestore.model.losses`), identity,
and the landmark attention loss.

All image losses take float tensors ``(B, 3, R, R)`` in [0, 1], RGB, FFHQ-aligned (the
restorer's crop layout). They compute in float32 even under autocast, because SSIM statistics
and embedding cosines lose too much in fp16.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from streamrestore.faces.align import template
from streamrestore.faces.mobilefacenet import (
    INPUT_SIZE,
    arcface_prescale_size,
    ffhq_to_arcface_theta,
    load_mobilefacenet,
)
from streamrestore.model.losses import check_pair, pixel_loss, ssim_loss  # owned there: adaptation uses them too


def arcface_crop_tensor(images: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable 112x112 ArcFace crop of FFHQ-aligned ``(B, 3, R, R)`` images (same range).

    A fixed similarity warp (``F.affine_grid`` + bilinear ``grid_sample``) from the FFHQ
    template to the ArcFace template; crops larger than ~150 px are first shrunk with
    antialiasing so that the warp does not alias.
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square (B, 3, R, R) crops, got {tuple(images.shape)}")
    pre = arcface_prescale_size()
    if images.shape[-1] > pre:
        images = F.interpolate(images, size=(pre, pre), mode="bilinear", align_corners=False, antialias=True)
    if theta is None:
        theta = ffhq_to_arcface_theta()
    theta = theta.to(device=images.device, dtype=images.dtype).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, [images.shape[0], 3, INPUT_SIZE, INPUT_SIZE], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class IdentityLoss(nn.Module):
    """``1 - cos(MobileFaceNet(restored), MobileFaceNet(target))``, averaged over the batch.

    The embedding network is frozen and stays in eval mode even when a parent module is
    switched to training (its BatchNorm must keep the running statistics); gradients flow to
    ``restored`` only. The target's embedding is computed without a graph.

    Args:
        weights: path to ``mobilefacenet_foamliu.pt``.
    """

    def __init__(self, weights: str | Path):
        super().__init__()
        self.net = load_mobilefacenet(weights)
        self.register_buffer("theta", ffhq_to_arcface_theta(), persistent=False)

    def train(self, mode: bool = True) -> "IdentityLoss":
        super().train(mode)
        self.net.eval()
        return self

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 128) L2-normalised embeddings of FFHQ-aligned crops in [0, 1]."""
        crops = arcface_crop_tensor(images.float(), self.theta)
        return F.normalize(self.net(crops * 2.0 - 1.0), dim=1)

    def forward(self, restored: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(restored, target)
        with torch.autocast(device_type=restored.device.type, enabled=False):
            with torch.no_grad():
                t = self.embed(target)
            r = self.embed(restored)
            return (1.0 - (r * t).sum(dim=1)).mean()


def ffhq_landmarks(batch: int = 1, device: torch.device | str | None = None) -> torch.Tensor:
    """(batch, 5, 2) FFHQ-template landmarks of aligned crops in [0, 1] image coordinates (x, y).

    Order: left eye, right eye, nose tip, left and right mouth corner. Coordinates are
    resolution-free (template pixels / R, the layout of ``streamrestore.faces.align``), ready
    for :func:`landmark_attention_loss`.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    pts = template(512) / 512.0
    return torch.tensor(pts, dtype=torch.float32, device=device).expand(batch, 5, 2).clone()


def landmark_attention_targets(ref_landmarks: torch.Tensor, grid: int, sigma: float | None = None) -> torch.Tensor:
    """(B, L, grid*grid) Gaussians over a reference's token grid centred on its landmarks.

    ``ref_landmarks`` (B, L, 2) are (x, y) in [0, 1]; token (i, j) has its centre at
    ``((j + 0.5) / grid, (i + 0.5) / grid)``; ``sigma`` is in tokens, ``grid / 32`` by default
    (the paper's choice). Peak value 1 (not normalised: the loss min-max normalises).
    """
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    sigma = grid / 32.0 if sigma is None else float(sigma)
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    centres = torch.arange(grid, device=ref_landmarks.device, dtype=torch.float32) + 0.5
    lx = ref_landmarks[..., 0:1].float() * grid  # (B, L, 1) in token units
    ly = ref_landmarks[..., 1:2].float() * grid
    gx = torch.exp(-((centres - lx) ** 2) / (2 * sigma**2))  # (B, L, grid) along x
    gy = torch.exp(-((centres - ly) ** 2) / (2 * sigma**2))
    return (gy[..., :, None] * gx[..., None, :]).flatten(-2)


def _min_max(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    lo = x.amin(dim=-1, keepdim=True)
    hi = x.amax(dim=-1, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(eps)


def landmark_attention_loss(
    attn_probs: torch.Tensor,
    input_landmarks: torch.Tensor,
    ref_landmarks: torch.Tensor,
    grid: int,
    query_grid: int | None = None,
    valid: torch.Tensor | None = None,
    sigma: float | None = None,
    kind: str = "minmax",
) -> torch.Tensor:
    """The landmark attention loss of InstantRestore, for one shared layer and one reference.

    For each landmark of the input, the attention row of the query token under it (nearest
    token) is compared with a 2-D Gaussian over the reference's token grid centred on the same
    landmark in the reference (sigma = grid / 32 tokens). Both are min-max normalised per row,
    and the loss is their mean squared difference over the landmark rows.

    Args:
        attn_probs: softmax attention from the input's query tokens to **one reference's key
            tokens only**: (B, Nq, grid*grid) or (B, heads, Nq, grid*grid); heads are averaged.
            If the layer attends to [own tokens, reference tokens] jointly, slice out the
            reference's columns first; diffusers-style (B*heads, Nq, Nk) must be reshaped.
            Query tokens are a row-major ``query_grid`` x ``query_grid`` grid over the input.
        input_landmarks: (B, L, 2) landmarks (x, y) in [0, 1] of the input (query) image.
        ref_landmarks: (B, L, 2) the same landmarks in the reference.
        grid: side of the reference's token grid.
        query_grid: side of the query token grid; default ``sqrt(Nq)``.
        valid: optional (B, L) bool mask of landmarks to use (e.g. detector misses). Landmarks
            outside [0, 1] in either image are skipped as well.
        sigma: Gaussian width in tokens; default ``grid / 32``.
        kind: ``"minmax"`` (the paper: min-max normalised maps, MSE) or ``"kl"``: both rows
            normalised to sum 1 over the reference's tokens, KL(target || attention). Min-max
            normalisation is blind to how sharp the attention is (a near-uniform row with a
            faint bump at the right token scores almost 0), so a from-scratch model can satisfy
            it while its reference attention still averages everything; KL needs the
            attention mass itself on the landmark.

    Returns:
        A scalar; 0 (with a graph) when no landmark row is valid.
    """
    if kind not in ("minmax", "kl"):
        raise ValueError(f"kind must be 'minmax' or 'kl', got {kind!r}")
    if attn_probs.ndim == 4:
        attn_probs = attn_probs.mean(dim=1)
    if attn_probs.ndim != 3:
        raise ValueError(f"attn_probs must be (B, Nq, Nk) or (B, heads, Nq, Nk), got {tuple(attn_probs.shape)}")
    b, nq, nk = attn_probs.shape
    if nk != grid * grid:
        raise ValueError(f"attn_probs has {nk} key tokens but grid={grid} means {grid * grid}: pass one reference's columns")
    if query_grid is None:
        query_grid = int(round(nq**0.5))
    if query_grid * query_grid != nq:
        raise ValueError(f"attn_probs has {nq} query tokens, not a square grid; pass query_grid")
    if input_landmarks.shape != ref_landmarks.shape or input_landmarks.ndim != 3 or input_landmarks.shape[0] != b or input_landmarks.shape[2] != 2:
        raise ValueError(
            f"landmarks must both be (B={b}, L, 2), got {tuple(input_landmarks.shape)} and {tuple(ref_landmarks.shape)}"
        )
    inside = ((input_landmarks >= 0) & (input_landmarks <= 1)).all(-1) & ((ref_landmarks >= 0) & (ref_landmarks <= 1)).all(-1)
    if valid is not None:
        if valid.shape != inside.shape:
            raise ValueError(f"valid must be (B, L) = {tuple(inside.shape)}, got {tuple(valid.shape)}")
        inside = inside & valid.to(inside.device, torch.bool)

    col = (input_landmarks[..., 0] * query_grid).floor().long().clamp(0, query_grid - 1)
    row = (input_landmarks[..., 1] * query_grid).floor().long().clamp(0, query_grid - 1)
    q_index = (row * query_grid + col).to(attn_probs.device)  # (B, L)
    rows = attn_probs.gather(1, q_index[..., None].expand(b, q_index.shape[1], nk)).float()  # (B, L, Nk)
    target = landmark_attention_targets(ref_landmarks.to(attn_probs.device), grid, sigma)
    if kind == "kl":
        p = target / target.sum(dim=-1, keepdim=True)
        q = rows / rows.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        per_row = (p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(dim=-1)
    else:
        per_row = ((_min_max(rows) - _min_max(target)) ** 2).mean(dim=-1)  # (B, L)
    mask = inside.to(per_row.device, per_row.dtype)
    if mask.sum() == 0:
        return attn_probs.sum() * 0.0
    return (per_row * mask).sum() / mask.sum()


__all__ = [
    "pixel_loss",
    "ssim_loss",
    "arcface_crop_tensor",
    "IdentityLoss",
    "ffhq_landmarks",
    "landmark_attention_targets",
    "landmark_attention_loss",
]
