"""Paste-back: put a restored aligned crop back into its frame.

The crop is warped back with the inverse of the alignment affine and blended through a soft
mask, so no box or seam shows. Only the face's bounding region of the frame is touched, and a
frame pixel whose mask weight is zero keeps its exact value.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from streamrestore.settings import check_kinds

#: a face is monochrome (black-and-white film, a print toned sepia or selenium, either scanned in colour) where
#: its colour differences (Cb and Cr, 0-255 scale) spread by at most MONOCHROME_GREY_SPREAD levels (grey with a
#: scanner's noise and cast), or where a cubic of its brightness leaves at most MONOCHROME_TONE_RESIDUAL of
#: them (a toned print: its tint grows with density) in a face bright enough (mean luma MONOCHROME_MIN_LUMA)
#: and of enough brightness levels (MONOCHROME_MIN_LEVELS 8-level bins each holding 1 % of it: a cubic fits
#: any colours of a face of a few flat tones). Measured on 128 px aligned crops (/tmp/mono, session 52):
#: grey, sepia, sepia + JPEG, grey or sepia with scanner noise of sd 1.2-3 per channel: 72-80 of 80 each
#: (the rest darker than the luma bound); colour faces of the shared clips and photos: 4 of 319 (grey ones),
#: 21 of 319 at half their saturation, none of 93 faces of a dim stage clip (warm skin at mean luma ~26 that a
#: cubic alone took for sepia: review 52). A monochrome face keeps its tone (:func:`keep_monochrome_tone`): the
#: restorer, which saw colour faces only, tinted lips and eyes by up to 11 levels on grey film and up to 22 on a
#: toned print (archive F2, family F1). Judged per face and frame, each bound a ramp (:data:`_RAMPS`).
MONOCHROME_TONE_RESIDUAL = 2.2
MONOCHROME_GREY_SPREAD = 1.5
MONOCHROME_MIN_LUMA = 40.0
MONOCHROME_MIN_LEVELS = 6
#: half-widths of the ramps the bounds above are: a face's monochrome weight goes from 1 to 0 across each, and
#: its tone is kept by that share, so a face whose measures drift across a bound frame by frame (a film's
#: exposure flicker, a face at mean luma 39-41) changes its colour by a little each frame, not all at once
#: (review 52: a face at the luma bound flipped colour, mono, colour, ...)
_RAMPS = {"spread": 0.2, "residual": 0.2, "luma": 5.0, "levels": 1.0}

# BT.601 luma weights (the split into brightness and colour difference; any weights summing to 1 keep a
# grey pixel grey) and the colour differences' scales (Cb = 0.564 (B - Y), Cr = 0.713 (R - Y))
_LUMA = (0.299, 0.587, 0.114)
_CB, _CR = 0.564, 0.713
#: degree of the tone curve fitted to a face's colour differences (a toned print's tint is not linear in
#: brightness: split toning leaves highlights or shadows neutral)
_TONE_DEGREE = 3
#: ridge on the fit, relative to its scale: a flat crop (one brightness) still solves, to a constant tone
_TONE_RIDGE = 1e-6


def _sample_step(side: int) -> int:
    """The pixel step that samples a crop of ``side`` on a grid of about 64 x 64 (a 1024 px crop took 6.7 ms
    at every other pixel)."""
    return max(2, side // 64)


def _powers(luma, lib):
    """The tone curve's terms of ``luma`` (0-255, any shape): 1, t, t^2, t^3 of t = luma/255 - 1/2 (centred,
    so the normal equations stay well conditioned), stacked on a new last axis."""
    t = luma / 255.0 - 0.5
    return lib.stack([t ** k for k in range(_TONE_DEGREE + 1)], -1)


def _tone_curve(luma, coefficients):
    """The tone's Cb and Cr at ``luma`` (0-255, any shape), from ``coefficients`` (..., terms, 2): a pair of
    arrays (or tensors) shaped as ``luma``; by Horner's rule, so a 512 px crop costs a few passes, not a
    matrix of its terms."""
    t = luma / 255.0 - 0.5
    cb, cr = coefficients[..., -1, 0], coefficients[..., -1, 1]
    for k in range(coefficients.shape[-2] - 2, -1, -1):
        cb, cr = cb * t + coefficients[..., k, 0], cr * t + coefficients[..., k, 1]
    return cb, cr


@dataclass(frozen=True)
class MonochromeTone:
    """A monochrome face's tone: its colour differences as cubics of its brightness (:func:`monochrome_tone`).

    ``coefficients``: (terms, 2), Cb's and Cr's; ``low``, ``high``: the brightness range it was fitted on (the
    curves are not used outside it); ``weight``: how monochrome the face is, in (0, 1]."""

    coefficients: np.ndarray
    low: float
    high: float
    weight: float = 1.0  # how monochrome the face is (:func:`_monochrome_weight`): the share of its tone kept

    def shift(self, before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """How the tone moves Cb and Cr where the brightness goes from ``before`` to ``after`` (same shapes)."""
        cb_after, cr_after = _tone_curve(np.clip(after, self.low, self.high), self.coefficients)
        cb_before, cr_before = _tone_curve(np.clip(before, self.low, self.high), self.coefficients)
        return cb_after - cb_before, cr_after - cr_before


def _monochrome_weight(spread, residual, mean_luma, levels, lib):
    """How monochrome a face is by the rule of :data:`MONOCHROME_TONE_RESIDUAL`, 0 to 1 (its bounds ramps of
    :data:`_RAMPS`), from its measures (floats, or tensors of one per face; ``lib``: numpy or torch)."""
    def below(value, bound, half):  # 1 under the ramp, 0 over it
        return lib.clip((bound + half - value) / (2 * half), 0.0, 1.0)

    toned = (below(residual, MONOCHROME_TONE_RESIDUAL, _RAMPS["residual"])
             * (1.0 - below(mean_luma, MONOCHROME_MIN_LUMA, _RAMPS["luma"]))
             * (1.0 - below(levels, MONOCHROME_MIN_LEVELS, _RAMPS["levels"])))
    return lib.maximum(below(spread, MONOCHROME_GREY_SPREAD, _RAMPS["spread"]), toned)


def _levels_held(luma, lib):
    """How many 8-level brightness bins hold at least 1 % of the samples ``luma`` (last axis). The bins are
    taken a thousandth of a level up: the host's float64 and the device's float32 luma of a grey level 8 lie
    on either side of the edge (review 52)."""
    index = lib.clip((luma + 1e-3) // 8, 0, 31)
    if lib is np:  # (one face's samples)
        counts = np.bincount(index.astype(np.int64), minlength=32)
    else:  # (a batch's, one row each: one kernel, not one per bin)
        counts = lib.zeros(luma.shape[0], 32, device=luma.device).scatter_add_(1, index.long(), lib.ones_like(luma))
    return (counts >= 0.01 * luma.shape[-1]).sum(-1)


def _luma_of(rgb):
    """The BT.601 luma of ``rgb`` (last axis R, G, B; numpy or torch), as a sum of Python-float products: a
    weights tensor made on a GPU was a copy from the host that waited for it."""
    return rgb[..., 0] * _LUMA[0] + rgb[..., 1] * _LUMA[1] + rgb[..., 2] * _LUMA[2]


def monochrome_tone(crop: np.ndarray) -> MonochromeTone | None:
    """The tone of the (R, R, 3) RGB ``crop`` if it is a black-and-white or toned picture, else None
    (:data:`MONOCHROME_TONE_RESIDUAL`; sampled on ~64 x 64)."""
    step = _sample_step(crop.shape[0])
    sub = crop[::step, ::step].reshape(-1, 3).astype(np.float64)
    luma = _luma_of(sub)
    colour = np.stack([(sub[:, 2] - luma) * _CB, (sub[:, 0] - luma) * _CR], -1)
    spread, mean_luma = float(colour.std(0).max()), float(luma.mean())
    # (per face and frame, and most faces are colour: what gives them weight 0 is looked at first, the fit
    # and the tone count only where they can change it; the weight is the same)
    coloured = spread >= MONOCHROME_GREY_SPREAD + _RAMPS["spread"]
    if coloured and mean_luma <= MONOCHROME_MIN_LUMA - _RAMPS["luma"]:
        return None
    terms = _powers(luma, np)
    normal = terms.T @ terms
    normal += _TONE_RIDGE * np.trace(normal) * np.eye(len(normal))
    coefficients = np.linalg.solve(normal, terms.T @ colour)
    residual = float((colour - terms @ coefficients).std(0).max())
    if coloured and residual >= MONOCHROME_TONE_RESIDUAL + _RAMPS["residual"]:
        return None
    weight = float(_monochrome_weight(spread, residual, mean_luma, float(_levels_held(luma, np)), np))
    if weight <= 0.0:
        return None
    return MonochromeTone(coefficients.astype(np.float32), float(luma.min()), float(luma.max()), weight)


def is_monochrome(crop: np.ndarray) -> bool:
    """Whether the (R, R, 3) RGB ``crop`` is a black-and-white or toned picture: its weight
    (:func:`monochrome_tone`) at least one half."""
    tone = monochrome_tone(crop)
    return tone is not None and tone.weight >= 0.5


def _tone_kept(original, brightness_change, cb_shift, cr_shift, lib):
    """``original`` (float RGB, channels last) plus a change of brightness and of the colour differences,
    turned back into R, G and B changes."""
    red = brightness_change + cr_shift / _CR
    blue = brightness_change + cb_shift / _CB
    green = brightness_change - (_LUMA[0] * cr_shift / _CR + _LUMA[2] * cb_shift / _CB) / _LUMA[1]
    return original + lib.stack([red, green, blue], -1)


def keep_monochrome_tone(original: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """``restored`` (uint8 RGB crop) where ``original`` is colour; where it is monochrome
    (:func:`monochrome_tone`), ``original`` plus the restorer's change of brightness, its colour moved along
    its own tone with it: grey stays grey, a sepia print stays on its sepia (near a bound of the rule, that
    share of it)."""
    tone = monochrome_tone(original)
    if tone is None:
        return restored
    before = _luma_of(original.astype(np.float32))
    after = _luma_of(restored.astype(np.float32))
    kept = _tone_kept(original.astype(np.float32), after - before, *tone.shift(before, after), np)
    if tone.weight < 1.0:  # (near a bound: that share of the tone kept)
        kept = restored + tone.weight * (kept - restored)
    return np.clip(kept + 0.5, 0, 255).astype(np.uint8)


def keep_monochrome_tone_tensor(original, restored):
    """:func:`keep_monochrome_tone` of (N, 3, R, R) tensors in [0, 1], on their device: the faces whose
    ``original`` is monochrome (judged on the same samples, in float32) keep their tone, the others are
    ``restored``. Nothing is asked of the device on the host (no test of the outcome, no weights copied to it)."""
    import torch

    original = original.to(restored.dtype)
    every = _sample_step(original.shape[-1])
    # (rounded: the crops were uint8, and a level such as 8 came back as 7.9999995)
    sub = (original[:, :, ::every, ::every].float() * 255.0).round().flatten(2).transpose(1, 2)  # (N, M, 3)
    luma = _luma_of(sub)
    colour = torch.stack([(sub[..., 2] - luma) * _CB, (sub[..., 0] - luma) * _CR], -1)
    terms = _powers(luma, torch)  # (N, M, terms)
    normal = terms.transpose(1, 2) @ terms
    ridge = _TONE_RIDGE * normal.diagonal(dim1=1, dim2=2).sum(-1)
    normal = normal + ridge[:, None, None] * torch.eye(normal.shape[-1], device=sub.device)
    # (solve_ex: solve would wait for the device to check the matrix; the ridge keeps it invertible)
    coefficients = torch.linalg.solve_ex(normal, terms.transpose(1, 2) @ colour)[0]  # (N, terms, 2)
    residual = (colour - terms @ coefficients).std(1, correction=0).amax(1)
    spread = colour.std(1, correction=0).amax(1)
    weight = _monochrome_weight(spread, residual, luma.mean(1), _levels_held(luma, torch).float(), torch)
    low, high = luma.amin(1), luma.amax(1)

    def curve(full_luma):  # (N, R, R) -> Cb, Cr (N, R, R)
        clipped = torch.minimum(torch.maximum(full_luma, low[:, None, None]), high[:, None, None])
        return _tone_curve(clipped, coefficients[:, None, None])

    pixels = original.float().permute(0, 2, 3, 1) * 255.0
    given = restored.float().permute(0, 2, 3, 1) * 255.0
    before, after = _luma_of(pixels), _luma_of(given)
    (cb_after, cr_after), (cb_before, cr_before) = curve(after), curve(before)
    kept = _tone_kept(pixels, after - before, cb_after - cb_before, cr_after - cr_before, torch)
    kept = given + weight[:, None, None, None] * (kept - given)  # (near a bound: that share of the tone)
    kept = (kept / 255.0).clamp(0.0, 1.0).permute(0, 3, 1, 2).to(restored.dtype)
    return torch.where(weight[:, None, None, None] > 0, kept, restored)


@dataclass(frozen=True)
class PasteConfig:
    """How a restored crop is blended back.

    Args:
        feather: width of the soft border of the crop mask as a fraction of the crop side
            (default 0.1: wide enough that hair and background fade in without a visible edge,
            narrow enough that the whole face keeps full weight).
        color_match: match the restored crop's per-channel mean (and, within ``max_std_ratio``,
            its contrast) to the original crop under the mask, so a model's colour drift never
            shows as a patch. Default False: the shipped ``lite`` also repairs the colour and
            contrast that compression takes from a degraded face, and matching them back to the
            damaged input undid part of its work (lite v3, two degraded benchmark clips: face
            PSNR 0.12 dB lower with it on both); clean faces pass the quality gate unchanged
            either way. Turn it on for a model whose colours drift.
        max_std_ratio: bound on the contrast change colour matching may apply (default 1.25):
            a degraded input is noisier than a restored face, and matching its std fully would
            put the noise's contrast back.
        detail_transfer: paste the model's change (restored minus its input, warped back)
            onto the frame instead of the restored crop (default True; both frame paths). When
            the face is larger in the frame than the crop (a 300 px face through a 128 px
            model), the crop cannot hold the frame's finest detail, and pasting it back alone
            would soften the face; when it is smaller, the whole crop pasted back was resampled
            twice (frame -> crop -> frame): a clean face the gate left alone came back at
            ~49 dB instead of unchanged, and the resampling shimmered from frame to frame.
            False pastes the restored crop itself. (Until session 21 the change was pasted for
            faces larger than the crop only, and the device path never pasted it.)
    """

    feather: float = 0.1
    color_match: bool = False
    max_std_ratio: float = 1.25
    detail_transfer: bool = True

    def __post_init__(self) -> None:
        check_kinds(self)
        if not 0.0 < self.feather <= 0.5:
            raise ValueError(f"feather must be in (0, 0.5], got {self.feather}")
        if self.max_std_ratio < 1.0:
            raise ValueError(f"max_std_ratio must be >= 1, got {self.max_std_ratio}")


def feather_mask(resolution: int, feather: float) -> np.ndarray:
    """(R, R) float32 mask: 1 inside, falling smoothly (smoothstep) to 0 at the crop border.

    Args:
        resolution: the crop side R.
        feather: width of the falling border as a fraction of R (at least one pixel).
    """
    band = max(1.0, feather * resolution)
    coords = np.arange(resolution, dtype=np.float32) + 0.5
    edge = np.minimum(coords, resolution - coords)  # distance to the nearest border, 1-D
    ramp = np.clip(edge / band, 0.0, 1.0)
    ramp = ramp * ramp * (3.0 - 2.0 * ramp)
    return np.outer(ramp, ramp).astype(np.float32)


def _invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix.astype(np.float64))


def crop_box(frame_shape: tuple[int, int], matrix: np.ndarray, side: int) -> tuple[int, int, int, int] | None:
    """The frame box (x0, y0, x1, y1), end exclusive, that a (side, side) crop cut by ``matrix``
    (frame → crop) covers, clipped to the (H, W) frame; None when it lies wholly outside."""
    h, w = frame_shape
    corners = np.array([[0, 0, 1], [side, 0, 1], [0, side, 1], [side, side, 1]], np.float64) @ _invert(matrix).T
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int)
    x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1) + 1, w), min(int(y1) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


class PasteBack:
    """Blends restored crops into frames. Build once per run (the mask is precomputed).

    Args:
        resolution: side of the aligned crops.
        config: see :class:`PasteConfig`.

    Raises:
        ValueError: ``resolution`` is not positive.
    """

    def __init__(self, resolution: int, config: PasteConfig = PasteConfig()) -> None:
        if resolution <= 0:
            raise ValueError(f"resolution must be positive, got {resolution}")
        self.resolution = resolution
        self.config = config
        self._mask = feather_mask(resolution, config.feather)

    def crop_mask(self, frame_shape: tuple[int, int], matrix: np.ndarray) -> np.ndarray:
        """The blend weight of each crop pixel: the feathered mask, faded to zero where the crop
        saw outside the frame (those pixels were padding, not picture).

        Args:
            frame_shape: (H, W) of the frame.
            matrix: the (2, 3) frame → crop affine.

        Returns:
            (R, R) float32 weights in [0, 1].
        """
        h, w = frame_shape
        r = self.resolution
        corners = np.array([[0, 0, 1], [r, 0, 1], [0, r, 1], [r, r, 1]], np.float64) @ _invert(matrix).T
        if corners.min() >= 0 and corners[:, 0].max() <= w - 1 and corners[:, 1].max() <= h - 1:
            return self._mask  # the crop saw only picture: the common case, nothing to compute
        # How much of each crop pixel's bilinear footprint lies in the frame (what warping an
        # all-ones frame with a zero border gives, without touching a frame-sized array).
        # float32 and in place: 0.5 ms for a 512-px crop against float64's 5.9 (positions within 1e-4 px)
        grid = np.arange(r, dtype=np.float32)
        inv = _invert(matrix).astype(np.float32)
        xs = inv[0, 0] * grid[None, :] + (inv[0, 1] * grid[:, None] + inv[0, 2])
        ys = inv[1, 0] * grid[None, :] + (inv[1, 1] * grid[:, None] + inv[1, 2])
        inside = np.minimum(xs + 1.0, w - xs)
        np.clip(inside, 0.0, 1.0, out=inside)
        across = np.minimum(ys + 1.0, h - ys)
        inside *= np.clip(across, 0.0, 1.0, out=across)
        if inside.min() < 1.0:
            # Fade over the same band as the crop border so a face cut by the frame edge has no seam.
            k = int(self.config.feather * r) | 1
            inside = cv2.erode(inside, np.ones((3, 3), np.uint8), iterations=2)
            inside = cv2.GaussianBlur(inside, (k, k), 0) * inside
        return self._mask * inside

    def color_transform(self, restored: np.ndarray, original: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (gain, offset) moving the mean (and, within ``max_std_ratio``, the std)
        of ``restored`` to those of ``original``, both measured under ``weight``.

        Args:
            restored: the restored (R, R, 3) crop.
            original: the crop the restorer was given.
            weight: (R, R) weights the statistics are taken under (:meth:`crop_mask`).

        Returns:
            (gain, offset), each (3,) float32, to apply as ``restored * gain + offset``.
        """
        # Statistics on every 4th pixel: the same numbers to a fraction of a level, 16x cheaper.
        step = 4 if restored.shape[0] >= 128 else 1
        ref = original[::step, ::step].astype(np.float32)
        res = restored[::step, ::step].astype(np.float32)
        wsub = weight[::step, ::step]
        wsum = float(wsub.sum())
        if wsum <= 1e-6:
            return np.ones(3, np.float32), np.zeros(3, np.float32)
        w = wsub[..., None] / wsum
        mu_o, mu_r = (ref * w).sum((0, 1)), (res * w).sum((0, 1))
        sd_o = np.sqrt(((ref - mu_o) ** 2 * w).sum((0, 1))) + 1e-3
        sd_r = np.sqrt(((res - mu_r) ** 2 * w).sum((0, 1))) + 1e-3
        bound = self.config.max_std_ratio
        gain = np.clip(sd_o / sd_r, 1.0 / bound, bound)
        return gain.astype(np.float32), (mu_o - gain * mu_r).astype(np.float32)

    def match_color(self, restored: np.ndarray, original: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """``restored`` with :meth:`color_transform` applied, float32, not clipped.

        Args:
            restored: as for :meth:`color_transform`.
            original: as for :meth:`color_transform`.
            weight: as for :meth:`color_transform`.
        """
        gain, offset = self.color_transform(restored, original, weight)
        return restored.astype(np.float32) * gain + offset

    def paste(self, frame: np.ndarray, restored: np.ndarray, original: np.ndarray, matrix: np.ndarray) -> None:
        """Blend a restored crop into its frame, in place.

        Args:
            frame: the (H, W, 3) uint8 RGB frame.
            restored: the restored (R, R, 3) uint8 crop.
            original: the crop the restorer was given (for colour matching and detail transfer).
            matrix: the (2, 3) frame → crop affine that produced it.
        """
        plan = self.plan(frame.shape[:2], restored, original, matrix)
        if plan is not None:
            paste_rgb(frame, plan)

    def plan(self, frame_shape: tuple[int, int], restored: np.ndarray, original: np.ndarray,
             matrix: np.ndarray) -> "PastePlan | None":
        """What pasting ``restored`` into a frame takes, in crop space; :func:`paste_rgb` and
        :func:`paste_yuv420` carry it out.

        Args:
            frame_shape: (H, W) of the frame.
            restored: the restored (R, R, 3) uint8 crop.
            original: the crop the restorer was given.
            matrix: the (2, 3) frame → crop affine that produced it.

        Returns:
            The plan, or None when the crop lies wholly outside the frame.
        """
        box = crop_box(frame_shape, matrix, self.resolution)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        inv = _invert(matrix)

        weight = self.crop_mask(frame_shape, matrix)
        crop = np.ascontiguousarray(restored)
        if self.config.color_match:
            gain, offset = self.color_transform(restored, original, weight)
            # One saturating per-channel affine in uint8 (cv2.transform): much cheaper than float math.
            crop = cv2.transform(crop, np.hstack([np.diag(gain), offset[:, None]]).astype(np.float32))
        if self.config.detail_transfer:
            # Paste only the model's *change* (restored - its input): the frame keeps its own
            # pixels, above the crop's resolution for a face larger than the crop, and wholly
            # where nothing changed (pasted whole, a face smaller than the crop was resampled
            # frame -> crop -> frame, softened and shimmering). warp(restored) + frame -
            # warp(input) = frame + warp(restored - input), one warp instead of two.
            change = cv2.subtract(crop, np.ascontiguousarray(original), dtype=cv2.CV_32F)
            return PastePlan((int(x0), int(y0), int(x1), int(y1)), inv, weight, change, additive=True)
        return PastePlan((int(x0), int(y0), int(x1), int(y1)), inv, weight, crop, additive=False)


@dataclass(frozen=True)
class PastePlan:
    """One face's paste, in crop space: the frame box it touches, the crop → frame affine, the
    blend weight of each crop pixel, and what to blend: the colour-matched crop (uint8, blended
    over the frame) or, when ``additive``, the model's change (float32 RGB levels, added)."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the frame, end exclusive
    to_frame: np.ndarray  # (2, 3) crop → frame
    weight: np.ndarray  # (R, R) float32
    content: np.ndarray  # (R, R, 3)
    additive: bool

    @property
    def scale(self) -> float:
        """Frame pixels per crop pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.to_frame[:, :2]))))

    def to_box(self, scale: float = 1.0, origin: tuple[int, int] | None = None) -> np.ndarray:
        """The (2, 3) crop → box affine.

        Args:
            scale: 1 for the frame's grid; 0.5 maps to a half-resolution (chroma) grid, whose
                samples sit at the centres of 2x2 frame-pixel blocks.
            origin: the box's top-left corner on that grid (default None: the plan's box's
                corner, on the frame's grid).
        """
        x0, y0 = origin if origin is not None else self.box[:2]
        m = self.to_frame.copy()
        if scale != 1.0:
            m = m * scale
            m[:, 2] += 0.5 * scale - 0.5  # pixel-centre convention: (x + 0.5) * s - 0.5
        m[:, 2] -= (x0, y0)
        return m


