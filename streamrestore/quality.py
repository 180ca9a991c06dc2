"""How much of the restorer's change a face gets: a degradation estimate per face track
(:class:`QualityGate`), and an identity check against the person's references
(:class:`IdentityGate`).

A restorer trained on damaged faces also changes faces that need nothing (waxy skin, lost moles,
halos at the hair line): a clean face should pass through unchanged. The gate measures how much
fine detail the face holds *in the frame, at its own resolution* and blends

    output = input + weight * (restored - input)

with ``weight`` 0 for a face as detailed as clean video faces are and 1 for one as soft as a
degraded face, linear in between, smoothed per track so the weight does not flicker.

The measure, :func:`detail_ratio`, is the mean absolute difference between the grey inner face
(eyes to mouth) and a Gaussian blur of it at sigma 1 px, divided by the same at sigma 3 px: the
share of the face's texture that lives in the finest scale. It does not depend on contrast or
brightness. It is taken from the frame, not from the aligned crop: a large face shrunk into a
128 px crop hides the blur of a 4x-upscaled video, a small face enlarged into the crop looks
soft when it is not. Faces larger than ``measure_side`` are shrunk to it first, so the figure
means the same for a 150 px and a 400 px face. Burnt-in captions are left out of both sums
(:func:`caption_mask`): social clips' letters lie over the mouth, sharp at any video quality, and
read as a clean face's detail, so a blurred face under a caption was left unrestored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Hashable, Iterable

import cv2
import numpy as np

from streamrestore.settings import check_kinds

if TYPE_CHECKING:  # pragma: no cover
    from streamrestore.pixels import RgbPixels, Yuv420Pixels

__all__ = ["QualityGateConfig", "QualityGate", "detail_ratio", "caption_mask", "inner_face", "IdentityGateConfig",
           "IdentityGate"]


@dataclass(frozen=True)
class QualityGateConfig:
    """Settings of the quality gate (:class:`QualityGate`).

    Args:
        enabled: False gives every face the restorer's whole change (the gate's weight is 1).
        clean_at: detail ratio at or above which a face counts as clean (weight 0). Default
            0.27, from six train-ok talking-head clips (224-720 px, none in the video
            benchmark), ten frames each: their clean faces measure 0.26-0.38 (clip means
            0.27-0.38), the same frames degraded as the video benchmark does it (blur 1.2,
            4x smaller, H.264 crf 32, back up) 0.20-0.26 (clip means 0.21-0.25).
        degraded_at: detail ratio at or below which the whole change is used (weight 1).
            Default 0.235.
        measure_side: faces are measured at their size in the frame, shrunk to at most this
            many pixels on the longer side of the inner face (default 160).
        smoothing: weight of a track's previous gate value in its running mean (default 0.8:
            about five frames to follow a real change in quality; the measure's frame-to-frame
            noise, a std of 0.004-0.03 within a clip, is averaged over those frames instead of
            switching the model's change on and off).
        off_below: a smoothed weight under this is 0 (default 0.01: 1 % of the model's change, a
            fraction of a level): a face that turns clean is left exactly as it is about 20 frames
            later (0.8 ** 21 < 0.01) instead of a trace of the change ever after.
        skip_clean_faces: the restorer is not run for a face whose weight is 0 (its output would be
            thrown away): clean footage costs no model time, and the output is the same to the bit
            (default True; ``streamrestore bench`` turns it off, to time the model on every face).
        dim_below: a face whose coarse contrast (mean |grey − blur σ3| of the measured inner face, in
            grey levels) is under this is *dim* (:meth:`QualityGate.dim`), and one the gate leaves
            alone is said to be too dark or flat to judge, not clean. In a dim face the frame's rounding and
            the codec's noise are a large share of the finest scale, so :func:`detail_ratio` reads a
            blurred face as detailed. Default 1.5: on 16 talking-head clips (the video benchmark's
            eight, three more, the gate's six calibration clips less one), 8-10 frames each, every face
            in the clips' own light measured 2.4 or more (clean 3.5 or more; degraded as the benchmark
            degrades 2.4 or more); the same clips darkened (gamma 1.6, gain 0.3) then degraded, 0.5-2.2.
            The weight is not changed for a dim face: lite, trained on well-lit faces, did not restore
            such faces either (``docs/video_eval.md``, "Session 45").
        grainy_above: a face whose noise (:func:`noise_level` of the measured inner face, grey
            levels) is over this is *grainy* (:meth:`QualityGate.grainy`), and one the gate leaves
            alone is said to be too grainy to judge, not clean: film grain and tape noise live at the
            finest scale, so :func:`detail_ratio` reads a blurred, grainy face as a sharp one.
            Default 1.5: on 16 talking-head clips (as for ``dim_below``), 8-10 frames each, every
            face measured 0.19-0.88 clean and 0.15-0.49 degraded; with grain of std 3 / 5 / 8 levels
            added at the frame's resolution 0.91-3.2 / 1.44-5.2 / 2.26-8.2. Stage footage (three
            encodes of one clip, 11 faces each) measured 0.14-2.5: over 1.0 (first tried) 5, 6 and 6
            faces, over 1.5 5, 6 and none (its full-range H.264 copy). The weight is not changed:
            on four benchmark clips (24 frames, no references) lite with the gate off gained 0.14-0.83
            dB on the degraded copies with grain of std 4, but lost 0.37-1.26 dB on the clean clips
            with the same grain, and no measure tried told the two apart (``docs/video_eval.md``,
            "Session 47").
        strength: how much of the restorer's change a face gets at most, in [0, 1]: the gate's weight
            (1 with the gate off) times this. Default 1 (all of it); 0.5 halves every face's change
            toward its input (a user's fidelity control, as other restorers' weight options are); 0
            leaves every face as it is, and the restorer is not run for it.
    """

    enabled: bool = True
    clean_at: float = 0.27
    degraded_at: float = 0.235
    measure_side: int = 160
    smoothing: float = 0.8
    off_below: float = 0.01
    skip_clean_faces: bool = True
    dim_below: float = 1.5
    grainy_above: float = 1.5
    strength: float = 1.0

    def __post_init__(self) -> None:
        check_kinds(self)
        if not 0.0 < self.degraded_at < self.clean_at:
            raise ValueError(f"need 0 < degraded_at < clean_at, got degraded_at={self.degraded_at}, "
                             f"clean_at={self.clean_at}")
        if self.measure_side < 32:
            raise ValueError(f"measure_side must be >= 32, got {self.measure_side}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if not 0.0 <= self.off_below < 1.0:
            raise ValueError(f"off_below must be in [0, 1), got {self.off_below}")
        if not self.dim_below >= 0.0:
            raise ValueError(f"dim_below must be >= 0 grey levels, got {self.dim_below}")
        if not self.grainy_above >= 0.0:
            raise ValueError(f"grainy_above must be >= 0 grey levels, got {self.grainy_above}")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {self.strength}")


def inner_face(pixels: RgbPixels | Yuv420Pixels, matrix: np.ndarray, resolution: int) -> np.ndarray:
    """RGB of the frame box around the inner face (the crop's central 60 %: eyes to mouth).

    Args:
        pixels: the frame's pixels (:mod:`streamrestore.pixels`: anything with ``shape`` and
            ``region(x0, y0, x1, y1)``).
        matrix: the face's alignment matrix (frame -> crop, 2x3).
        resolution: the crop side the matrix maps to.

    Returns:
        (H, W, 3) uint8 RGB at the frame's resolution; an empty (0, 0, 3) array when the box
        inside the frame is under 4 pixels wide or high.
    """
    m = np.asarray(matrix, np.float64)
    inv = cv2.invertAffineTransform(m)
    r = float(resolution)
    corners = np.array([[0.2, 0.2], [0.8, 0.2], [0.2, 0.8], [0.8, 0.8]]) * r
    pts = corners @ inv[:, :2].T + inv[:, 2]
    h, w = pixels.shape[:2]
    x0, y0 = np.maximum(np.floor(pts.min(axis=0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(pts.max(axis=0)).astype(int), (w, h))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return np.zeros((0, 0, 3), np.uint8)
    return pixels.region(int(x0), int(y0), int(x1), int(y1))


#: a caption's white: grey level (0-255) at and above which a pixel counts as a letter
CAPTION_WHITE = 235
#: a caption's coloured letter (yellow...): its brightest channel at least this, next to ...
CAPTION_LETTER = 220
#: ... its black outline or box: every channel at most this
CAPTION_BLACK = 30


def caption_mask(grey: np.ndarray, brightest: np.ndarray) -> np.ndarray:
    """Where a face's picture holds burnt-in caption text, as social clips draw it: white letters
    (grey at least :data:`CAPTION_WHITE`), letters of any colour beside their black outline or box
    (brightest channel at least :data:`CAPTION_LETTER` within 2 px of one at most
    :data:`CAPTION_BLACK`), and black boxes (7x7 px or more with their letters), each grown by 2-4 px.

    Measured on 11 clips (the video benchmark's eight, s18, s32, a latentsync clip), 8 frames each,
    clean and degraded (the benchmark's default): without a caption :func:`detail_ratio` moved by at
    most 0.004 (mean 0.0006; the gate's band is 0.235-0.27), and not at all on the same faces dimmed
    to a quarter (dark hair and beards are not taken for a box). With letters drawn over the lower face
    (white with a black outline; yellow in a black box), the degraded faces measured 0.28-0.47
    before (all read as clean) and 0.18-0.30 now, 3 % of them at or above 0.27 (means: white
    0.213, boxed 0.227; without a caption 0.17-0.28, mean 0.214).

    Args:
        grey: (H, W) grey picture of the face.
        brightest: (H, W) uint8, each pixel's brightest channel.

    Returns:
        (H, W) bool, True on caption pixels.
    """
    near = np.ones((5, 5), np.uint8)
    white = grey >= CAPTION_WHITE
    outlined = (cv2.dilate(brightest, near) >= CAPTION_LETTER) & (cv2.erode(brightest, near) <= CAPTION_BLACK)
    letters = cv2.dilate((white | outlined).astype(np.uint8), near) > 0
    # a box: black with its letters in it, 7x7 px or more, and 4 px around (its edges are sharp too);
    # only near letters, so that a dark beard or hair in dim light is not taken for one
    solid = cv2.erode(((brightest <= CAPTION_BLACK) | outlined).astype(np.uint8), np.ones((7, 7), np.uint8))
    box = np.minimum(solid, cv2.dilate(outlined.astype(np.uint8), np.ones((15, 15), np.uint8)))
    return letters | (cv2.dilate(box, np.ones((15, 15), np.uint8)) > 0)


def detail_ratio(face: np.ndarray, measure_side: int | None = 160) -> float:
    """The share of the face's texture at the finest scale (see the module docstring).

    Args:
        face: (H, W, 3) uint8 RGB of the inner face at the frame's resolution.
        measure_side: a face whose longer side is larger is shrunk to it first (None: never).

    Returns:
        The fine-scale share; 1.0 for a face under 4 pixels wide or high, or a flat patch
        (nothing to restore).

    Raises:
        ValueError: ``face`` is not an (H, W, 3) image.
    """
    return _measures(face, measure_side)[0]


#: Immerkær's mask: the difference of two Laplacians, blind to a plane and most of a face's
#: gradients, so what it passes is mostly noise
_NOISE_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def noise_level(grey: np.ndarray) -> float:
    """The std (grey levels) of the white noise in ``grey`` (float, 2-D): the median absolute
    response to :data:`_NOISE_MASK` (whose gain on white noise is 6), scaled as a Gaussian's
    median absolute value is (0.6745 std). The median keeps a face's edges, a minority of its
    pixels, out of it: clean faces measure 0.2-0.9 (see ``QualityGateConfig.grainy_above``)."""
    if min(grey.shape) < 3:
        return 0.0
    response = cv2.filter2D(grey, -1, _NOISE_MASK)[1:-1, 1:-1]
    return float(np.median(np.abs(response))) / 0.6745 / 6.0


#: a face is lit by one strong colour where its mean green or blue is at least this many times its red: skin in
#: white or warm light is reddest (of 98 faces of the shared photos, green or blue reached 0.99 of red: a grey
#: print); a blue stage light's face (RGB 9, 42, 170) 19
ONE_COLOUR_OVER_RED = 1.5
#: ... or where its green is under this share of its red: a deep red light (~0.15); skin's is 0.38 and more
#: (a dark-skinned face in warm light, the lowest of those 98)
ONE_COLOUR_GREEN_UNDER = 0.25
#: ... and its brightest channel's mean is at least this (levels): a dark face is "too dark", not tinted
ONE_COLOUR_MIN_LEVEL = 80.0


def under_one_colour(face: np.ndarray) -> bool:
    """Whether the (H, W, 3) RGB ``face`` was lit by one strong colour (:data:`ONE_COLOUR_OVER_RED`,
    :data:`ONE_COLOUR_GREEN_UNDER`, :data:`ONE_COLOUR_MIN_LEVEL`)."""
    red, green, blue = (float(v) for v in np.asarray(face, dtype=np.float32).reshape(-1, 3).mean(axis=0))
    if max(red, green, blue) < ONE_COLOUR_MIN_LEVEL:
        return False
    return max(green, blue) >= ONE_COLOUR_OVER_RED * red or green < ONE_COLOUR_GREEN_UNDER * red


def _measures(face: np.ndarray, measure_side: int | None) -> tuple[float, float, np.ndarray | None]:
    """:func:`detail_ratio`, the face's contrast at the coarse scale (the ratio's denominator, in
    grey levels: mean |grey − blur σ3|; infinite where nothing was measured) and the grey face
    they were measured on (None where nothing was)."""
    face = np.asarray(face)
    if face.ndim != 3 or face.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {face.shape}")
    if min(face.shape[:2]) < 4:
        return 1.0, float("inf"), None  # nothing to measure: leave the face alone
    face = np.ascontiguousarray(face)
    grey: np.ndarray = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY).astype(np.float32)
    brightest = face.max(axis=2)
    side = max(grey.shape)
    if measure_side is not None and side > measure_side:
        f = measure_side / side
        size = (max(8, round(grey.shape[1] * f)), max(8, round(grey.shape[0] * f)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        brightest = cv2.resize(brightest, size, interpolation=cv2.INTER_AREA)
    fine_map = np.abs(grey - cv2.GaussianBlur(grey, (0, 0), 1.0))
    coarse_map = np.abs(grey - cv2.GaussianBlur(grey, (0, 0), 3.0))
    keep = ~caption_mask(grey, brightest)
    if keep.mean() < 0.3:  # mostly "caption" (an overexposed or very dark face): measured whole
        keep[:] = True
    fine, coarse = float(fine_map[keep].mean()), float(coarse_map[keep].mean())
    # a flat patch has nothing to restore
    return (fine / coarse if coarse > 1e-3 else 1.0), coarse, grey


class QualityGate:
    """Per-track gate weights (see the module docstring); one per
    :class:`~streamrestore.pipeline.FaceRestorer`.

    Args:
        config: see :class:`QualityGateConfig`.
    """

    def __init__(self, config: QualityGateConfig = QualityGateConfig()) -> None:
        self.config = config
        self._weights: dict[int, float] = {}
        self._dim: dict[int, bool] = {}
        self._tinted: dict[int, bool] = {}
        self._grainy: dict[int, bool] = {}

    def weight(self, track_id: int, pixels: RgbPixels | Yuv420Pixels, matrix: np.ndarray, resolution: int) -> float:
        """This frame's weight for a face in [0, 1] (smoothed over the track's frames).

        Args:
            track_id: the face's track.
            pixels: the frame's pixels, as for :func:`inner_face`.
            matrix: the face's alignment matrix, as for :func:`inner_face`.
            resolution: the crop side the matrix maps to.

        Returns:
            0 for a clean face (it passes through unchanged) up to 1 for a degraded one (the
            restorer's whole change); 1 when the gate is off.
        """
        own, contrast, noise, tinted = self._measured(pixels, matrix, resolution)
        self._dim[track_id] = contrast < self.config.dim_below
        self._tinted[track_id] = tinted
        self._grainy[track_id] = noise > self.config.grainy_above
        return self.smoothed(track_id, own)

    def dim(self, track_id: int) -> bool:
        """Whether the track's face, when :meth:`weight` last measured it, had less contrast than
        ``dim_below`` (too dark or flat for the measure to tell blurred from clean: a washed-out face
        too); False with the gate off."""
        return self._dim.get(track_id, False)

    def tinted(self, track_id: int) -> bool:
        """Whether the track's face, when :meth:`weight` last measured it :meth:`dim`, was lit by one strong
        colour (a stage's blue or red light: :func:`under_one_colour`): its brightness, which the measure reads,
        holds little of the picture, so "too dark" would misstate a bright face; False with the gate off."""
        return self._tinted.get(track_id, False)

    def grainy(self, track_id: int) -> bool:
        """Whether the track's face, when :meth:`weight` last measured it as clean, held more noise
        than ``grainy_above`` (film grain, tape noise: the measure reads it as detail); False for a
        face it measured as degraded, and with the gate off."""
        return self._grainy.get(track_id, False)

    def measure(self, pixels: RgbPixels | Yuv420Pixels, matrix: np.ndarray, resolution: int) -> float:
        """This frame's own weight for a face, before the smoothing over its track's frames
        (arguments as for :meth:`weight`); 1 when the gate is off."""
        return self._measured(pixels, matrix, resolution)[0]

    def _measured(self, pixels: RgbPixels | Yuv420Pixels, matrix: np.ndarray, resolution: int
                  ) -> tuple[float, float, float, bool]:
        """:meth:`measure`, the face's coarse contrast (grey levels; infinite with the gate off), its
        noise (:func:`noise_level`), measured only where the face reads as clean (its own
        weight 0: what "grainy" qualifies; 0 otherwise and with the gate off), and, where its contrast is
        under ``dim_below``, whether it was lit by one strong colour (:func:`under_one_colour`)."""
        cfg = self.config
        if not cfg.enabled:
            return 1.0, float("inf"), 0.0, False
        face = inner_face(pixels, matrix, resolution)
        ratio, contrast, grey = _measures(face, cfg.measure_side)
        own = float(np.clip((cfg.clean_at - ratio) / (cfg.clean_at - cfg.degraded_at), 0.0, 1.0))
        tinted = contrast < cfg.dim_below and under_one_colour(face)
        return own, contrast, noise_level(grey) if own <= 0.0 and grey is not None else 0.0, tinted

    def smoothed(self, track_id: int, w: float) -> float:
        """The weight :meth:`weight` gives for a face whose own weight this frame is ``w``
        (:meth:`measure`): smoothed over the track's frames, which it advances; 0 under
        ``off_below``."""
        cfg = self.config
        if not cfg.enabled:
            return 1.0
        prev = self._weights.get(track_id)
        if prev is not None:
            w = cfg.smoothing * prev + (1.0 - cfg.smoothing) * w
        self._weights[track_id] = w  # (kept as it is: a face's own small weights still add up)
        return 0.0 if w < cfg.off_below else w

    @staticmethod
    def blend(original: np.ndarray, restored: np.ndarray, weight: float) -> np.ndarray:
        """``original + weight * (restored - original)`` for uint8 crops (exact at 0 and 1).

        Args:
            original: the aligned input crop.
            restored: the restorer's output for it (same shape).
            weight: the gate's weight (:meth:`weight`).
        """
        if weight >= 1.0:
            return restored
        if weight <= 0.0:
            return original
        return cv2.addWeighted(restored, weight, original, 1.0 - weight, 0.0)

    def forget(self, live_track_ids: Iterable[int]) -> None:
        """Drops the state of the tracks not in ``live_track_ids`` (ended tracks).

        Args:
            live_track_ids: the tracks still going.
        """
        live = set(live_track_ids)
        for tid in [t for t in self._weights if t not in live]:
            del self._weights[tid]
        for state in (self._dim, self._tinted, self._grainy):
            for tid in [t for t in state if t not in live]:
                del state[tid]


@dataclass(frozen=True)
class IdentityGateConfig:
    """Settings of the identity gate (:class:`IdentityGate`).

    Args:
        enabled: False never holds the change back for identity (weight 1).
        tolerance: drop of the face's similarity to its references (cosine, the pipeline's face
            embedder) caused by the change, at which none of the change is kept; half of it keeps
            half. Default 0.02: on the held-out clip where the restorer lowered identity
            (liveportrait d14, clean and degraded), the change lowered the embedder's similarity
            by 0.003-0.027; where it restored identity (the video benchmark's other clips) it
            raised it by 0.1-0.28 or left it within ±0.002 (clean faces the quality gate passes).
        every: a track's faces are checked on every this many frames (default 8: a check is two
            embeddings, ~10-20 ms on a busy 2-core CPU; every 4th frame gave the same faces on the
            three clips where the gate engages, within 0.015 dB and 0.0012 identity).
        smoothing: weight of a track's previous value in its running mean (default 0.5: one
            check more to follow a change, no switching on and off between checks).
        min_similarity: a face less similar than this to the references before the change passes
            whole: the photos are likely not this face's person, and identity to them says nothing
            (default 0.2; the insightface MobileFaceNet gives different people 0.03 on average;
            degraded faces of the right person measured 0.16-0.83 on the video benchmark, an
            interview face with Obama's photos 0.10-0.14).
    """

    enabled: bool = True
    tolerance: float = 0.02
    every: int = 8
    smoothing: float = 0.5
    min_similarity: float = 0.2

    def __post_init__(self) -> None:
        check_kinds(self)
        if not self.tolerance > 0.0:
            raise ValueError(f"tolerance must be > 0, got {self.tolerance}")
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ValueError(f"min_similarity must be in [-1, 1], got {self.min_similarity}")


class IdentityGate:
    """Holds back a change that makes a face look less like its person's reference photos.

    The restorer can lower a face's identity while it removes damage (a soft, beauty-filtered
    face it reads as degraded; features it redraws). With references, each track's face is
    embedded before and after the change; where the change lowers the similarity to the
    references' mean embedding by ``d``, the face keeps ``1 - d / tolerance`` of it (none from
    ``tolerance`` on). A change that keeps or raises identity passes whole. Faces without
    references pass whole: there is nothing to compare with. The change judged is the
    restorer's own: the pipeline adds the references' registered detail
    (:mod:`streamrestore.reference_detail`) after this gate, since it is the person's own.

    Args:
        config: see :class:`IdentityGateConfig`.
        embed_aligned: turns (N, R, R, 3) uint8 RGB aligned crops into (N, D) unit embeddings
            (:meth:`streamrestore.faces.identity.InsightfaceEmbedder.embed_aligned`); None
            turns the gate off.
    """

    def __init__(self, config: IdentityGateConfig = IdentityGateConfig(),
                 embed_aligned: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.config = config
        self._embed = embed_aligned if config.enabled else None
        self._references: dict[str, np.ndarray] = {}
        self._weights: dict[Hashable, float] = {}
        self._frames: dict[Hashable, int] = {}

    @property
    def active(self) -> bool:
        """Whether any face can be held back (enabled, an embedder, references)."""
        return self._embed is not None and bool(self._references)

    def set_references(self, name: str, crops: np.ndarray) -> None:
        """Remembers the unit mean embedding of a person's aligned reference crops (once per person)."""
        if self._embed is None or len(crops) == 0:
            return
        mean = np.asarray(self._embed(np.asarray(crops)), np.float64).mean(axis=0)
        self._references[name] = mean / max(float(np.linalg.norm(mean)), 1e-12)

    def judges(self, identity: str | None) -> bool:
        """Whether faces restored toward ``identity``'s photos are judged (else they keep the whole change)."""
        return self._embed is not None and identity in self._references

    def due(self, track_id: Hashable, identity: str | None) -> bool:
        """Whether this frame's face of the track is to be checked (:meth:`update`)."""
        if not self.judges(identity):
            return False
        return self._frames.get(track_id, 0) % self.config.every == 0

    def checked(self, track_id: Hashable) -> bool:
        """Whether the track has had a check (before it, :meth:`weight` is 1)."""
        return track_id in self._weights

    def update(self, track_id: Hashable, identity: str, original: np.ndarray, changed: np.ndarray) -> None:
        """Checks one face: ``original`` and ``changed`` are its aligned uint8 RGB crops before
        and after the change. Call when :meth:`due`."""
        vectors = np.asarray(self._embed(np.stack([original, changed])), np.float64)  # type: ignore[misc]
        reference = self._references[identity]
        before = float(vectors[0] @ reference)
        drop = before - float(vectors[1] @ reference)
        w = 1.0 if before < self.config.min_similarity else float(np.clip(1.0 - drop / self.config.tolerance, 0.0, 1.0))
        prev = self._weights.get(track_id)
        if prev is not None:
            w = self.config.smoothing * prev + (1.0 - self.config.smoothing) * w
        self._weights[track_id] = w

    def weight(self, track_id: Hashable) -> float:
        """The share of the change the track's face keeps (1 before its first check); advances
        the track's frame count."""
        self._frames[track_id] = self._frames.get(track_id, 0) + 1
        return self._weights.get(track_id, 1.0)

    def forget(self, live_track_ids: Iterable[Hashable]) -> None:
        """Drops the state of the tracks not in ``live_track_ids`` (ended tracks)."""
        live = set(live_track_ids)
        for state in (self._weights, self._frames):
            # list(): a check still running on the pipeline's worker may add a track's weight now
            for tid in [t for t in list(state) if t not in live]:
                state.pop(tid, None)
