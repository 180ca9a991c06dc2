"""Alignment of a face onto the FFHQ 5-point template (and onto the ArcFace one, for embedders).

The restorer works on square crops in which the eyes, nose and mouth corners sit where they
sit in FFHQ (the layout GFPGAN and CodeFormer also use). A crop is made with a similarity
transform of the picture as shown (rotation, uniform scale, translation; never a reflection or
shear; for a video of non-square pixels the stored x is stretched by the pixel aspect first), so
pasting back is the exact inverse and the face keeps its proportions.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from streamrestore.pixels import RgbPixels, Yuv420Pixels

if TYPE_CHECKING:  # pragma: no cover
    from numpy.typing import ArrayLike

__all__ = [
    "FFHQ_TEMPLATE_512",
    "ARCFACE_TEMPLATE_112",
    "arcface_matrix",
    "template",
    "similarity_transform",
    "alignment_matrix",
    "invert_affine",
    "warp_to_template",
    "crop_face",
]

#: Left eye, right eye, nose tip, left and right mouth corner of the FFHQ-aligned 512x512 face
#: (image left/right, as the detector reports them).
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)
FFHQ_TEMPLATE_512.setflags(write=False)


#: The same 5 landmarks on the 112x112 crop ArcFace-style recognition models take (insightface's
#: ``norm_crop`` layout: the identity judges, the MobileFaceNet identity loss).
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
ARCFACE_TEMPLATE_112.setflags(write=False)


def _check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 8:
        raise ValueError(f"resolution must be an integer >= 8, got {resolution!r}")
    return int(resolution)


def template(resolution: int) -> np.ndarray:
    """The FFHQ template for an ``resolution`` x ``resolution`` crop, as a (5, 2) float array.

    Raises:
        ValueError: ``resolution`` is not an integer >= 8.
    """
    resolution = _check_resolution(resolution)
    return FFHQ_TEMPLATE_512 * (resolution / 512.0)


def _as_points(points, name: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < 2:
        raise ValueError(f"{name} must have shape (N, 2) with N >= 2, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values: {array.tolist()}")
    return array


def similarity_transform(src: ArrayLike, dst: ArrayLike) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991, reflection excluded) mapping ``src`` onto ``dst``.

    Args:
        src: (N, 2) points, N >= 2, finite and not all at one place.
        dst: (N, 2) points they should map to.

    Returns:
        The (2, 3) matrix ``M`` with ``dst ≈ M[:, :2] @ src + M[:, 2]``.

    Raises:
        ValueError: points of the wrong shape, non-finite, or ``src`` all at one place.
    """
    src = _as_points(src, "src")
    dst = _as_points(dst, "dst")
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must have the same shape, got {src.shape} and {dst.shape}")
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_centred = src - src_mean
    dst_centred = dst - dst_mean
    src_variance = float(np.mean(np.sum(src_centred**2, axis=1)))
    if src_variance <= 1e-12:
        raise ValueError(f"src points are all at the same place ({src_mean.tolist()}); no transform fits")
    covariance = dst_centred.T @ src_centred / src.shape[0]
    u, singular, vt = np.linalg.svd(covariance)
    # Force a proper rotation: a reflected (mirrored) face would paste back mirrored.
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = float(np.sum(singular * sign)) / src_variance
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def alignment_matrix(kps: ArrayLike, resolution: int, pixel_aspect: float = 1.0) -> np.ndarray:
    """The (2, 3) frame → crop transform that puts a face's landmarks on the template: a
    similarity of the picture as shown.

    Args:
        kps: the 5 landmarks, (5, 2), in frame pixels (left eye, right eye, nose, left and
            right mouth corner).
        resolution: side of the crop.
        pixel_aspect: a stored pixel's width over its height as shown (a video's sample aspect
            ratio: a 16:9 DVD stores 720 x 480 pixels of 32:27). Default 1: square pixels. Other
            values stretch the crop's x by it, so that the face is cut out as it is shown and not
            squeezed (the transform is then an affine, no longer a similarity).

    Raises:
        ValueError: ``kps`` not (5, 2) or not finite, ``resolution`` not an integer >= 8, or
            ``pixel_aspect`` not a positive number.
    """
    kps = _as_points(kps, "kps")
    if kps.shape != (5, 2):
        raise ValueError(f"kps must have shape (5, 2), got {kps.shape}")
    if not (np.isfinite(pixel_aspect) and pixel_aspect > 0):
        raise ValueError(f"pixel_aspect must be a positive number, got {pixel_aspect!r}")
    if pixel_aspect == 1:
        return similarity_transform(kps, template(resolution))
    shown = kps * np.array([pixel_aspect, 1.0])
    matrix = similarity_transform(shown, template(resolution))
    matrix[:, 0] *= pixel_aspect  # stored x -> shown x, then the similarity
    return matrix


