"""Reference detail: the person's own fine detail, taken from the reference photos registered onto
the face by optical flow, added where the registration explains the face.

The restorer's shared-image attention copies from reference tokens near the query's own place in
the aligned crop (the position prior): the references' features land only where the 5-point
alignment puts them. A reference photo of the same person differs from the frame in expression,
pose and framing by a few pixels, which is enough that its detail falls next to, not on, the
face's features; and the lite model's own change is a smooth one (it brings back no eyelashes or
skin texture). This stage works at the pixel level instead:

1. each reference crop (aligned to the same template as the face) is blurred to about the
   degraded face's softness and brought to its brightness and contrast (one gain and offset for
   the whole crop), and the dense optical flow from the face to it is measured (OpenCV DIS on
   the grey pictures);
2. the reference's detail, ``reference - blur_sigma(reference)``, is warped along that flow onto
   the face;
3. its weight per pixel is how well the warped, blurred reference explains the face there:
   ``w = exp(-(e / tolerance)^2)``, ``e`` the grey difference between it and the face blurred
   the same way (both at a coarse scale, where compression noise and the face's own softness
   matter little), box-averaged over ``window``.
   A reference in another light, with another expression, or of another person leaves large
   differences, and its detail is left out there;
4. the face gets ``strength * mean over references of (w * warped detail)``, added to the
   restorer's output after the gates: scaled by the quality gate's weight (a clean face passing
   through unchanged gets none of it either), but not by the identity gate's, which judges the
   model's own change (the references' detail is the person's own; held back with a change that
   lowered identity, it took d14's identity gain from −0.009 to +0.024 when kept: see
   ``docs/video_eval.md``, "Session 20"); and before the temporal fusion (which steadies it with
   the rest of the change).

It only adds what the references hold and the face, at its coarse scale, agrees with: frames
of another clip of the same person, in the same light, give most (measured on the video
benchmark: Andrew Ng +0.26 dB and +0.05 identity over lite v7 alone), studio portraits with another
expression little, and another light next to nothing. ``docs/video_eval.md`` has the figures.

All of it runs on the CPU with OpenCV, on the restorer's crops (128 px for lite); a reference's
blurred grey picture and detail are prepared once per identity (:meth:`ReferenceDetail.prepare`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from streamrestore.settings import check_kinds

__all__ = ["ReferenceDetailConfig", "ReferenceDetail", "PreparedReferences"]

#: ITU-R BT.601 luma weights (cv2's RGB2GRAY)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
#: the crop side the pixel settings are given for (lite's); they scale with the crop
_BASE_SIDE = 128


@dataclass(frozen=True)
class ReferenceDetailConfig:
    """Settings of the reference detail stage (:class:`ReferenceDetail`).

    Args:
        strength: weight of the registered references' detail (0 turns the stage off). Default
            0.4: on the video benchmark (lite v7; references: frames of another clip, or photos)
            it raises Andrew Ng's identity to the ground truth from +0.02 to +0.08 over the input
            and his face PSNR by 0.26 dB, and leaves the clips whose references match less (other
            light, other expression) about as they were. 0.5 gave a little more identity, and
            made Andrew's flicker 1.17x the input's (bar 1.15); 0.7 1.19x
            (``docs/video_eval.md``).
        tolerance: grey-level difference between the face and the warped, blurred reference at
            which a reference's weight has fallen to 1/e (Gaussian fall-off). Default 12: a good
            registration of the same person in the same light differs by a few levels of
            compression noise; another expression or light by tens. 9 left a quarter of the
            identity gain out, 16 added flicker.
        sigma: the detail is the reference minus its Gaussian blur of this sigma, in pixels of a
            128-px crop (scaled with the crop). Default 1.5: the scales the degraded face has lost.
        match_blur: the reference is blurred with this sigma (pixels of a 128-px crop) before the
            flow is measured from the face to it, so that a sharp reference and a soft face look
            alike to the flow; for the weights both the warped reference and the face are blurred
            by it. Default 1.2 (the video benchmark's damage: blur 1.2 and 4x smaller, about this
            at the crop's scale).
        window: side of the box filter over the difference, in pixels of a 128-px crop (default
            9: a feature's width, so a weight does not switch per pixel).
        flow_preset: OpenCV DIS preset, ``"medium"`` (default) or ``"fast"``. Measured on one CPU
            thread, 4 references on a 128-px crop: 6.4 ms and 3.0 ms; ``"fast"`` registered less
            well (half the identity gain on the benchmark). Smoothing the flow (a Gaussian of
            2-6 px) took identity away and little flicker.
        flow_side: the face and the references are matched (flow and weights) on pictures shrunk
            to at most this many pixels, and the flow is scaled up to warp the detail at the
            crop's size (default 128: lite's crop, matched as it is; a 512-px crop costs the same
            as a 128-px one but for the warps).
    """

    strength: float = 0.4
    tolerance: float = 12.0
    sigma: float = 1.5
    match_blur: float = 1.2
    window: int = 9
    flow_preset: str = "medium"
    flow_side: int = 128

    def __post_init__(self) -> None:
        check_kinds(self)
        if not 0.0 <= self.strength <= 2.0:
            raise ValueError(f"strength must be in [0, 2], got {self.strength}")
        if self.tolerance <= 0:
            raise ValueError(f"tolerance must be positive, got {self.tolerance}")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        if self.match_blur < 0:
            raise ValueError(f"match_blur must be >= 0, got {self.match_blur}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.flow_preset not in ("fast", "medium"):
            raise ValueError(f"flow_preset must be 'fast' or 'medium', got {self.flow_preset!r}")
        if self.flow_side < 32:
            raise ValueError(f"flow_side must be >= 32, got {self.flow_side}")

    @property
    def enabled(self) -> bool:
        """Whether the stage adds anything."""
        return self.strength > 0.0

    @classmethod
    def off(cls) -> "ReferenceDetailConfig":
        """No reference detail."""
        return cls(strength=0.0)


class PreparedReferences(NamedTuple):
    """One identity's references, ready for :meth:`ReferenceDetail.detail`."""

    grey: list[np.ndarray]  # float32 (s, s): each reference's blurred grey picture at the matching size,
    # standardised (zero mean, unit std) so a face's brightness and contrast are one multiply-add away
    detail: list[np.ndarray]  # float32 (R, R, 3): each reference minus its blur, in 0-255 levels


class ReferenceDetail:
    """The reference detail stage (module docstring). Holds only its settings and an OpenCV flow
    object: one per :class:`~streamrestore.pipeline.FaceRestorer`; not thread-safe.

    Args:
        config: see :class:`ReferenceDetailConfig`.
    """

    def __init__(self, config: ReferenceDetailConfig = ReferenceDetailConfig()) -> None:
        self.config = config
        self._dis: cv2.DISOpticalFlow | None = None

    def _scaled(self, value: float, side: int) -> float:
        return value * side / _BASE_SIDE

    def _blur(self, image: np.ndarray, sigma: float) -> np.ndarray:
        return cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0 else image

    def _match_side(self, side: int) -> int:
        return min(side, self.config.flow_side)

    def _small(self, image: np.ndarray, s: int) -> np.ndarray:
        return image if image.shape[0] == s else cv2.resize(image, (s, s), interpolation=cv2.INTER_AREA)

    def prepare(self, crops: np.ndarray) -> PreparedReferences:
        """An identity's aligned reference crops, prepared once.

        Args:
            crops: (N, R, R, 3) uint8 RGB, aligned like the faces (``ReferenceSet.crops``).

        Raises:
            ValueError: ``crops`` is not (N, R, R, 3).
        """
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[3] != 3 or crops.shape[1] != crops.shape[2]:
            raise ValueError(f"expected (N, R, R, 3) reference crops, got shape {crops.shape}")
        side = crops.shape[1]
        s = self._match_side(side)
        sigma = self._scaled(self.config.sigma, side)
        blur = self._scaled(self.config.match_blur, s)
        greys, details = [], []
        for crop in crops:
            image = crop.astype(np.float32)
            grey = self._blur(self._small(image @ _LUMA, s), blur)
            greys.append((grey - grey.mean()) / np.float32(grey.std() + 1e-6))
            details.append(image - self._blur(image, sigma))
        return PreparedReferences(greys, details)

    def detail(self, face: np.ndarray, references: PreparedReferences) -> tuple[np.ndarray, float]:
        """The references' detail registered onto one face, weighted (not yet scaled by strength).

        Args:
            face: the aligned degraded face, uint8 (R, R, 3), the references' size.
            references: :meth:`prepare` of its identity.

        Returns:
            ``(detail, weight)``: float32 (R, R, 3) in 0-255 levels, and the mean weight over the
            face's inner part (how much the references were trusted; 0-1).

        Raises:
            ValueError: ``face`` is not the references' size.
        """
        side = face.shape[0]
        s = self._match_side(side)
        if face.shape != (side, side, 3) or (references.detail and references.detail[0].shape != face.shape):
            raise ValueError(f"face {face.shape} does not match the references "
                             f"{references.detail[0].shape if references.detail else None}")
        out = np.zeros((side, side, 3), np.float32)
        if not references.grey:
            return out, 0.0
        cfg = self.config
        if self._dis is None:
            preset = cv2.DISOPTICAL_FLOW_PRESET_FAST if cfg.flow_preset == "fast" else cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
            self._dis = cv2.DISOpticalFlow_create(preset)  # type: ignore[attr-defined]  # missing from OpenCV's stubs
        grey = self._small(face.astype(np.float32) @ _LUMA, s)
        grey_u8 = np.clip(grey + 0.5, 0, 255).astype(np.uint8)
        soft = self._blur(grey, self._scaled(cfg.match_blur, s))
        mean, std = float(grey.mean()), float(grey.std())
        k = max(1, round(self._scaled(cfg.window, s))) | 1
        grid = np.arange(s, dtype=np.float32)
        full_grid = np.arange(side, dtype=np.float32)
        inner = slice(s // 8, s - s // 8)
        weight_sum = 0.0
        for ref_grey, ref_detail in zip(references.grey, references.detail):
            # one gain and offset bring the reference to the face's brightness and contrast
            matched = ref_grey * np.float32(std) + np.float32(mean)
            flow = self._dis.calc(grey_u8, np.clip(matched + 0.5, 0, 255).astype(np.uint8), None)  # type: ignore[call-overload]
            map_x = flow[..., 0] + grid[None, :]
            map_y = flow[..., 1] + grid[:, None]
            warped = cv2.remap(matched, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            err = cv2.blur(np.abs(soft - warped), (k, k))
            e = err * np.float32(1.0 / cfg.tolerance)
            w = np.exp(-e * e)
            weight_sum += float(w[inner, inner].mean())
            if s != side:  # the flow and the weights at the crop's size
                flow = cv2.resize(flow, (side, side), interpolation=cv2.INTER_LINEAR) * np.float32(side / s)
                w = cv2.resize(w, (side, side), interpolation=cv2.INTER_LINEAR)
                map_x = flow[..., 0] + full_grid[None, :]
                map_y = flow[..., 1] + full_grid[:, None]
            out += w[..., None] * cv2.remap(ref_detail, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        n = len(references.grey)
        return out / np.float32(n), weight_sum / n

    def apply(self, face: np.ndarray, restored: np.ndarray, references: PreparedReferences | None) -> np.ndarray:
        """``restored`` plus ``strength`` times the registered detail, uint8.

        Args:
            face: the aligned degraded face the restorer got, uint8 (R, R, 3).
            restored: the restorer's output for it, uint8 (R, R, 3).
            references: :meth:`prepare` of the face's identity; None (no references): ``restored``
                is returned as it is.
        """
        if references is None or not self.config.enabled or not references.grey:
            return restored
        return self.add(restored, self.detail(face, references)[0])

    def add(self, restored: np.ndarray, detail: np.ndarray | None, weight: float = 1.0) -> np.ndarray:
        """``restored`` (uint8) plus ``weight * strength`` times ``detail`` (what :meth:`detail`
        gave for its face; None: nothing to add), uint8. The split from :meth:`detail` lets the
        pipeline register the references while the restorer runs: the detail needs only the input
        face. ``weight`` is the quality gate's (0: ``restored`` comes back as it is)."""
        if detail is None or not self.config.enabled or weight <= 0.0:
            return restored
        out = restored.astype(np.float32) + np.float32(self.config.strength * min(weight, 1.0)) * detail
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
