"""HDR video's faces, seen as the restorer knows faces: in SDR.

The restorer, the face detector, the recognisers and the reference photos all know SDR pictures
(BT.709 colours, a gamma curve). An HDR video holds its pixels coded for another curve and gamut:
PQ (HDR10, HDR10+, Dolby Vision; SMPTE ST 2084) or HLG (an iPhone's default video, broadcast;
ARIB STD-B67), in BT.2020 colours. In those coded values a face is pale and flat; a PQ face sits
near mid-grey. On the demo set's 12 degraded faces (``benchmarks/hdr_faces.py``) the lite
restorer gained +0.89 dB face PSNR on SDR faces, +0.70 dB on the same faces HLG-coded and
+0.07 dB PQ-coded; restored in SDR and coded back, each gains what the SDR face gains.

:class:`HdrTransfer` maps a frame's coded RGB to SDR and back the way ITU-R BT.2408 maps SDR
into HDR: SDR white at the HDR reference white (PQ 203 cd/m², HLG 75 % signal), BT.1886 gamma
2.4 for SDR, BT.2020 <-> BT.709 primaries in linear light. Light above SDR white (highlights,
rarely a face) is clipped in the SDR view: there the restorer sees white, changes little, and the
coded frame keeps its highlights.
:class:`SdrView` is what the stages that *read* faces get of an HDR frame (detection, identity,
crops, the quality gate); the stages that write (paste, frame fusion, the encoder) keep the coded
frame, and a face's change is coded back with :meth:`HdrTransfer.coded_change`, so pixels no stage
changed keep their coded values exactly.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = ["HdrTransfer", "SdrView", "coded_levels", "hdr_transfer", "sdr_view", "to_sdr_picture"]

#: FFmpeg's transfer characteristics (``AVColorTransferCharacteristic``) of HDR video
TRC_PQ, TRC_HLG = 16, 18
#: FFmpeg's BT.709 primaries (an HDR video tagged so needs no gamut conversion)
PRIMARIES_BT709 = 1

# SMPTE ST 2084 (PQ) constants
_M1, _M2 = 2610 / 16384, 2523 / 4096 * 128
_C1, _C2, _C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
#: BT.2408's reference (diffuse) white of PQ video, in cd/m²: SDR white goes there
PQ_REFERENCE_WHITE = 203.0
# ARIB STD-B67 (HLG) constants
_A = 0.17883277
_B = 1 - 4 * _A
_C = float(0.5 - _A * np.log(4 * _A))
#: BT.2408's reference white of HLG video: 75 % signal
HLG_REFERENCE_SIGNAL = 0.75
# steps a coded 8-bit level is divided into by the table a deep frame's samples are mapped with
_FINE = 16
# steps of the square root of light [0, 1] the tables to SDR and to the coded signal hold
_ROOT_STEPS = 65535
#: SDR's display gamma (BT.1886)
SDR_GAMMA = 2.4

# linear-light primaries conversions (ITU-R BT.2087 and its inverse)
_BT709_TO_BT2020 = np.array([[0.6274, 0.3293, 0.0433],
                             [0.0691, 0.9195, 0.0114],
                             [0.0164, 0.0880, 0.8956]], np.float32)
_BT2020_TO_BT709 = np.linalg.inv(_BT709_TO_BT2020).astype(np.float32)


def _pq_to_light(signal: np.ndarray) -> np.ndarray:
    """PQ signal [0, 1] -> light in cd/m² / 10000 (float64: builds a table)."""
    p = np.power(np.clip(signal, 0, 1), 1 / _M2)
    return np.power(np.maximum(p - _C1, 0) / (_C2 - _C3 * p), 1 / _M1)


def _hlg_to_scene(signal: np.ndarray) -> np.ndarray:
    """HLG signal [0, 1] -> scene light [0, 1] (float64: builds a table)."""
    signal = np.clip(signal, 0, 1)
    return np.where(signal <= 0.5, signal * signal / 3, (np.exp((signal - _C) / _A) + _B) / 12)


def _light_to_pq(light: np.ndarray) -> np.ndarray:
    """Light in cd/m² / 10000 -> PQ signal (float64: builds a table)."""
    y = np.power(np.clip(light, 0, 1), _M1)
    return np.power((_C1 + _C2 * y) / (1 + _C3 * y), _M2)


def _scene_to_hlg(light: np.ndarray) -> np.ndarray:
    """Scene light -> HLG signal (float64: builds a table)."""
    light = np.clip(light, 0, 1)
    return np.where(light <= 1 / 12, np.sqrt(3 * light), _A * np.log(np.maximum(12 * light - _B, 1e-12)) + _C)


def _root_steps(light: np.ndarray) -> np.ndarray:
    """Indices into a table by the square root of ``light`` (float32, clipped to [0, 1] in place)."""
    root = cv2.sqrt(np.clip(light, 0, 1, out=light))
    return (root * np.float32(_ROOT_STEPS) + np.float32(0.5)).astype(np.uint16)


@dataclass(frozen=True)
class HdrTransfer:
    """How an HDR video's coded RGB maps to SDR RGB and back (the module docstring).

    Attributes:
        curve: ``"pq"`` or ``"hlg"``.
        bt2020: the video's primaries are BT.2020 (True for nearly every HDR video; False when it is
            tagged BT.709).
    """

    curve: str
    bt2020: bool = True
    # per coded level: linear light, SDR white at 1; per SDR level: its linear light
    _coded_light: np.ndarray = field(init=False, repr=False, compare=False)
    _sdr_light: np.ndarray = field(init=False, repr=False, compare=False)
    _fine_coded_light: np.ndarray = field(init=False, repr=False, compare=False)
    _sdr_of_root: np.ndarray = field(init=False, repr=False, compare=False)
    _signal_of_root: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.curve not in ("pq", "hlg"):
            raise ValueError(f"curve must be 'pq' or 'hlg', got {self.curve!r}")
        levels = np.arange(256, dtype=np.float64) / 255
        light = _pq_to_light(levels) / self._white if self.curve == "pq" else _hlg_to_scene(levels) / self._white
        object.__setattr__(self, "_coded_light", light.astype(np.float32))
        fine = np.arange(255 * _FINE + 1, dtype=np.float64) / (255 * _FINE)
        fine_light = _pq_to_light(fine) if self.curve == "pq" else _hlg_to_scene(fine)
        object.__setattr__(self, "_fine_coded_light", (fine_light / self._white).astype(np.float32))
        object.__setattr__(self, "_sdr_light", np.power(levels, SDR_GAMMA).astype(np.float32))
        # light in [0, 1] -> SDR level and coded signal, by the light's square root (tables, as
        # cv2.pow and log cost ~10x more: ~9 ms for a 400 px face region)
        root = np.arange(_ROOT_STEPS + 1, dtype=np.float64) / _ROOT_STEPS
        object.__setattr__(self, "_sdr_of_root", np.rint(255 * np.power(root, 2 / SDR_GAMMA)).astype(np.uint8))
        signal = _light_to_pq(root**2 * self._white) if self.curve == "pq" else _scene_to_hlg(root**2 * self._white)
        object.__setattr__(self, "_signal_of_root", (255 * signal).astype(np.float32))

    @property
    def _white(self) -> float:
        """SDR white in the curve's own light (PQ: cd/m² / 10000; HLG: scene light)."""
        if self.curve == "pq":
            return PQ_REFERENCE_WHITE / 10000
        return float(_hlg_to_scene(np.array(HLG_REFERENCE_SIGNAL)))

    def to_sdr(self, coded: np.ndarray) -> np.ndarray:
        """(..., 3) coded RGB -> uint8 SDR RGB (BT.709, gamma 2.4); light above SDR white is
        clipped to it. ``coded``: uint8, or float32 in 8-bit levels (a 10-bit frame's, whose
        finer steps keep an HDR face's SDR picture free of the 8-bit coded values' steps: a PQ
        face's SDR range spans 148 of them, and the quality gate took those steps for detail)."""
        coded = np.ascontiguousarray(coded)
        if coded.dtype == np.uint8:
            light = cv2.LUT(coded, self._coded_light)
        else:  # a table of 1/16 level steps (finer than 12-bit samples)
            steps = np.clip(coded * np.float32(_FINE), 0, 255 * _FINE, out=np.empty(coded.shape, np.float32))
            light = np.take(self._fine_coded_light, steps.astype(np.uint16))
        if self.bt2020:
            light = cv2.transform(light.reshape(-1, 1, 3), _BT2020_TO_BT709).reshape(coded.shape)
        return np.take(self._sdr_of_root, _root_steps(light))

    def to_coded(self, sdr: np.ndarray) -> np.ndarray:
        """(..., 3) uint8 SDR RGB -> coded RGB as float32 levels [0, 255]."""
        sdr = np.ascontiguousarray(sdr)
        light = cv2.LUT(sdr, self._sdr_light)
        if self.bt2020:
            light = cv2.transform(light.reshape(-1, 1, 3), _BT709_TO_BT2020).reshape(sdr.shape)
        return np.take(self._signal_of_root, _root_steps(light))

    def coded_change(self, coded: np.ndarray, sdr_before: np.ndarray, sdr_after: np.ndarray) -> np.ndarray:
        """``coded`` (uint8) changed as ``sdr_before`` (its :meth:`to_sdr`) changed into
        ``sdr_after`` (uint8): the change coded back and added, so that where nothing changed the
        coded values are kept exactly (a round trip through SDR is not exact)."""
        change = self.to_coded(sdr_after) - self.to_coded(sdr_before)
        return np.clip(np.rint(coded.astype(np.float32) + change), 0, 255).astype(np.uint8)  # (not |x|: clipped)