def arcface_matrix(kps: ArrayLike) -> np.ndarray:
    """The (2, 3) similarity from an image with landmarks ``kps`` (5, 2) to the 112-px ArcFace crop
    (``cv2.warpAffine(image, M, (112, 112))``)."""
    return similarity_transform(kps, ARCFACE_TEMPLATE_112)


def invert_affine(matrix: ArrayLike) -> np.ndarray:
    """The inverse of a (2, 3) affine matrix (crop → frame for an alignment matrix).

    Raises:
        ValueError: ``matrix`` is not (2, 3) or not invertible.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must have shape (2, 3), got {matrix.shape}")
    linear = matrix[:, :2]
    determinant = float(np.linalg.det(linear))
    if not np.isfinite(determinant) or abs(determinant) < 1e-12:
        raise ValueError(f"matrix is not invertible (determinant {determinant})")
    inverse_linear = np.linalg.inv(linear)
    return np.hstack([inverse_linear, (-inverse_linear @ matrix[:, 2])[:, None]])


def warp_to_template(image: np.ndarray, matrix: ArrayLike, resolution: int, *, border_value: int = 0
                     ) -> np.ndarray:
    """Cut the aligned (R, R, 3) uint8 crop out of ``image`` with the frame → crop ``matrix``.

    Args:
        image: the (H, W, 3) uint8 frame.
        matrix: the (2, 3) frame → crop affine (:func:`alignment_matrix`).
        resolution: side R of the crop.
        border_value: fills the pixels outside the frame (constant border): a reflected border
            would mirror half a head into the crop for faces at the frame edge, and the restorer
            would then "restore" that mirrored head.

    Raises:
        ValueError: ``image`` is not an HxWx3 uint8 array, ``matrix`` not (2, 3), or
            ``resolution`` not an integer >= 8.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an HxWx3 uint8 array, got shape {image.shape} dtype {image.dtype}")
    return crop_face(RgbPixels(image), matrix, resolution, border_value=border_value)


