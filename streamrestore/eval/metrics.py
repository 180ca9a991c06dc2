"""Image-quality and geometry metrics for evaluation.

Conventions (the common ones in face-restoration papers):

- Images are ``(H, W, 3)`` RGB arrays, either uint8 (0..255) or float (0..1); both are
  converted to float64 on the 0..255 scale, so the two forms give the same numbers.
- PSNR and SSIM are computed on all three **RGB channels** (not on the Y channel), without
  cropping a border; SSIM is averaged over channels.
- SSIM is Wang et al. (2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, data
  range 255, statistics over the "valid" windows only (a 5-px border does not get its own
  window). This matches ``pytorch_msssim.ssim(..., data_range=255)``.
- PSNR of identical images is infinite; it is capped at ``max_db`` (100 dB by default) so that
  averages and JSON stay finite.
- Landmark distance (LMD) is the mean Euclidean distance between the 5 detected landmarks
  (eyes, nose, mouth corners) of two crops, in pixels of a 512-px crop (see
  :class:`streamrestore.eval.judges.LandmarkDetector`); NaN when either face is not found.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from streamrestore.eval.judges import LandmarkDetector

#: PSNR reported for identical images (the true value is +inf).
PSNR_CAP_DB = 100.0

_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5


def _as_255(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be an (H, W, 3) RGB image, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float64)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 (0..255) or float (0..1), got {image.dtype}")
    return image.astype(np.float64) * 255.0


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = _as_255(a, "first image")
    b = _as_255(b, "second image")
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, max_db: float = PSNR_CAP_DB) -> float:
    """Peak signal-to-noise ratio in dB over RGB (peak 255), capped at ``max_db``."""
    if max_db <= 0:
        raise ValueError(f"max_db must be positive, got {max_db}")
    a, b = _pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float(max_db)
    return float(min(max_db, 10.0 * np.log10(255.0**2 / mse)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004) on RGB, mean over channels and valid windows."""
    a, b = _pair(a, b)
    if min(a.shape[:2]) < _SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW}, got {a.shape[:2]}")
    return float(np.mean([_ssim_plane(a[..., c], b[..., c]) for c in range(3)]))


def _ssim_plane(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM over the valid windows of two float64 planes on the 0..255 scale."""
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    g = cv2.getGaussianKernel(_SSIM_WINDOW, _SSIM_SIGMA)
    window = g @ g.T
    half = _SSIM_WINDOW // 2

    def filt(z: np.ndarray) -> np.ndarray:
        # filter the whole image, then keep only windows that lie inside it ("valid")
        return cv2.filter2D(z, -1, window, borderType=cv2.BORDER_REFLECT)[half:-half, half:-half]

    mx, my = filt(x), filt(y)
    vx = filt(x * x) - mx * mx
    vy = filt(y * y) - my * my
    cov = filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def ssim_luma(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (same window and constants as :func:`ssim`) of the BT.601 luma of two RGB images
    (OpenCV's RGB -> grey, kept in float): the usual single-channel score of video restoration."""
    a, b = _pair(a, b)
    if min(a.shape[:2]) < _SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW}, got {a.shape[:2]}")
    weights = np.array([0.299, 0.587, 0.114])
    return _ssim_plane(a @ weights, b @ weights)


def landmark_distance(kps_a: np.ndarray, kps_b: np.ndarray) -> float:
    """Mean Euclidean distance between corresponding landmarks ``(L, 2)``; NaN if any is NaN."""
    kps_a = np.asarray(kps_a, dtype=np.float64)
    kps_b = np.asarray(kps_b, dtype=np.float64)
    if kps_a.shape != kps_b.shape or kps_a.ndim != 2 or kps_a.shape[1] != 2:
        raise ValueError(f"need two (L, 2) landmark arrays of equal shape, got {kps_a.shape} and {kps_b.shape}")
    return float(np.linalg.norm(kps_a - kps_b, axis=1).mean())


def lmd(detector: "LandmarkDetector", restored: np.ndarray, ground_truth: np.ndarray) -> float:
    """Landmark distance between a restored crop and its ground truth, in 512-crop pixels.

    ``restored`` and ``ground_truth`` are FFHQ-aligned crops (uint8 RGB, any size; both are
    resized to the detector's working size). NaN when the detector misses either face.
    """
    return landmark_distance(detector.landmarks(_to_uint8(restored)), detector.landmarks(_to_uint8(ground_truth)))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(_as_255(image, "image")), 0, 255).astype(np.uint8)
