"""Seeded, reproducible synthetic degradations for training and evaluation pairs.

A :class:`DegradationPreset` describes ranges; :func:`sample_degradation` draws one concrete
:class:`Degradation` from them with a seed, and :func:`apply_degradation` applies it. Keeping the
two apart lets a caller log exactly what was done, or apply one draw to every frame of a clip.
:func:`degrade` does both in one call: the same ``(image, preset, seed)`` always gives the same
bytes, different seeds give different degradations.

Order of operations (the classical blind face-restoration model, as in the InstantRestore
paper): motion blur -> anisotropic Gaussian blur -> downsample -> Gaussian noise -> JPEG or
H.264 -> resize back to the input size.

Sizes: blur widths and kernel sizes of a preset are given for ``reference_size`` (512, the
paper's crops) and scaled with the image, so a 128-px crop gets the same *relative* blur as the
paper's 512-px crops. Downsampling factors, noise levels and codec qualities are not scaled.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from fractions import Fraction

import cv2
import numpy as np

logger = logging.getLogger(__name__)


def _check_range(name: str, value: tuple | None, low: float, high: float) -> None:
    if value is None:
        return
    if len(value) != 2 or not (low <= value[0] <= value[1] <= high):
        raise ValueError(f"{name} must be (min, max) with {low} <= min <= max <= {high}, got {value}")


@dataclass(frozen=True)
class DegradationPreset:
    """Ranges from which each degradation is drawn uniformly; ``None`` turns a step off.

    Defaults are the paper's severe setting.
    """

    name: str = "severe"
    #: sigma_x and sigma_y (drawn independently) of the anisotropic Gaussian blur, px at ``reference_size``.
    blur_sigma: tuple[float, float] | None = (0.1, 12.0)
    #: side of the Gaussian blur kernel at ``reference_size`` (odd): 41 as in the paper.
    blur_kernel_size: int = 41
    #: length in px (at ``reference_size``) of a straight motion-blur streak at a random angle.
    motion_blur_length: tuple[float, float] | None = None
    #: integer downsampling factor, inclusive range: x U{1..12} in the paper.
    downsample: tuple[int, int] | None = (1, 12)
    #: std of additive Gaussian noise on the 0..255 scale (applied at the low resolution).
    noise_sigma: tuple[float, float] | None = (10.0, 20.0)
    #: JPEG quality, inclusive integer range: U{10..19} in the paper.
    jpeg_quality: tuple[int, int] | None = (10, 19)
    #: libx264 constant rate factor, inclusive integer range (higher = lower bitrate); the frame
    #: is coded as one intra frame in 4:2:0, like a keyframe of a low-bitrate stream.
    h264_crf: tuple[int, int] | None = None
    #: image side at which the blur parameters above are meant; None = use them as pixels.
    reference_size: int | None = 512
    #: non-integer downscale factor with area averaging and a bicubic upscale back, as a video
    #: player shows a low-resolution upload (used instead of ``downsample``, not with it).
    scale: tuple[float, float] | None = None
    #: libx264 crf of a second coding at full size after the upscale (a re-encoded upload).
    final_h264_crf: tuple[int, int] | None = None
    #: one blur width for both axes (a defocused or resized frame) instead of two independent ones.
    isotropic_blur: bool = False
    #: crop pixels per frame pixel of the face the crop shows, drawn log-uniformly from this range: the
    #: blur widths and ``scale`` are then *frame* pixels, brought to the crop by it (None: they are crop
    #: pixels). A face larger in the frame than its crop (below 1) has its damage shrunk with it: the
    #: frame's shrink can come out under 1 at the crop, which is then coded enlarged, as the frame was.
    face_scale: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        _check_range("blur_sigma", self.blur_sigma, 1e-3, 100.0)
        _check_range("motion_blur_length", self.motion_blur_length, 0.0, 200.0)
        _check_range("downsample", self.downsample, 1, 64)
        _check_range("noise_sigma", self.noise_sigma, 0.0, 255.0)
        _check_range("jpeg_quality", self.jpeg_quality, 1, 100)
        _check_range("h264_crf", self.h264_crf, 0, 51)
        _check_range("scale", self.scale, 1.0, 64.0)
        _check_range("final_h264_crf", self.final_h264_crf, 0, 51)
        _check_range("face_scale", self.face_scale, 1e-3, 64.0)
        if self.face_scale is not None and (self.downsample is not None or self.reference_size is not None):
            raise ValueError("face_scale goes with scale and pixel widths: set downsample and reference_size to None")
        if self.scale is not None and self.downsample is not None:
            raise ValueError("a preset shrinks by downsample or by scale, not both: set one of them to None")
        if self.blur_kernel_size < 3 or self.blur_kernel_size % 2 == 0:
            raise ValueError(f"blur_kernel_size must be odd and >= 3, got {self.blur_kernel_size}")
        if self.reference_size is not None and self.reference_size <= 0:
            raise ValueError(f"reference_size must be positive or None, got {self.reference_size}")
        if self.jpeg_quality is not None and self.h264_crf is not None:
            raise ValueError("a preset compresses with JPEG or H.264, not both: set one of jpeg_quality, h264_crf to None")


#: The paper's severe range.
SEVERE = DegradationPreset()
#: About half the paper's range: recognisable faces with clear blur and artefacts.
MODERATE = DegradationPreset(
    name="moderate", blur_sigma=(0.1, 6.0), downsample=(1, 6), noise_sigma=(0.0, 10.0), jpeg_quality=(30, 70)
)
#: Light damage, e.g. a slightly soft, recompressed photo.
MILD = DegradationPreset(name="mild", blur_sigma=(0.1, 3.0), downsample=(1, 3), noise_sigma=(0.0, 5.0), jpeg_quality=(60, 95))
#: A face in a low-bitrate video: camera/subject motion, a small face upscaled, H.264 blocking.
VIDEO = DegradationPreset(
    name="video",
    blur_sigma=(0.1, 3.0),
    motion_blur_length=(0.0, 25.0),
    downsample=(1, 4),
    noise_sigma=(0.0, 6.0),
    jpeg_quality=None,
    h264_crf=(30, 45),
)

#: No damage at all: the sample's input is its clean target (teaches the restorer to leave good
#: faces alone).
CLEAN = DegradationPreset(name="clean", blur_sigma=None, downsample=None, noise_sigma=None, jpeg_quality=None)
#: A small face in a low-bitrate video, as seen in a 128 px crop of a clip degraded the way
#: ``degrade_video``-style benchmarks do it (blur ~1.2 px, 2-4x smaller, H.264 at crf ~32, scaled
#: back up). Widths are crop pixels (no ``reference_size`` scaling).
VIDEO_SMALL = DegradationPreset(
    name="video_small",
    blur_sigma=(0.3, 2.0),
    blur_kernel_size=11,
    downsample=(2, 4),
    noise_sigma=(0.0, 3.0),
    jpeg_quality=None,
    h264_crf=(22, 38),
    reference_size=None,
)

#: A face in a low-resolution, low-bitrate upload as a player shows it: the chain of the shared
#: ``tools/degrade_video.py`` (Gaussian blur, area downscale, H.264, bicubic upscale, H.264 again)
#: at crop scale. Its defaults (blur 1.2 px, x4, crf 32) on 256 px talking-head clips, whose 128 px
#: face crops cover ~245 frame pixels (crop scale ~0.52), are blur ~0.6 and x2.1 here; the ranges
#: reach faces twice as large or small in the frame.
VIDEO_UPLOAD = DegradationPreset(
    name="video_upload",
    blur_sigma=(0.3, 1.2),
    blur_kernel_size=9,
    isotropic_blur=True,
    downsample=None,
    scale=(1.5, 3.5),
    noise_sigma=None,
    jpeg_quality=None,
    h264_crf=(26, 38),
    final_h264_crf=(14, 20),
    reference_size=None,
)

#: ``VIDEO_UPLOAD``'s chain (blur, area shrink, H.264, bicubic upscale, H.264 again) drawn in the frame's
#: pixels around ``tools/degrade_video.py``'s defaults (blur 1.2 px, x4, crf 32) for a face of any size
#: in the frame: crops that cover 1 to ~7 frame pixels per crop pixel (a 720p or 1080p close-up's 128-px
#: crop covers 4-6). ``VIDEO_UPLOAD``'s crop-pixel ranges are what the same chain does to a small face
#: (~2 frame pixels per crop pixel); on a large face it leaves compression at the crop's own scale and
#: little blur or shrink, a damage those ranges never draw. Used by ``--adapt`` (``streamrestore.model.adapt``).
VIDEO_UPLOAD_ANY_SIZE = replace(
    VIDEO_UPLOAD, name="video_upload_any_size", blur_sigma=(0.6, 1.8), blur_kernel_size=11, scale=(2.5, 5.5),
    h264_crf=(28, 36), face_scale=(0.15, 1.0),
)

#: The paper's severe range as it looks after shrinking a 512 px crop to 128 px (what lite trains
#: on; ``configs/lite.toml`` spells the same table out).
SEVERE_AT_128 = DegradationPreset(
    name="severe_at_128", blur_sigma=(0.1, 12.0), blur_kernel_size=41, downsample=(1, 3), noise_sigma=(2.0, 6.0),
    jpeg_quality=(25, 60), reference_size=512,
)

PRESETS: dict[str, DegradationPreset] = {
    p.name: p for p in (SEVERE, MODERATE, MILD, VIDEO, CLEAN, VIDEO_SMALL, SEVERE_AT_128, VIDEO_UPLOAD,
                        VIDEO_UPLOAD_ANY_SIZE)
}


def get_preset(preset: str | DegradationPreset) -> DegradationPreset:
    """A preset by name (``severe``, ``moderate``, ``mild``, ``video``) or the preset itself."""
    if isinstance(preset, DegradationPreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown degradation preset {preset!r}; choose one of {sorted(PRESETS)}") from None


@dataclass(frozen=True)
class DegradationMix:
    """Several presets, one drawn per sample with probability proportional to its weight.

    A training mix of severe, video-like, mild and ``clean`` samples teaches a restorer how much
    to change a face, not only how to repair a badly damaged one.
    """

    presets: tuple[DegradationPreset, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.presets or len(self.presets) != len(self.weights):
            raise ValueError(f"a mix needs one weight per preset, got {len(self.presets)} presets "
                             f"and {len(self.weights)} weights")
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError(f"mix weights must be >= 0 with a positive sum, got {self.weights}")

    @property
    def name(self) -> str:
        return "+".join(f"{p.name}:{w:g}" for p, w in zip(self.presets, self.weights))

    def choose(self, rng: np.random.Generator) -> DegradationPreset:
        """One preset, drawn with ``rng``."""
        p = np.asarray(self.weights, np.float64)
        return self.presets[int(rng.choice(len(self.presets), p=p / p.sum()))]


@dataclass(frozen=True)
class Degradation:
    """One concrete draw from a preset, in pixels of the image it was drawn for."""

    size: tuple[int, int]  # (height, width) of the image the draw is meant for
    blur_sigma: tuple[float, float] | None = None  # (sigma_x, sigma_y) before rotation, px
    blur_angle: float = 0.0  # radians
    blur_kernel_size: int = 41
    motion_length: float = 0.0  # px; 0 = no motion blur
    motion_angle: float = 0.0  # radians
    downsample: int = 1
    noise_sigma: float = 0.0
    noise_seed: int = 0
    jpeg_quality: int | None = None
    h264_crf: int | None = None
    scale: float = 1.0  # area downscale + bicubic upscale when > 1 (``downsample`` is then 1); bicubic
    # enlargement + area shrink back when < 1 (a face larger in the frame than its crop)
    final_h264_crf: int | None = None


def sample_degradation(preset: str | DegradationPreset, seed: int, size: tuple[int, int]) -> Degradation:
    """Draw one :class:`Degradation` from ``preset`` for an image of ``size`` = (H, W)."""
    preset = get_preset(preset)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive (H, W), got {size}")
    rng = np.random.default_rng(int(seed))
    scale = 1.0 if preset.reference_size is None else max(h, w) / preset.reference_size
    # every field is drawn whether used or not, so that switching one step off in a preset does
    # not change the draws of the others
    sx, sy = rng.uniform(*(preset.blur_sigma or (1.0, 1.0)), size=2)
    blur_angle = rng.uniform(0.0, np.pi)
    motion = rng.uniform(*(preset.motion_blur_length or (0.0, 0.0)))
    motion_angle = rng.uniform(0.0, np.pi)
    factor = int(rng.integers(preset.downsample[0], preset.downsample[1] + 1)) if preset.downsample else 1
    noise = rng.uniform(*(preset.noise_sigma or (0.0, 0.0)))
    noise_seed = int(rng.integers(0, 2**31 - 1))
    quality = int(rng.integers(preset.jpeg_quality[0], preset.jpeg_quality[1] + 1)) if preset.jpeg_quality else None
    crf = int(rng.integers(preset.h264_crf[0], preset.h264_crf[1] + 1)) if preset.h264_crf else None
    # drawn after the fields above, so that presets without them keep their draws
    resize = float(rng.uniform(*preset.scale)) if preset.scale else 1.0
    final_crf = int(rng.integers(preset.final_h264_crf[0], preset.final_h264_crf[1] + 1)) if preset.final_h264_crf else None
    # drawn last, so that presets without it keep their draws
    face = float(np.exp(rng.uniform(*np.log(preset.face_scale)))) if preset.face_scale else 1.0
    if preset.isotropic_blur:
        sy = sx
    scale *= face
    resize *= face
    kernel = max(3, int(round(preset.blur_kernel_size * scale)) | 1)
    return Degradation(
        size=(h, w),
        blur_sigma=(float(sx * scale), float(sy * scale)) if preset.blur_sigma else None,
        blur_angle=float(blur_angle),
        blur_kernel_size=kernel,
        motion_length=float(motion * scale),
        motion_angle=float(motion_angle),
        downsample=factor,
        noise_sigma=float(noise),
        noise_seed=noise_seed,
        jpeg_quality=quality,
        h264_crf=crf,
        scale=resize,
        final_h264_crf=final_crf,
    )


def anisotropic_gaussian_kernel(size: int, sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
    """(size, size) normalised Gaussian with axis stds ``sigma_x``, ``sigma_y`` rotated by ``angle``."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and positive, got {size}")
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"sigmas must be positive, got {sigma_x}, {sigma_y}")
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    r = np.arange(size) - size // 2
    xx, yy = np.meshgrid(r, r)
    pts = np.stack([xx, yy], -1).astype(np.float64)
    k = np.exp(-0.5 * np.einsum("...i,ij,...j->...", pts, np.linalg.inv(cov), pts))
    return (k / k.sum()).astype(np.float32)