def hdr_transfer(frame: Any) -> HdrTransfer | None:
    """The :class:`HdrTransfer` of a decoded ``av.VideoFrame`` tagged PQ or HLG; None for SDR
    frames and for pictures without tags (numpy arrays)."""
    trc = int(getattr(frame, "color_trc", 0) or 0)
    if trc not in (TRC_PQ, TRC_HLG):
        return None
    return _transfer("pq" if trc == TRC_PQ else "hlg", int(frame.color_primaries) != PRIMARIES_BT709)


@functools.lru_cache(maxsize=None)
def _transfer(curve: str, bt2020: bool) -> HdrTransfer:
    """One :class:`HdrTransfer` per kind (its tables take ~5 ms to build; it never changes)."""
    return HdrTransfer(curve, bt2020=bt2020)


def to_sdr_picture(frame: Any, rgb: np.ndarray) -> np.ndarray:
    """``rgb`` (a picture converted from the ``av.VideoFrame`` ``frame``) in SDR where the frame is
    HDR (a reference video's frames, to match against faces seen in SDR), else itself."""
    transfer = hdr_transfer(frame)
    return rgb if transfer is None else transfer.to_sdr(rgb)


class SdrView:
    """What the stages that read faces see of an HDR frame's pixels (any ``streamrestore.pixels``
    object): :meth:`region`, :meth:`resized` and :meth:`full` in SDR; :meth:`gray` (optical flow
    follows shapes, not levels) and ``shape`` as the frame's."""

    def __init__(self, pixels: Any, transfer: HdrTransfer):
        self.pixels = pixels
        self.transfer = transfer
        self.shape = pixels.shape
        self._full: np.ndarray | None = None

    def region(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The box in SDR; from a 10- or 12-bit 4:2:0 frame, read at its own depth."""
        return self.transfer.to_sdr(self.coded_region(x0, y0, x1, y1))

    def coded_region(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The box in the frame's coded values: float32 from a 10- or 12-bit 4:2:0 frame (its own
        depth), else uint8."""
        if getattr(self.pixels, "deep", None) is not None and hasattr(self.pixels, "deep_region"):
            return self.pixels.deep_region(x0, y0, x1, y1)
        return self.pixels.region(x0, y0, x1, y1)

    def resized(self, width: int, height: int) -> np.ndarray:
        if (width, height) == self.shape[1::-1]:
            return self.full()
        return self.transfer.to_sdr(self.pixels.resized(width, height))

    def full(self) -> np.ndarray:
        """The whole frame in SDR (converted once, on first use: the recognisers' frames)."""
        if self._full is None:
            self._full = self.transfer.to_sdr(self.pixels.full())
        return self._full

    def gray(self, width: int, height: int) -> np.ndarray:
        return self.pixels.gray(width, height)

    def crop_planes(self):
        """What :func:`streamrestore.faces.align.crop_face` cuts an aligned crop from, and maps the
        crop with: (Y, U, V, to_rgb, to SDR); the crop is warped from the frame's planes (a 10- or
        12-bit frame's own) and only the crop mapped. None for a frame served as RGB."""
        if getattr(self.pixels, "deep", None) is not None and hasattr(self.pixels, "deep_planes"):
            return (*self.pixels.deep_planes(), self.transfer.to_sdr)
        if hasattr(self.pixels, "planes") and hasattr(self.pixels, "to_rgb"):
            return (*self.pixels.planes, self.pixels.to_rgb, self.transfer.to_sdr)
        return None

    @property
    def coded(self) -> "_CodedFrame":
        """The frame as :func:`~streamrestore.faces.align.crop_face` reads it for crops left in the
        coded values (float32 at a 10- or 12-bit frame's own depth): one warp serves both the SDR
        crop (:meth:`HdrTransfer.to_sdr`) and the coded one the change is pasted onto
        (:func:`coded_levels`)."""
        return _CodedFrame(self)


class _CodedFrame:
    """:attr:`SdrView.coded`."""

    def __init__(self, view: SdrView):
        self.shape = view.shape
        self.region = view.coded_region
        self._view = view

    def crop_planes(self):
        planes = self._view.crop_planes()
        return None if planes is None else (*planes[:4], _unchanged)


def _unchanged(crop: np.ndarray) -> np.ndarray:
    return crop


def coded_levels(crop: np.ndarray) -> np.ndarray:
    """A crop of :attr:`SdrView.coded` as uint8 coded RGB (a deep frame's rounded to 8-bit levels)."""
    return crop if crop.dtype == np.uint8 else np.clip(np.rint(crop), 0, 255).astype(np.uint8)


def sdr_view(pixels: Any) -> Any:
    """``pixels`` as :class:`SdrView` where its frame is HDR (a 4:2:0 frame, or the deep frame a
    picture was converted from), else ``pixels`` itself."""
    frame = getattr(pixels, "deep", None)
    if frame is None:
        frame = getattr(pixels, "frame", None)
    transfer = hdr_transfer(frame) if frame is not None else None
    return pixels if transfer is None else SdrView(pixels, transfer)