def crop_face(pixels: Any, matrix: ArrayLike, resolution: int, *, border_value: int = 0) -> np.ndarray:
    """:func:`warp_to_template` for any ``streamrestore.pixels`` frame, reading only the region
    the crop needs. From a 4:2:0 frame, a face larger than the crop has its planes warped
    separately and only the crop converted to RGB. An HDR frame's
    :class:`~streamrestore.hdr.SdrView` cuts the crop from the frame's own planes and maps only
    the crop to SDR (:meth:`~streamrestore.hdr.SdrView.crop_planes`).

    Args:
        pixels: the frame's pixels.
        matrix: as for :func:`warp_to_template`.
        resolution: as for :func:`warp_to_template`.
        border_value: as for :func:`warp_to_template`.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must have shape (2, 3), got {matrix.shape}")
    h, w = pixels.shape[:2]
    r = _check_resolution(resolution)
    inv = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [r, 0, 1], [0, r, 1], [r, r, 1]], np.float64) @ inv.T
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    # Shrinking a large face by more than 2x: warpAffine has no area filter, so the region is
    # blurred first (sigma = (factor - 1) / 2) to keep the crop from aliasing.
    sigma = (1.0 / scale - 1.0) / 2.0 if 0 < scale < 0.5 else 0.0
    # The cubic kernel reads 2 pixels out, the blur 3 sigma more: the region covers both.
    pad = int(np.ceil(3 * sigma)) + 4
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + pad, (w, h))
    if x1 <= x0 or y1 <= y0:
        return np.full((r, r, 3), border_value, np.uint8)
    box = (int(x0), int(y0), int(x1), int(y1))
    own_planes = getattr(pixels, "crop_planes", None)
    planes = own_planes() if own_planes is not None else None
    if planes is not None:
        y, u, v, to_rgb, finish = planes
        return finish(crop_yuv420(y, u, v, to_rgb, matrix, r, box, sigma, border_value))
    if isinstance(pixels, Yuv420Pixels) and scale < 1.0:
        # Shrinking: converting the crop costs less than converting the larger face region
        # (measured 0.77 vs 1.88 ms for a 430 px face to 128 px; equal at scale ~1).
        return crop_yuv420(*pixels.planes, pixels.to_rgb, matrix, r, box, sigma, border_value)
    region = pixels.region(*box)
    if sigma > 0:
        region = cv2.GaussianBlur(region, (0, 0), sigmaX=sigma)
    shifted = matrix.copy()
    shifted[:, 2] += matrix[:, :2] @ np.array(box[:2], np.float64)
    return cv2.warpAffine(
        region,
        shifted,
        (r, r),
        # Cubic: the pipeline resamples twice (frame → crop → frame); bilinear blurs fine detail.
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(border_value,) * 3,
    )


def crop_yuv420(y_plane: np.ndarray, u_plane: np.ndarray, v_plane: np.ndarray, to_rgb: np.ndarray, matrix: np.ndarray,
                r: int, box, sigma: float, border_value: int) -> np.ndarray:
    """The aligned crop from the Y, U and V planes of a 4:2:0 frame: each warped to the crop (U
    and V from their half-resolution grid, whose samples sit at the centres of 2x2 pixel
    blocks), then the small crop converted to RGB with ``to_rgb`` (3x4, 8-bit levels). Cheaper
    than converting the face's region. uint8 planes give uint8 RGB; float32 ones (a deep frame's,
    in 8-bit levels) float32 RGB."""
    x0, y0, x1, y1 = box
    x0, y0 = x0 - x0 % 2, y0 - y0 % 2
    cx0, cy0 = x0 // 2, y0 // 2
    cx1, cy1 = min((x1 + 1) // 2, u_plane.shape[1]), min((y1 + 1) // 2, u_plane.shape[0])
    luma = y_plane[y0:y1, x0:x1]
    chroma = cv2.merge([u_plane[cy0:cy1, cx0:cx1], v_plane[cy0:cy1, cx0:cx1]])
    if sigma > 0:
        # Anti-aliasing before shrinking (as crop_face); chroma is already half size.
        luma = cv2.GaussianBlur(luma, (0, 0), sigmaX=sigma)
        if sigma > 0.5:
            chroma = cv2.GaussianBlur(chroma, (0, 0), sigmaX=sigma / 2)
    linear = matrix[:, :2]
    to_crop_luma = np.hstack([linear, (matrix[:, 2] + linear @ np.array([x0, y0], np.float64))[:, None]])
    # Chroma sample (j, i) of the box lies at frame pixel (2 (j + cx0) + 0.5, 2 (i + cy0) + 0.5).
    origin = np.array([2 * cx0 + 0.5, 2 * cy0 + 0.5])
    to_crop_chroma = np.hstack([2 * linear, (matrix[:, 2] + linear @ origin)[:, None]])
    from_rgb = np.linalg.inv(np.vstack([to_rgb, [0, 0, 0, 1]]))[:3]
    border = from_rgb @ np.array([border_value, border_value, border_value, 1.0])
    ys = cv2.warpAffine(luma, to_crop_luma, (r, r), flags=cv2.INTER_CUBIC,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=float(border[0]))
    uvs = cv2.warpAffine(chroma, to_crop_chroma, (r, r), flags=cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(float(border[1]), float(border[2])))
    ycc = cv2.merge([ys, uvs])
    # a deep frame's samples: converted at full precision (cv2.transform would round to integers)
    return cv2.transform(ycc.astype(np.float32) if ycc.dtype == np.uint16 else ycc, to_rgb)