def motion_blur_kernel(length: float, angle: float) -> np.ndarray:
    """Normalised kernel of a straight streak of ``length`` px at ``angle`` (sub-pixel accurate)."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    size = int(np.ceil(length)) // 2 * 2 + 3
    k = np.zeros((size, size), np.float64)
    centre = size // 2
    t = np.linspace(-length / 2, length / 2, max(2, int(np.ceil(length * 4))))
    xs, ys = centre + t * np.cos(angle), centre + t * np.sin(angle)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    # bilinear splat of points along the streak
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(k, (y0 + dy, x0 + dx), wgt)
    return (k / k.sum()).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _has_libx264() -> bool:
    import av  # noqa: PLC0415

    ok = "libx264" in av.codecs_available
    if not ok:
        logger.warning("PyAV has no libx264 encoder: H.264 degradations fall back to JPEG blocking")
    return ok


def h264_roundtrip(image: np.ndarray, crf: int) -> np.ndarray:
    """Code ``image`` (uint8 RGB) as one libx264 intra frame (4:2:0) at ``crf`` and decode it.

    Single-threaded, so the result is bit-identical across runs. Odd sides are padded by edge
    replication (4:2:0 needs even sizes) and cropped back.
    """
    import av  # noqa: PLC0415

    h, w = image.shape[:2]
    ph, pw = max(16, h + h % 2), max(16, w + w % 2)
    padded = np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge") if (ph, pw) != (h, w) else image
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = pw, ph, "yuv420p"
    enc.time_base = Fraction(1, 25)
    enc.options = {"crf": str(int(crf)), "preset": "veryfast", "tune": "zerolatency", "threads": "1"}
    packets = list(enc.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format="rgb24")))
    packets += list(enc.encode(None))
    dec = av.CodecContext.create("h264", "r")
    frames = [f for p in packets for f in dec.decode(p)] + list(dec.decode(None))
    if not frames:
        raise RuntimeError("libx264 round trip produced no frame")
    return frames[0].to_ndarray(format="rgb24")[:h, :w]


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def apply_degradation(image: np.ndarray, d: Degradation) -> np.ndarray:
    """Apply one drawn :class:`Degradation` to ``image`` ((H, W, 3) uint8 RGB); returns uint8 RGB."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    x = image.astype(np.float32)
    if d.motion_length > 0.5:
        x = cv2.filter2D(x, -1, motion_blur_kernel(d.motion_length, d.motion_angle), borderType=cv2.BORDER_REFLECT)
    if d.blur_sigma is not None:
        k = anisotropic_gaussian_kernel(d.blur_kernel_size, d.blur_sigma[0], d.blur_sigma[1], d.blur_angle)
        x = cv2.filter2D(x, -1, k, borderType=cv2.BORDER_REFLECT)
    if d.downsample > 1:
        x = cv2.resize(x, (max(1, round(w / d.downsample)), max(1, round(h / d.downsample))), interpolation=cv2.INTER_LINEAR)
    if d.scale != 1:
        x = cv2.resize(x, (max(1, round(w / d.scale)), max(1, round(h / d.scale))),
                       interpolation=cv2.INTER_AREA if d.scale > 1 else cv2.INTER_CUBIC)
    if d.noise_sigma > 0:
        x = x + np.random.default_rng(d.noise_seed).normal(0.0, d.noise_sigma, x.shape).astype(np.float32)
    low = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if d.jpeg_quality is not None:
        low = _jpeg(low, d.jpeg_quality)
    if d.h264_crf is not None:
        # without libx264, JPEG at a quality of similar damage stands in (8x8 DCT blocking)
        low = h264_roundtrip(low, d.h264_crf) if _has_libx264() else _jpeg(low, max(5, 100 - 2 * d.h264_crf))
    if low.shape[:2] != (h, w):
        back = cv2.INTER_CUBIC if d.scale > 1 else cv2.INTER_AREA if d.scale < 1 else cv2.INTER_LINEAR
        low = cv2.resize(low, (w, h), interpolation=back)
    if d.final_h264_crf is not None:
        low = h264_roundtrip(low, d.final_h264_crf) if _has_libx264() else _jpeg(low, max(5, 100 - 2 * d.final_h264_crf))
    return np.ascontiguousarray(low)


def degrade(image: np.ndarray, preset: str | DegradationPreset = "severe", seed: int = 0) -> np.ndarray:
    """Degrade ``image`` ((H, W, 3) uint8 RGB) with a draw from ``preset`` fixed by ``seed``.

    Same arguments -> identical output (bit for bit); returns uint8 RGB of the input's size.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got shape {image.shape}")
    return apply_degradation(image, sample_degradation(preset, seed, image.shape[:2]))


__all__ = [
    "DegradationPreset",
    "DegradationMix",
    "Degradation",
    "CLEAN",
    "VIDEO_SMALL",
    "VIDEO_UPLOAD",
    "VIDEO_UPLOAD_ANY_SIZE",
    "SEVERE_AT_128",
    "SEVERE",
    "MODERATE",
    "MILD",
    "VIDEO",
    "PRESETS",
    "get_preset",
    "sample_degradation",
    "apply_degradation",
    "degrade",
    "anisotropic_gaussian_kernel",
    "motion_blur_kernel",
    "h264_roundtrip",
]
