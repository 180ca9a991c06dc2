"""Temporal fusion of restored faces, per track, in aligned-crop space and then in frame space;
causal (no look-ahead).

A single-step restorer with fixed noise is deterministic, but tiny input changes (sensor noise,
compression, a crop that moved by a fraction of a pixel) still change its output a little every
frame, which shows as flicker, on a still face and on a moving one alike.

What is carried from frame to frame is the restorer's *change* ``d = output - input`` (after
the quality gate), not its output: the input always comes through as it is, only the detail
the restorer adds is steadied. For each track, at frame t:

1. the motion between the previous and the current aligned input crop is measured with dense
   optical flow (OpenCV DIS, on the crop's grey picture at ``flow_side`` pixels; ~2 ms for a
   128-px crop);
2. the previous (fused) change and the previous input are warped along it to frame t;
3. how well the warp explains the new input, per pixel, gives the weight of the carried change:
   ``keep = strength * exp(-(e / tolerance)^2)``, ``e`` the warped previous input's difference
   to the new input (mean over colours, box-averaged over ``window``); pixels the flow brings
   from outside the crop get ``keep = 0``;
4. ``d_fused = keep * warp(d_fused[t-1]) + (1 - keep) * d_t``;
5. the input itself is averaged the same way, with a tighter tolerance and scaled by the quality
   gate's weight (compression noise of a degraded face; a clean face is left as it is):
   ``x_avg = keep_x * warp(x_avg[t-1]) + (1 - keep_x) * input_t``, and the output is
   ``x_avg + d_fused``.

A still face is the special case of zero flow. Where the warp fails (an occlusion, a blink, a
mouth opening, a head turn the flow cannot follow) the warped input does not match, ``keep``
falls to ~0 and the new frame's change is used. Since only the change is carried (a few levels
of added detail, never the picture), whatever a wrong warp carries is bounded by it: no ghost
of a moved feature can appear. A scene cut gives the face a new track id
(``streamrestore.faces.track``), and a new track starts without state.

**Track memory** (``memory``): the fusion above only looks one frame back, so a face's
restoration still drifts with what each frame's degraded input happens to hold (a frame the
compression left worse gets a worse restoration, and a different identity to the eye). Each
track also keeps its restored output of every ``memory_every``-th frame, up to ``memory`` of
them (a window of ``memory * memory_every`` frames). Each remembered frame carries a map to the
current crop, moved along every frame's flow as it comes (composed, so no flow is measured per
remembered frame); every frame, each remembered output is warped along its map onto the face and
averaged in, weighted per pixel by how well it explains the current output at a coarse scale
(blurred colour difference, ``exp(-(e / memory_tolerance)^2)``, tight: a few levels), scaled by the
square of the quality gate's weight (clean faces keep nothing), with the current frame's weight
1. A blink, an opening mouth or a head turn that the remembered frame does not show differs by
tens of levels there and keeps the current frame. Only restorations of frames that came before
are used: still causal. Off by default (``memory=0``): it steadies small, heavily damaged faces,
whose crop holds little of its own, and softens large ones, whose crop holds real detail (see
``TemporalConfig.memory``).

The warps are bilinear: repeated every frame they soften the carried detail a little (measured:
the fine detail of the face region is ~7 % below fusion off on a degraded talking head); a
bicubic warp kept the detail but its overshoot, repeated, made the flicker worse (1.33-1.39x
instead of 1.16-1.18x the input's E_warp on the same clip).

**Frame space** (:class:`FrameFusion`, ``frame_strength``): after the faces are pasted, each
face's change to the picture (output - input over its crop's box) is fused once more, carried
along the optical flow of the input *frames*. The crop flow above follows the face as its 128-px
crop shows it, and the crop itself moves with the landmarks' small errors; on a face several
times larger than its crop the pasted detail then shimmers against the face by a few frame
pixels (d13 and d14 of the video benchmark, ~600 px: 1.22x their input's flicker under the input
frames' flow, the shared ``flicker.py``'s measure). Carried along the frames' own flow, the
detail stays on the face as the frame shows it moving. It runs on the host on the frame the
pipeline returns, on either frame path.

:meth:`TemporalSmoother.smooth` works on uint8 crops with OpenCV (host frame path);
:meth:`TemporalSmoother.smooth_tensor` does the same on (3, R, R) tensors with torch ops where
the crops are (device frame path). Both measure the flow with DIS on the CPU, from the same
small grey picture (a 128-px grey crop is 64 KiB to copy), and warp, weigh and blend on their
side: host and device agree to rounding (``tests/test_temporal.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Hashable, Iterable, NamedTuple, Sequence

import cv2
import numpy as np

from streamrestore.pixels import shrink_interpolation
from streamrestore.settings import check_kinds

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["FrameFusion", "TemporalConfig", "TemporalSmoother"]

#: ITU-R BT.601 luma weights (cv2's RGB2GRAY): the grey picture the flow is measured on
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class TemporalConfig:
    """Settings of the temporal fusion (:class:`TemporalSmoother`).

    Args:
        strength: the most weight the previous frame's motion-compensated change keeps; 0 turns
            the fusion off. Default 0.8 (a time constant of ~0.15 s at 30 fps where the motion
            is followed), with ``denoise`` 0.7: with lite v7, measured with
            ``benchmarks/bench_temporal.py`` on six degraded clips (first 90 frames; fast head
            turns and two hard cuts among them; ``docs/temporal.md``), the output's flicker
            (E_warp, flow from the input) is 0.73-0.99x the input's (1.04-1.73x with the fusion
            off) and face PSNR within 0.03 dB of the fusion off or above it on every clip. The
            earlier default 0.9 / 0.9 (lite v5, v6) averaged away up to 0.21 dB of lite v7's
            detail (the fast head turns of the xportrait clip); 0.7 / 0.7 let Andrew Ng's
            flicker reach the input's (1.00x).
        tolerance: warp error of the input, in 0-255 levels averaged over ``window``, at which
            the carried change's weight has fallen to ``strength / e`` (Gaussian fall-off: full
            weight for the small error of a good warp, ~0 from twice this on). Default 30:
            compression noise and a good warp of a degraded face err by a few levels; an
            occlusion or a lost feature by tens. 6-12 gave 1.21-1.26x on Obama (90 % of the
            carried change is dropped where the mouth and eyes move).
        window: side of the box filter that averages the warp error, in crop pixels at 512
            (scaled with the crop size; default 9, i.e. 3 px for a 128-px crop).
        flow_side: the optical flow is measured on the crop shrunk to at most this many pixels
            (default 128: the crop size of the default ``lite`` model; a 512-px crop is
            measured at 128 and the flow scaled up).
        denoise: the most weight the previous frame's motion-compensated *input* keeps in a
            recursive average of the input crops (temporal denoising of compression noise and
            flicker), scaled per face by the quality gate's weight: a clean face, which the gate
            passes through, is not averaged at all. 0 turns it off. Default 0.7 (see
            ``strength``; 0.9 until lite v7: lite v4's noisier output needed more of it).
        denoise_tolerance: like ``tolerance``, for the input average (default 12 levels: only
            where the warp explains the new input to within compression noise; a moving mouth
            or eye, off by tens of levels, takes the new frame).
        denoise_sigma: the input average carries the difference between the warped average and
            the new input split in two by a Gaussian of this sigma (pixels of a 128-px crop,
            scaled with the crop): the coarse part whole, the fine part only by
            ``denoise_fine``. Compression noise, what the average is for, is mostly coarse (the
            blocks of a small video, scaled up); the flow's small misregistrations are fine (an
            edge a fraction of a pixel off), and on a clean, soft face that the quality gate
            reads as damaged the average carried them into every frame (the clean d14 clip:
            1.26x its own E_warp). Default 1.0 (``docs/temporal.md``, "Session 21").
        denoise_fine: the share of the fine part that is carried (default 0.3; 1 carries the
            whole difference, the behaviour until session 21; 0 only the coarse part, which
            left a degraded talking head's compression flicker at 1.16x the input's).
        memory: how many earlier restored frames each track keeps for the track memory (module
            docstring); 0 (the default) turns it off. 4 (with ``memory_every`` 8) on the video
            benchmark (lite v7 with the reference detail; faces of ~200 px, 4x degraded): Andrew
            Ng's identity spread under the degraded input's (0.039 against 0.042; 0.043 without
            it), identity to the ground truth +0.053 over the input on happyenglish (+0.037
            without) and -0.001 on Obama (-0.006), Obama's face PSNR +0.03 dB, Andrew's -0.08 dB,
            flicker 0.84-1.14x the input's. But on two held-out clips with large faces (~600 px,
            the same damage, so the 128-px crop is still sharp) it cost 0.09 and 0.17 dB face
            PSNR (d14's gain over the input went from +0.14 to -0.03 dB), so it is not on by
            default. Averaging only the restorer's change instead of the output kept those
            clips as they were but made Andrew's spread worse (0.049) (``docs/temporal.md``,
            "Track memory").
        memory_every: a track's restored output is remembered every this many frames (default
            8: with ``memory=4``, the last ~32 frames, about a second at 30 fps; 8 every 4 gave
            the same for twice the cost).
        memory_tolerance: blurred colour difference (0-255 levels, mean over the colours and a
            9-px box at a 128-px crop) between the current output and a remembered one warped
            onto it, at which the remembered one's weight has fallen to 1/e. Default 5: the same
            face where the carried map holds differs by a level or two at that scale; 8 averaged
            in more misregistered detail (Andrew Ng -0.03 dB), 3.5 kept less identity.
        frame_strength: the most weight the frame-space fusion (:class:`FrameFusion`) gives the
            previous frame's change to the picture, carried along the optical flow of the
            input frames; 0 turns it off. Default 0.8: on the video benchmark and two more
            held-out clips (lite v9, 48 frames) it took the flicker of the three soft faces over
            #12's bar (E_warp with the input's flow, as the shared ``flicker.py`` measures it) from
            1.22 / 1.23 / 1.31x the input's to 1.03 / 1.09 / 0.99x, and Andrew Ng's (with the
            clean clip's flow) from 1.15x to 1.13x; face PSNR within 0.02 dB of it off on nine of
            ten clips (d11 -0.05) (``docs/temporal.md``, "Session 33"). 0.9 gave less flicker and
            less PSNR.
        frame_tolerance: the input frames' warp error, in grey levels at the flow's size, at
            which the carried change's weight has fallen to ``frame_strength / e``; the error is
            the larger of the signed difference averaged over 5 px and a quarter of its average
            size (:meth:`FrameFusion._flow`). Default 1: the change is carried only where the
            flow explains the new input almost exactly; on the video benchmark 3 (of the size
            alone) carried more where it was off by a level or two and left Andrew Ng's flicker
            (clean clip's flow) at 1.17x, 1 at 1.13-1.14x (``docs/temporal.md``, "Session 33").
            A moving mouth, a blink or a cut miss by tens.
        frame_flow_side: the flow of the frame-space fusion (OpenCV DIS, ultrafast preset) is
            measured on the face's box shrunk to at most this many pixels. Default 384: on d14's
            512-px frames (lite v9's saved output fused afterwards) 256 left 1.05x the input's
            flicker, 320 1.04x, 384 1.01x; the medium preset at 256 gave 1.00x for 4x the time
            (6.6 against 1.5 ms). The whole stage costs ~2 ms per frame for a 280-px face box
            and ~8 ms for a 600-px one (one 720p frame, 4:2:0).
    """

    strength: float = 0.8
    tolerance: float = 30.0
    window: int = 9
    flow_side: int = 128
    denoise: float = 0.7
    denoise_tolerance: float = 12.0
    denoise_sigma: float = 1.0
    denoise_fine: float = 0.3
    memory: int = 0
    memory_every: int = 8
    memory_tolerance: float = 5.0
    frame_strength: float = 0.8
    frame_tolerance: float = 1.0
    frame_flow_side: int = 384

    def __post_init__(self) -> None:
        check_kinds(self)
        if not 0.0 <= self.strength < 1.0:
            raise ValueError(f"strength must be in [0, 1), got {self.strength}")
        if self.tolerance <= 0:
            raise ValueError(f"tolerance must be positive, got {self.tolerance}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.flow_side < 16:
            raise ValueError(f"flow_side must be >= 16, got {self.flow_side}")
        if not 0.0 <= self.denoise < 1.0:
            raise ValueError(f"denoise must be in [0, 1), got {self.denoise}")
        if self.denoise_tolerance <= 0:
            raise ValueError(f"denoise_tolerance must be positive, got {self.denoise_tolerance}")
        if self.denoise_sigma < 0:
            raise ValueError(f"denoise_sigma must be >= 0, got {self.denoise_sigma}")
        if not 0.0 <= self.denoise_fine <= 1.0:
            raise ValueError(f"denoise_fine must be in [0, 1], got {self.denoise_fine}")
        if self.memory < 0:
            raise ValueError(f"memory must be >= 0, got {self.memory}")
        if self.memory_every < 1:
            raise ValueError(f"memory_every must be >= 1, got {self.memory_every}")
        if self.memory_tolerance <= 0:
            raise ValueError(f"memory_tolerance must be positive, got {self.memory_tolerance}")
        if not 0.0 <= self.frame_strength < 1.0:
            raise ValueError(f"frame_strength must be in [0, 1), got {self.frame_strength}")
        if self.frame_tolerance <= 0:
            raise ValueError(f"frame_tolerance must be positive, got {self.frame_tolerance}")
        if self.frame_flow_side < 16:
            raise ValueError(f"frame_flow_side must be >= 16, got {self.frame_flow_side}")

    @classmethod
    def off(cls) -> "TemporalConfig":
        """No fusion at all: every frame's restoration as it is."""
        return cls(strength=0.0, denoise=0.0, memory=0, frame_strength=0.0)

    @property
    def enabled(self) -> bool:
        """Whether anything is fused at all (in crop space or in frame space)."""
        return self.crop_enabled or self.frame_strength > 0.0

    @property
    def crop_enabled(self) -> bool:
        """Whether :class:`TemporalSmoother` fuses anything (the change, the input, or remembered
        frames, in aligned-crop space)."""
        return self.strength > 0.0 or self.denoise > 0.0 or self.memory > 0


class _State(NamedTuple):
    # Any: a numpy array on the host path, a tensor on the device path
    original: Any  # float32 (R, R, 3) array in 0-255, or (3, R, R) tensor in 0-255
    change: Any  # the fused change, same layout
    denoised: Any  # the recursive average of the input, same layout
    grey: np.ndarray  # uint8 (s, s): what the next flow is measured against
    zero: bool  # the change is zero everywhere (a clean face the quality gate passed through)


#: the track memory's matching scale, in pixels of a 128-px crop (scaled with the flow size): a
#: 1-px Gaussian blur and a 9-px box over the difference, so that where a feature is decides a
#: remembered frame's weight, not compression noise or the restorer's finest detail
_MEMORY_BLUR = 1.0
_MEMORY_WINDOW = 9


class _Remembered:
    """One restored frame in a track's memory."""

    __slots__ = ("output", "soft", "map", "valid")

    def __init__(self, output: Any, soft: np.ndarray) -> None:
        self.output = output  # float32 (R, R, 3) array in 0-255, or (3, R, R) tensor in 0-255
        self.soft = soft  # float32 (s, s, 3): its blurred picture at the flow size
        # float32 (s, s, 2): where each pixel of the current crop lies in this frame's, (x, y) at
        # the flow size; one array, so that one remap moves both coordinates
        self.map = _identity_map(soft.shape[0])
        # float32 (s, s): 1 where that position is inside this frame's crop, falling to 0 where
        # the motion brought in what it never showed (a separate channel: a marker value mixed
        # bilinearly with a position next to it would give a wrong position, not "outside")
        self.valid = np.ones(soft.shape[:2], np.float32)


def _identity_map(s: int) -> np.ndarray:
    return _identity_grid((s, s))


def _remap(image: np.ndarray, xy: np.ndarray, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Bilinear ``cv2.remap`` along an (H, W, 2) float32 map of (x, y) source positions."""
    # OpenCV's stubs want a second map; remap takes None when the first holds (x, y) pairs
    remap: Any = cv2.remap
    return remap(image, xy, None, cv2.INTER_LINEAR, borderMode=border, borderValue=0.0)


class _Memory:
    """A track's remembered restored frames, oldest first, and how many frames it has seen."""

    __slots__ = ("frames", "items")

    def __init__(self) -> None:
        self.frames = 0
        self.items: list[_Remembered] = []


class TemporalSmoother:
    """Per-track state of the temporal fusion (see the module docstring); one per
    :class:`~streamrestore.pipeline.FaceRestorer`. Not thread-safe.

    Args:
        config: see :class:`TemporalConfig`.
    """

    def __init__(self, config: TemporalConfig = TemporalConfig()) -> None:
        self.config = config
        self._last: dict[int, _State] = {}
        self._memory: dict[int, _Memory] = {}
        self._dis: cv2.DISOpticalFlow | None = None
        self._gaussians: dict[tuple, tuple[Any, Any]] = {}  # the input average's kernels, per size and device

    # --- shared by both paths -----------------------------------------------------------

    def _flow_size(self, r: int) -> int:
        return min(r, self.config.flow_side)

    def _window(self, r: int) -> int:
        return max(1, round(self.config.window * r / 512)) | 1

    def _small_flow(self, grey: np.ndarray, prev_grey: np.ndarray) -> np.ndarray:
        """(s, s, 2) float32 flow from the current crop to the previous one at the flow size:
        the current pixel (x, y) was at (x + fx, y + fy) in the previous crop."""
        # ignores: OpenCV's type stubs lack DISOpticalFlow_create (in cv2 at runtime) and a calc
        # without an initial flow (None: a new array)
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)  # type: ignore[attr-defined]
        return self._dis.calc(grey, prev_grey, None)  # type: ignore[call-overload]

    @staticmethod
    def _to_crop(flow: np.ndarray, r: int) -> np.ndarray:
        """A flow at the flow size, scaled to the (R, R) crop."""
        s = flow.shape[0]
        if s == r:
            return flow
        return cv2.resize(flow, (r, r), interpolation=cv2.INTER_LINEAR) * np.float32(r / s)

    def _denoise_sigma(self, r: int) -> float:
        """The sigma that splits the input average's difference for an R-px crop; 0: no split."""
        if self.config.denoise_fine >= 1.0:
            return 0.0
        return self.config.denoise_sigma * r / 128

    def _carried(self, difference: np.ndarray) -> np.ndarray:
        """What the input average carries of its (R, R, 3) difference (``denoise_sigma``, ``denoise_fine``)."""
        sigma = self._denoise_sigma(difference.shape[0])
        if sigma <= 0:
            return difference
        coarse = cv2.GaussianBlur(difference, (0, 0), sigma)
        return coarse + np.float32(self.config.denoise_fine) * (difference - coarse)

    def _carried_tensor(self, difference: "torch.Tensor") -> "torch.Tensor":
        """:meth:`_carried` for a (3, R, R) tensor: OpenCV's Gaussian kernel for this sigma and
        its border (reflect-101, torch's "reflect"), as a separable convolution where the tensor is."""
        import torch
        import torch.nn.functional as F

        sigma = self._denoise_sigma(difference.shape[-1])
        if sigma <= 0:
            return difference
        c = difference.shape[0]
        size = int(round(sigma * 8 + 1)) | 1  # OpenCV's kernel size for a float picture and ksize (0, 0)
        key = (size, sigma, c, difference.device, difference.dtype)
        if key not in self._gaussians:  # built once: no host-to-device copy per face and frame
            kernel = torch.from_numpy(cv2.getGaussianKernel(size, sigma, cv2.CV_32F)[:, 0].copy()).to(difference)
            self._gaussians[key] = (kernel.view(1, 1, 1, size).expand(c, 1, 1, size).contiguous(),
                                    kernel.view(1, 1, size, 1).expand(c, 1, size, 1).contiguous())
        across, down = self._gaussians[key]
        half = size // 2
        coarse = F.pad(difference[None], (half, half, half, half), mode="reflect")
        coarse = F.conv2d(F.conv2d(coarse, across, groups=c), down, groups=c)[0]
        return coarse + self.config.denoise_fine * (difference - coarse)

    # --- track memory, shared by both paths ----------------------------------------------

    @staticmethod
    def _soft(small_rgb: np.ndarray) -> np.ndarray:
        """float32 (s, s, 3): a float32 (s, s, 3) output in 0-255 at the flow size, blurred."""
        rgb = np.ascontiguousarray(small_rgb, dtype=np.float32)
        return cv2.GaussianBlur(rgb, (0, 0), _MEMORY_BLUR * rgb.shape[0] / 128)

    def _recall(self, track_id: int, soft: np.ndarray, flow: np.ndarray | None, gate: float
                ) -> tuple[_Memory, list[np.ndarray]]:
        """Moves the track's remembered frames along this frame's flow and weighs them.

        Args:
            soft: :meth:`_soft` of this frame's output (before the memory).
            flow: this frame's flow to the previous one at the flow size (None: there is no
                previous frame, and the memory starts again).
            gate: the scale of every remembered frame's weight (:meth:`_memory_gate` of the quality
                gate's weight).

        Returns:
            The track's memory and, per remembered frame, its float32 (s, s) weight (none when
            ``gate`` is 0).
        """
        memory = self._memory.setdefault(track_id, _Memory())
        s = soft.shape[0]
        if flow is None:
            memory.items.clear()
            memory.frames = 0
        elif memory.items:
            # compose: the current pixel was at p + flow(p) in the previous crop, whose own map
            # says where that is in the remembered one
            moved = flow + _identity_map(s)
            for item in memory.items:
                item.map = _remap(item.map, moved)
                item.valid = _remap(item.valid, moved, cv2.BORDER_CONSTANT)
        weights: list[np.ndarray] = []
        if gate <= 0.0:
            return memory, weights
        k = max(1, round(_MEMORY_WINDOW * s / 128)) | 1
        # the mean over colours and the tolerance folded into one linear transform
        mean_of_colours = np.full((1, 3), 1.0 / (3.0 * self.config.memory_tolerance), np.float32)
        for item in memory.items:
            warped = _remap(item.soft, item.map)
            # colour counts: a grey match of another colour is no match
            e = cv2.transform(cv2.absdiff(soft, warped), mean_of_colours)
            if k > 1:
                e = cv2.blur(e, (k, k))
            w = np.exp(-e * e) * item.valid
            weights.append(w * np.float32(gate) if gate < 1.0 else w)
        return memory, weights

    @staticmethod
    def _memory_gate(gate: float) -> float:
        """The remembered frames' weight scale for a face the quality gate gave ``gate``: its
        square, so a face the gate passes only partly (nearly clean) is averaged over time less
        than a degraded one (furious's clean clip, which the gate passes partly on some frames,
        lost 1.8 dB of face PSNR to the memory at ``gate`` itself, 1.5 dB at its square)."""
        g = min(max(float(gate), 0.0), 1.0)
        return g * g

    def _remember(self, memory: _Memory, output: Any, soft: np.ndarray, gate: float) -> None:
        """Keeps this frame's output (before the memory) every ``memory_every``-th frame."""
        cfg = self.config
        if gate > 0.0 and memory.frames % cfg.memory_every == 0:
            memory.items.append(_Remembered(output, soft))
            del memory.items[:-cfg.memory]
        memory.frames += 1

    @staticmethod
    def _crop_map(item: _Remembered, r: int) -> np.ndarray:
        """A remembered frame's (R, R, 2) map at the crop, in crop pixels."""
        s = item.map.shape[0]
        if s == r:
            return item.map
        f = np.float32(r / s)
        return cv2.resize((item.map + 0.5) * f - 0.5, (r, r), interpolation=cv2.INTER_LINEAR)

    @staticmethod
    def _grey(small_rgb: np.ndarray) -> np.ndarray:
        """uint8 grey of a float32 (s, s, 3) picture in 0-255."""
        g = small_rgb[..., 0] * _LUMA[0] + small_rgb[..., 1] * _LUMA[1] + small_rgb[..., 2] * _LUMA[2]
        return np.clip(g + 0.5, 0, 255).astype(np.uint8)

    def reset(self, track_id: int | None = None) -> None:
        """Drops the state of one track, or of all; its next frame starts afresh.

        Args:
            track_id: the track (None: every track).
        """
        if track_id is None:
            self._last.clear()
            self._memory.clear()
        else:
            self._last.pop(track_id, None)
            self._memory.pop(track_id, None)

    def forget(self, live_track_ids: Iterable[int]) -> None:
        """Drops the state of the tracks not in ``live_track_ids`` (ended tracks).

        Args:
            live_track_ids: the tracks still going.
        """
        live = set(live_track_ids)
        for tid in [t for t in self._last if t not in live]:
            del self._last[tid]
        for tid in [t for t in self._memory if t not in live]:
            del self._memory[tid]

    # --- host path ----------------------------------------------------------------------

    def smooth(self, track_id: int, original: np.ndarray, restored: np.ndarray, denoise_weight: float = 1.0
               ) -> np.ndarray:
        """The fused restored crop of one face; remembers this frame for the track's next.

        Args:
            track_id: the face's track (its state is kept per track).
            original: the aligned input crop, uint8 (R, R, 3).
            restored: the restorer's output for it (uint8, same shape).
            denoise_weight: in [0, 1], scales the input averaging for this face (the pipeline
                passes the quality gate's weight).

        Returns:
            The fused crop, uint8 (R, R, 3); ``restored`` itself when the fusion is off or
            there is nothing to fuse.

        Raises:
            ValueError: ``original`` and ``restored`` differ in shape.
        """
        cfg = self.config
        if not cfg.crop_enabled:
            return restored
        if original.shape != restored.shape:
            raise ValueError(f"original {original.shape} and restored {restored.shape} differ in shape")
        r = original.shape[0]
        x = original.astype(np.float32)
        change = restored.astype(np.float32) - x
        s = self._flow_size(r)
        small = x if s == r else cv2.resize(x, (s, s), interpolation=cv2.INTER_AREA)
        grey = self._grey(small)
        prev = self._last.get(track_id)
        denoise = cfg.denoise * min(max(float(denoise_weight), 0.0), 1.0)
        zero = not change.any() and denoise == 0.0
        if zero and (prev is None or prev.zero):  # nothing to carry, nothing to fuse: no flow needed
            self._last[track_id] = _State(x, change, x, grey, True)
            self._memory.pop(track_id, None)  # a clean face: nothing to remember either
            return restored
        denoised = x
        small_flow = None
        if prev is not None and isinstance(prev.original, np.ndarray) and prev.original.shape == x.shape:
            small_flow = self._small_flow(grey, prev.grey)
            flow = self._to_crop(small_flow, r)
            grid = np.arange(r, dtype=np.float32)
            map_x = flow[..., 0] + grid[None, :]
            map_y = flow[..., 1] + grid[:, None]
            warp = lambda image: cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR,  # noqa: E731
                                           borderMode=cv2.BORDER_REPLICATE)
            err = np.abs(x - warp(prev.original)).mean(axis=2)
            k = self._window(r)
            if k > 1:
                err = cv2.blur(err, (k, k))
            inside = ((map_x >= 0) & (map_x <= r - 1) & (map_y >= 0) & (map_y <= r - 1)).astype(np.float32)
            if cfg.strength > 0:
                e = err * np.float32(1.0 / cfg.tolerance)
                keep = np.float32(cfg.strength) * np.exp(-e * e) * inside
                change += keep[..., None] * (warp(prev.change) - change)
            if denoise > 0:
                e = err * np.float32(1.0 / cfg.denoise_tolerance)
                keep = np.float32(denoise) * np.exp(-e * e) * inside
                denoised = x + keep[..., None] * self._carried(warp(prev.denoised) - x)
        self._last[track_id] = _State(x, change, denoised, grey, False)
        out = denoised + change
        if cfg.memory > 0:  # the memory keeps and matches pictures in 0-255
            out = self._fuse_memory(track_id, np.clip(out, 0, 255), small_flow, self._memory_gate(denoise_weight))
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    def _fuse_memory(self, track_id: int, out: np.ndarray, flow: np.ndarray | None, gate: float) -> np.ndarray:
        """The track memory on the host: ``out`` (float32 (R, R, 3), 0-255) averaged with the
        remembered outputs warped onto it, each by its weight, the current one by 1."""
        r = out.shape[0]
        s = self._flow_size(r)
        soft = self._soft(out if s == r else cv2.resize(out, (s, s), interpolation=cv2.INTER_AREA))
        memory, weights = self._recall(track_id, soft, flow, gate)
        fused = out
        if weights:
            total = np.ones((r, r), np.float32)
            fused = out.copy()
            for item, w in zip(memory.items, weights):
                if s != r:
                    w = cv2.resize(w, (r, r), interpolation=cv2.INTER_LINEAR)
                fused += w[..., None] * _remap(item.output, self._crop_map(item, r))
                total += w
            fused /= total[..., None]
        self._remember(memory, out, soft, gate)
        return fused

    # --- device path --------------------------------------------------------------------

    def smooth_tensor(self, track_id: int, original: "torch.Tensor", restored: "torch.Tensor",
                      denoise_weight: float = 1.0) -> "torch.Tensor":
        """:meth:`smooth` for (3, R, R) float crops in [0, 1] on any torch device (the
        device-resident frame path): the flow is measured on the CPU from the same small grey
        picture, the warp, weights and blend run with torch ops where the crops are.

        Args:
            track_id: the face's track (its state is kept per track).
            original: the aligned input crop, (3, R, R) in [0, 1].
            restored: the restorer's output for it (same shape).
            denoise_weight: as for :meth:`smooth`.

        Returns:
            The fused crop, (3, R, R) in [0, 1] with ``restored``'s dtype; ``restored`` itself
            when the fusion is off or there is nothing to fuse.

        Raises:
            ValueError: ``original`` and ``restored`` differ in shape.
        """
        import torch
        import torch.nn.functional as F

        cfg = self.config
        if not cfg.crop_enabled:
            return restored
        if original.shape != restored.shape:
            raise ValueError(f"original {tuple(original.shape)} and restored {tuple(restored.shape)} differ in shape")
        r = original.shape[-1]
        x = original.float() * 255.0
        change = restored.float() * 255.0 - x
        s = self._flow_size(r)
        small = x if s == r else F.interpolate(x[None], size=(s, s), mode="area")[0]
        grey = self._grey(small.permute(1, 2, 0).to("cpu", torch.float32).numpy())
        prev = self._last.get(track_id)
        denoise = cfg.denoise * min(max(float(denoise_weight), 0.0), 1.0)
        zero = not bool(change.any()) and denoise == 0.0
        if zero and (prev is None or prev.zero):
            self._last[track_id] = _State(x, change, x, grey, True)
            self._memory.pop(track_id, None)
            return restored
        denoised = x
        small_flow = None
        if prev is not None and isinstance(prev.original, torch.Tensor) and prev.original.shape == x.shape:
            small_flow = self._small_flow(grey, prev.grey)
            flow = torch.from_numpy(self._to_crop(small_flow, r)).to(x.device)
            grid = torch.arange(r, device=x.device, dtype=torch.float32)
            map_x = flow[..., 0] + grid[None, :]
            map_y = flow[..., 1] + grid[:, None]
            # grid_sample's align_corners=True puts -1 and 1 on the first and last pixel centres,
            # as cv2.remap's pixel coordinates do; "border" is BORDER_REPLICATE
            norm = torch.stack([map_x, map_y], dim=-1) * (2.0 / (r - 1)) - 1.0
            # one grid_sample for every picture this face needs warped (the input always)
            carried = [prev.original] + [prev.change] * (cfg.strength > 0) + [prev.denoised] * (denoise > 0)
            warped = F.grid_sample(torch.cat(carried)[None], norm[None], mode="bilinear", padding_mode="border",
                                   align_corners=True)[0]
            warped_in, rest = warped[:3], warped[3:]
            err = (x - warped_in).abs().mean(dim=0, keepdim=True)[None]
            k = self._window(r)
            if k > 1:
                err = F.avg_pool2d(F.pad(err, (k // 2,) * 4, mode="reflect"), k, stride=1)
            err = err[0]
            inside = ((map_x >= 0) & (map_x <= r - 1) & (map_y >= 0) & (map_y <= r - 1)).float()
            if cfg.strength > 0:
                warped_change, rest = rest[:3], rest[3:]
                e = err * (1.0 / cfg.tolerance)
                keep = cfg.strength * torch.exp(-e * e) * inside
                change = change + keep * (warped_change - change)
            if denoise > 0:
                e = err * (1.0 / cfg.denoise_tolerance)
                keep = denoise * torch.exp(-e * e) * inside
                denoised = x + keep * self._carried_tensor(rest - x)
        self._last[track_id] = _State(x, change, denoised, grey, False)
        out = denoised + change
        if cfg.memory > 0:  # the memory keeps and matches pictures in 0-255
            out = self._fuse_memory_tensor(track_id, out.clamp(0.0, 255.0), small_flow,
                                           self._memory_gate(denoise_weight))
        return (out * (1.0 / 255.0)).clamp(0.0, 1.0).to(restored.dtype)

    def _fuse_memory_tensor(self, track_id: int, out: "torch.Tensor", flow: np.ndarray | None, gate: float
                            ) -> "torch.Tensor":
        """:meth:`_fuse_memory` for a (3, R, R) tensor in 0-255: the weights come from the same
        small blurred pictures on the CPU, the warps are one ``grid_sample`` where the crops are."""
        import torch
        import torch.nn.functional as F

        r = out.shape[-1]
        s = self._flow_size(r)
        small = out if s == r else F.interpolate(out[None], size=(s, s), mode="area")[0]
        soft = self._soft(small.permute(1, 2, 0).to("cpu", torch.float32).numpy())
        memory, weights = self._recall(track_id, soft, flow, gate)
        fused = out
        if weights:
            maps = np.stack([self._crop_map(item, r) for item in memory.items])
            grid = torch.from_numpy(maps).to(out.device) * (2.0 / (r - 1)) - 1.0
            w = torch.from_numpy(np.stack(weights))[:, None].to(out.device)
            if s != r:
                w = F.interpolate(w, size=(r, r), mode="bilinear", align_corners=False)
            outputs = torch.stack([item.output for item in memory.items])
            warped = F.grid_sample(outputs, grid, mode="bilinear", padding_mode="border", align_corners=True)
            fused = (out + (w * warped).sum(dim=0)) / (1.0 + w.sum(dim=0))
        self._remember(memory, out, soft, gate)
        return fused


#: the smallest face box the frame-space fusion measures a flow on (smaller ones are left as they are)
_MIN_FLOW_SIDE = 16


class _FrameState(NamedTuple):
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the frame (x0, y0 even), end exclusive
    changes: list[np.ndarray]  # the fused change of each plane over the box at its step, float32
    zero: bool  # no change anywhere (a clean face the gates passed through): nothing to carry


class FrameFusion:
    """The frame-space fusion (the module docstring's second part): each face's change to the
    picture, carried along the optical flow of the input *frames*. One per
    :class:`~streamrestore.pipeline.FaceRestorer`; causal; not thread-safe.

    The crop-space fusion moves the change by the flow between two aligned 128-px crops: for a
    face larger than its crop that flow is coarser than the picture the change lands in, and
    the crop itself moves with the landmarks' small errors, so the detail the restorer adds
    shimmers against the face by a fraction of a crop pixel, several frame pixels (a 600-px
    face: 1.22x its input's flicker under the input frames' flow). Here, after the faces are
    pasted, the change ``output - input`` over each face's box (every plane at its own
    resolution: RGB, or Y and the half-size U and V of a 4:2:0 frame) is blended with the
    previous frame's fused change warped along the flow between the two input frames, by how
    well that flow explains the new input (``keep = frame_strength * exp(-(e /
    frame_tolerance)^2)``, ``e`` the input's grey warp error, see ``_flow``): the detail follows the face as the
    frame shows it moving, and a mouth, a blink or a cut the flow misses takes the new frame.
    Where the input is noisy (a camera's sensor noise, new every frame) the error's average
    removes most of the noise, so the fusion keeps working at a lower weight.

    Args:
        config: its ``frame_*`` settings (see :class:`TemporalConfig`).
    """

    #: side of the box filter over the warp error, in pixels at the flow's size
    WINDOW = 5
    #: how much more of the warp error's mean size than of its mean the tolerance allows (see ``_flow``)
    ABSOLUTE_SLACK = 4.0

    def __init__(self, config: TemporalConfig = TemporalConfig()) -> None:
        self.config = config
        self._last: dict[Hashable, _FrameState] = {}
        self._grey: tuple[int, np.ndarray] | None = None  # (frame index, its grey picture)
        self._dis: cv2.DISOpticalFlow | None = None
        self._grid_cache = _identity_grid((0, 0))

    @property
    def active(self) -> bool:
        return self.config.frame_strength > 0.0

    def _grid(self, shape: tuple[int, int]) -> np.ndarray:
        """:func:`_identity_grid` of ``shape``: a view of one kept grid, grown when too small (a
        face's box changes its size a little every frame)."""
        h, w = shape
        if self._grid_cache.shape[0] < h or self._grid_cache.shape[1] < w:
            self._grid_cache = _identity_grid((max(h, self._grid_cache.shape[0]), max(w, self._grid_cache.shape[1])))
        return self._grid_cache[:h, :w]

    def forget(self, live_track_ids: Iterable[Hashable]) -> None:
        """Drops the state of the tracks not in ``live_track_ids`` (ended tracks)."""
        live = set(live_track_ids)
        for tid in [t for t in self._last if t not in live]:
            del self._last[tid]

    def fuse(self, index: int, pixels: Any, planes: Sequence[tuple[np.ndarray, int]],
             faces: Sequence[tuple[Hashable, tuple[int, int, int, int] | None]]) -> None:
        """Fuses the faces of frame ``index`` in place.

        Args:
            index: the frame's number in its stream; the state carries over only from frame
                ``index - 1`` (a frame without faces in between starts afresh).
            pixels: the input frame (``RgbPixels`` or ``Yuv420Pixels``).
            planes: the restored frame's writable (plane, step) views
                (:func:`streamrestore.pixels.frame_planes`), of the input's layout.
            faces: (track id, box) of each restored face: the frame box its crop covers
                (:func:`streamrestore.blend.crop_box`; None: outside the frame, skipped).
        """
        h, w = pixels.shape[:2]
        grey = pixels.gray(w, h)
        prev = self._grey[1] if self._grey is not None and self._grey[0] == index - 1 else None
        if prev is not None and prev.shape != grey.shape:
            prev = None
        before = pixels.sampled_planes()
        if len(before) != len(planes):
            raise ValueError(f"the restored frame has {len(planes)} planes, its input {len(before)}")
        for track_id, box in faces:
            if box is not None:
                self._fuse_face(track_id, box, grey, prev, before, planes)
        # a copy: a decoder may reuse the buffer of a 4:2:0 frame's luma once the frame is gone
        self._grey = (index, grey.copy())

    def _flow_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the flow of a face box of this size is measured at."""
        scale = min(1.0, self.config.frame_flow_side / max(width, height))
        if scale >= 1.0:
            return width, height
        return max(8, round(width * scale)), max(8, round(height * scale))

    def _flow(self, grey: np.ndarray, prev: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(flow, keep) at ``size``: from the box of this frame back to the last one's, in pixels
        at that size, and the weight of the carried change per pixel."""
        cfg = self.config
        if size != grey.shape[1::-1]:
            shrink = shrink_interpolation(grey.shape[1], size[0])
            grey = cv2.resize(grey, size, interpolation=shrink)
            prev = cv2.resize(prev, size, interpolation=shrink)
        grey, prev = np.ascontiguousarray(grey), np.ascontiguousarray(prev)
        if self._dis is None:
            # the ultrafast preset on a larger picture: as close to the measure's own flow (the
            # medium preset on the whole frame) as the medium preset at 256 px, for a quarter of its time
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)  # type: ignore[attr-defined]
        flow = self._dis.calc(grey, prev, None)  # type: ignore[call-overload]
        warped = _remap(prev.astype(np.float32), cv2.add(flow, self._grid(grey.shape)))
        diff = cv2.subtract(grey, warped, dtype=cv2.CV_32F)
        window = (self.WINDOW, self.WINDOW)
        # the difference averaged before its size is taken: noise, which differs in sign from pixel to
        # pixel, averages out, a feature the flow missed (one-signed over its area) stays; and the size
        # averaged, against an ``ABSOLUTE_SLACK`` times wider tolerance: a flat hand in front of a
        # textured face of the same mean brightness averages out too, but not in size
        err = cv2.max(np.abs(cv2.blur(diff, window)),
                      cv2.blur(np.abs(diff), window) * np.float32(1.0 / self.ABSOLUTE_SLACK))
        err = cv2.multiply(err, err, scale=-1.0 / cfg.frame_tolerance ** 2)
        return flow, cv2.exp(err) * np.float32(cfg.frame_strength)

    def _fuse_face(self, track_id: Hashable, box: tuple[int, int, int, int], grey: np.ndarray,
                   prev: np.ndarray | None, before: Sequence[tuple[np.ndarray, int]],
                   planes: Sequence[tuple[np.ndarray, int]]) -> None:
        x0, y0, x1, y1 = box
        x0, y0 = x0 - x0 % 2, y0 - y0 % 2  # on the chroma grid of a 4:2:0 frame
        boxes = [_plane_box((x0, y0, x1, y1), step, plane.shape) for plane, step in planes]
        # OpenCV's arithmetic throughout: numpy's temporaries cost ~7 ms a frame on a 600-px face
        changes = [cv2.subtract(out[b1:b3, b0:b2], src[b1:b3, b0:b2], dtype=cv2.CV_32F)
                   for (out, _), (src, _), (b0, b1, b2, b3) in zip(planes, before, boxes)]
        last = self._last.get(track_id)
        if (last is not None and not last.zero and prev is not None and len(last.changes) == len(planes)
                and min(x1 - x0, y1 - y0) >= _MIN_FLOW_SIDE):
            flow, keep = self._flow(grey[y0:y1, x0:x1], prev[y0:y1, x0:x1], self._flow_size(x1 - x0, y1 - y0))
            maps: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}  # U and V share theirs
            for k, ((plane, step), (b0, b1, b2, b3)) in enumerate(zip(planes, boxes)):
                key = (b0, b1, b2, b3, step)
                if key not in maps:
                    maps[key] = self._carry_map(flow, keep, (b0, b1, b2, b3), (last.box[0] // step, last.box[1] // step))
                xy, kp = maps[key]
                carried = _remap(last.changes[k], xy, cv2.BORDER_CONSTANT)
                if carried.ndim == 3:
                    kp = cv2.merge([kp] * carried.shape[2])
                correction = cv2.multiply(cv2.subtract(carried, changes[k]), kp)
                changes[k] = cv2.add(changes[k], correction)
                roi = plane[b1:b3, b0:b2]
                roi[...] = cv2.add(roi, correction, dtype=cv2.CV_8U)  # rounded and saturated
        self._last[track_id] = _FrameState((x0, y0, x1, y1), changes, not any(cv2.countNonZero(c.reshape(c.shape[0], -1))
                                                                              for c in changes))

    def _carry_map(self, flow: np.ndarray, keep: np.ndarray, box: tuple[int, int, int, int],
                   last_origin: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(positions, weights) over a plane's box: where each of its pixels was in the last frame's
        box of that plane (its top-left corner there: ``last_origin``), and the carried change's weight."""
        b0, b1, b2, b3 = box
        pw, ph = b2 - b0, b3 - b1
        fh, fw = flow.shape[:2]
        if (pw, ph) != (fw, fh):
            flow = cv2.resize(flow, (pw, ph), interpolation=cv2.INTER_LINEAR)
            keep = cv2.resize(keep, (pw, ph), interpolation=cv2.INTER_LINEAR)
        # flow pixels -> plane pixels, plus each pixel's own position, moved to the last box's corner
        xy = flow * np.array([pw / fw, ph / fh], np.float32)
        xy += self._grid((ph, pw))
        xy += np.array([b0 - last_origin[0], b1 - last_origin[1]], np.float32)
        return xy, keep


def _plane_box(box: tuple[int, int, int, int], step: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """A frame box on a plane sampled every ``step`` pixels (the chroma of 4:2:0: 2)."""
    x0, y0, x1, y1 = box
    return x0 // step, y0 // step, min(-(-x1 // step), shape[1]), min(-(-y1 // step), shape[0])


def _identity_grid(shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 2) float32 (x, y) of every pixel."""
    h, w = shape
    return np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), axis=-1)