def _warp(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], *, cubic: bool) -> np.ndarray:
    # Cubic for content: two bilinear resamplings (frame → crop → frame) blur fine detail
    # visibly. Replicated border: the mask is 0 there anyway, and a constant would ring inwards.
    if cubic:
        return cv2.warpAffine(image, matrix, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return np.clip(alpha, 0.0, 1.0, out=alpha)


def _blend_into(roi: np.ndarray, content: np.ndarray, alpha: np.ndarray, additive: bool) -> None:
    """roi += alpha * content (additive) or roi = alpha * content + (1 - alpha) * roi, in place,
    rounding and saturating; where alpha is 0 the pixel keeps its exact value."""
    if additive:
        if content.ndim == 3:
            alpha = cv2.merge([alpha] * content.shape[2])
        roi[...] = cv2.add(roi, cv2.multiply(content, alpha), dtype=cv2.CV_8U)
    else:
        roi[...] = cv2.blendLinear(content, np.ascontiguousarray(roi), alpha, 1.0 - alpha)


def paste_rgb(frame: np.ndarray, plan: PastePlan) -> None:
    """Carries out ``plan`` on an RGB frame, in place.

    Args:
        frame: the (H, W, 3) uint8 RGB frame.
        plan: from :meth:`PasteBack.plan`.
    """
    x0, y0, x1, y1 = plan.box
    size = (x1 - x0, y1 - y0)
    to_box = plan.to_box()
    alpha = _warp(plan.weight, to_box, size, cubic=False)
    _blend_into(frame[y0:y1, x0:x1], _warp(plan.content, to_box, size, cubic=True), alpha, plan.additive)


# A 4:2:0 paste of a face at least this many times larger in the frame than its crop is computed
# on the chroma grid, and luma is a 2x upsampling of it: that grid still samples the crop 1.25x
# more finely than the crop's own pixels, and the paste costs about a third.
_HALF_RESOLUTION_SCALE = 2.5


def _half_resolution(plan: PastePlan) -> bool:
    return plan.additive and plan.scale >= _HALF_RESOLUTION_SCALE


def yuv420_weights(plan: PastePlan, frame_shape: tuple[int, int]
                   ) -> tuple[tuple[int, int], np.ndarray, tuple[int, int], np.ndarray]:
    """The blend weights :func:`paste_yuv420` uses for ``plan``. Samples outside them, or where
    they are 0, keep their values; a chroma sample has weight only where a pixel of its 2x2
    block has.

    Args:
        plan: from :meth:`PasteBack.plan`.
        frame_shape: (H, W) of the frame.

    Returns:
        ``((x0, y0), luma, (cx0, cy0), chroma)``: weight arrays with their top-left corners on
        the luma and chroma grids.
    """
    h, w = frame_shape
    x0, y0, x1, y1 = plan.box
    cx0, cy0 = x0 // 2, y0 // 2
    cx1, cy1 = min((x1 + 1) // 2, (w + 1) // 2), min((y1 + 1) // 2, (h + 1) // 2)
    if _half_resolution(plan):
        chroma = _warp(plan.weight, plan.to_box(0.5, (cx0, cy0)), (cx1 - cx0, cy1 - cy0), cubic=False)
        # Luma pixel 2j sits a quarter sample from chroma sample j and takes 3/4 of its weight.
        luma = cv2.resize(chroma, (2 * (cx1 - cx0), 2 * (cy1 - cy0)), interpolation=cv2.INTER_LINEAR)
        return (2 * cx0, 2 * cy0), luma[: h - 2 * cy0, : w - 2 * cx0], (cx0, cy0), chroma
    luma = _warp(plan.weight, plan.to_box(), (x1 - x0, y1 - y0), cubic=False)
    # Chroma weight: the mean of the block's luma weights (the box grown to whole blocks).
    blocks = np.zeros((2 * (cy1 - cy0), 2 * (cx1 - cx0)), np.float32)
    ox, oy = x0 - 2 * cx0, y0 - 2 * cy0
    rows, cols = min(luma.shape[0], blocks.shape[0] - oy), min(luma.shape[1], blocks.shape[1] - ox)
    blocks[oy : oy + rows, ox : ox + cols] = luma[:rows, :cols]
    chroma = cv2.resize(blocks, (cx1 - cx0, cy1 - cy0), interpolation=cv2.INTER_AREA)
    return (x0, y0), luma, (cx0, cy0), chroma


def paste_yuv420(y: np.ndarray, u: np.ndarray, v: np.ndarray, plan: PastePlan, from_rgb: np.ndarray) -> None:
    """Carries out ``plan`` on the planes of an 8-bit 4:2:0 frame, in place.

    The crop is converted to YUV at crop size (cheap); chroma is warped straight to the
    half-resolution chroma grid, and luma to the frame, or, for a face much larger than its crop,
    upsampled from the chroma grid too. Weights as :func:`yuv420_weights`.

    Args:
        y: the (H, W) luma plane.
        u: the half-resolution U plane.
        v: the half-resolution V plane.
        plan: from :meth:`PasteBack.plan`.
        from_rgb: the frame's 3x4 RGB → YUV matrix (``streamrestore.pixels.yuv_matrices``).
    """
    (lx0, ly0), luma_alpha, (cx0, cy0), chroma_alpha = yuv420_weights(plan, y.shape)
    matrix = from_rgb[:, :3] if plan.additive else from_rgb  # a change maps through the linear part
    ycc = cv2.transform(plan.content, np.ascontiguousarray(matrix))
    lh, lw = luma_alpha.shape
    ch, cw = chroma_alpha.shape
    half = _half_resolution(plan)
    chroma = _warp(ycc if half else np.ascontiguousarray(ycc[..., 1:]), plan.to_box(0.5, (cx0, cy0)), (cw, ch), cubic=True)
    if half:
        luma = cv2.resize(np.ascontiguousarray(chroma[..., 0]), (2 * cw, 2 * ch), interpolation=cv2.INTER_LINEAR)[:lh, :lw]
        chroma = chroma[..., 1:]
    else:
        luma = _warp(np.ascontiguousarray(ycc[..., 0]), plan.to_box(), (lw, lh), cubic=True)
    _blend_into(y[ly0 : ly0 + lh, lx0 : lx0 + lw], luma, luma_alpha, plan.additive)
    for plane, k in ((u, 0), (v, 1)):
        _blend_into(plane[cy0 : cy0 + ch, cx0 : cx0 + cw], np.ascontiguousarray(chroma[..., k]), chroma_alpha, plan.additive)
