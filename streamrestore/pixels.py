"""A frame's pixels as the face stages read and write them.

The face stages need little of a frame: a small RGB picture to detect faces in, a small grey one
to follow them with optical flow, the RGB pixels around each face, and a place to paste the
restored faces. :class:`RgbPixels` serves all of that from an RGB array.
:class:`Yuv420Pixels` serves it straight from a decoded 8-bit 4:2:0 frame, the format nearly
every video decodes to: only the regions around faces are converted to RGB, restored faces are
pasted into the Y/U/V planes, and the encoder gets planes it can take as they are. Converting
whole 720p frames to RGB and back cost ~5 ms a frame, as much as the face work itself.

Both convert with the frame's own matrix (BT.601/709/2020) and range, the ones the writer
encodes with; pixels a paste does not touch keep their exact values.
"""
from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np

from streamrestore.blend import paste_rgb, paste_yuv420
from streamrestore.video.reader import DEEP_PLANAR, DEEP_YUV420, frame_to_rgb

__all__ = ["RgbPixels", "Yuv420Pixels", "copy_timing", "frame_planes", "pixels_of", "plane_view", "shrink_interpolation",
           "yuv420_frame", "yuv_matrices"]


def shrink_interpolation(source_width: int, width: int) -> int:
    """OpenCV's interpolation for shrinking a picture ``source_width`` pixels wide to ``width``:
    area averaging below half size (where bilinear skips pixels and aliases), bilinear down to
    half size (as the detectors' own resizing does), at a fraction of area's cost for odd factors."""
    return cv2.INTER_AREA if 2 * width < source_width else cv2.INTER_LINEAR

# FFmpeg AVColorSpace values -> (Kr, Kb). Unspecified and unknown tags read as BT.601, as
# swscale (and so the writer, for untagged files) does.
_KR_KB = {
    1: (0.2126, 0.0722),  # BT.709
    4: (0.30, 0.11),  # FCC
    5: (0.299, 0.114),  # BT.470BG
    6: (0.299, 0.114),  # SMPTE 170M
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 non-constant
    10: (0.2627, 0.0593),  # BT.2020 constant (treated as non-constant)
}
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def yuv_matrices(color_space: int | None, color_range: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(to_rgb, from_rgb): 3x4 matrices mapping [Y, U, V, 1] to [R, G, B] and [R, G, B, 1] to
    [Y, U, V] (8-bit code values) for a frame's colour space and range tags (read-only arrays,
    computed once per tag pair)."""
    return _yuv_matrices(int(color_space or 0), int(color_range or 0))


@functools.lru_cache(maxsize=16)
def _yuv_matrices(color_space: int, color_range: int) -> tuple[np.ndarray, np.ndarray]:
    kr, kb = _KR_KB.get(color_space, (0.299, 0.114))
    kg = 1.0 - kr - kb
    if color_range == _FULL_RANGE:
        luma_scale, chroma_scale, luma_offset = 1.0, 1.0, 0.0
    else:
        luma_scale, chroma_scale, luma_offset = 219.0 / 255.0, 224.0 / 255.0, 16.0
    # Analogue-domain rows: E'y, Cb, Cr from R, G, B (all in 0..255 units).
    rgb_to_ycc = np.array(
        [
            [kr, kg, kb],
            [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
            [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))],
        ]
    )
    scale = np.diag([luma_scale, chroma_scale, chroma_scale])
    offset = np.array([luma_offset, 128.0, 128.0])
    forward = scale @ rgb_to_ycc
    inverse = np.linalg.inv(forward)
    to_rgb = np.hstack([inverse, (-inverse @ offset)[:, None]]).astype(np.float32)
    from_rgb = np.hstack([forward, offset[:, None]]).astype(np.float32)
    to_rgb.flags.writeable = from_rgb.flags.writeable = False
    return to_rgb, from_rgb


class RgbPixels:
    """The pixels of an RGB uint8 (H, W, 3) frame; :meth:`output` writes into a copy.

    A 10- or 12-bit planar frame of another layout than 4:2:0 (:data:`streamrestore.video.reader.DEEP_PLANAR`:
    4:2:2, 4:4:4, planar RGB) is served as its 8-bit RGB conversion (:meth:`of_deep`), and
    :meth:`deepen` adds what the stages changed there, converted to the frame's format, to the
    frame itself: samples away from the faces keep every bit."""

    #: the 10- or 12-bit frame this RGB picture was converted from (:meth:`of_deep`); None otherwise
    deep: Any = None

    def __init__(self, rgb: np.ndarray):
        if (not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8
                or not rgb.shape[0] or not rgb.shape[1]):
            shape = getattr(rgb, "shape", None)
            raise ValueError(f"frames must be HxWx3 uint8 arrays, got shape {shape} dtype {getattr(rgb, 'dtype', None)}")
        self._rgb = rgb
        self.shape = rgb.shape

    def full(self) -> np.ndarray:
        """The whole frame as RGB uint8."""
        return self._rgb

    def region(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """RGB of the box [x0, x1) x [y0, y1) (inside the frame)."""
        return self._rgb[y0:y1, x0:x1]

    def resized(self, width: int, height: int) -> np.ndarray:
        """The whole frame as RGB at ``width`` x ``height`` (area-averaged when shrinking)."""
        if (width, height) == self.shape[1::-1]:
            return self._rgb
        return cv2.resize(self._rgb, (width, height), interpolation=cv2.INTER_AREA)

    def gray(self, width: int, height: int) -> np.ndarray:
        """The frame's brightness at ``width`` x ``height``, uint8 (for optical flow)."""
        return cv2.cvtColor(self.resized(width, height), cv2.COLOR_RGB2GRAY)

    def output(self) -> "RgbCanvas":
        return RgbCanvas(self._rgb.copy())

    @classmethod
    def of_deep(cls, frame) -> "RgbPixels":
        """The pixels of a frame of a :data:`~streamrestore.video.reader.DEEP_PLANAR` format, as 8-bit RGB."""
        pixels = cls(frame_to_rgb(frame))
        pixels.deep = frame
        return pixels

    def deepen(self, result):
        """``result`` (the RGB ``av.VideoFrame`` the stages made of this picture, or :attr:`deep`
        itself) as a frame of :attr:`deep`'s format: the deep frame plus the change, each picture
        converted to that format the same way, so that where nothing changed the change is exactly
        0. Frames of 8-bit input are returned as they are."""
        if self.deep is None or result is self.deep:
            return result
        import av

        deep = self.deep
        top = (1 << DEEP_PLANAR[deep.format.name]) - 1

        def converted(frame):
            return frame.reformat(format=deep.format.name, dst_colorspace=int(deep.colorspace) or None,
                                  dst_color_range=int(deep.color_range) or None)

        before, after = converted(av.VideoFrame.from_ndarray(self._rgb, format="rgb24")), converted(result)
        out = frame_like(deep)
        for planes in zip(deep.planes, before.planes, after.planes, out.planes):
            was, then, now, into = (plane_view(p, p.height, p.width, np.uint16) for p in planes)
            into[...] = np.clip(was.astype(np.int32) + now - then, 0, top)
        copy_timing(deep, out)
        out.colorspace, out.color_range = deep.colorspace, deep.color_range
        out.color_primaries, out.color_trc = deep.color_primaries, deep.color_trc
        return out

    def sampled_planes(self) -> list[tuple[np.ndarray, int]]:
        """The frame as (plane, step) pairs: one (H, W, 3) RGB plane at full resolution."""
        return [(self._rgb, 1)]


class RgbCanvas:
    """An RGB frame being restored: restored faces are pasted into it."""

    def __init__(self, rgb: np.ndarray):
        self.rgb = rgb

    def paste(self, plan) -> None:
        """Carries out a :class:`streamrestore.blend.PastePlan`."""
        paste_rgb(self.rgb, plan)


def plane_view(plane, height: int, width: int, dtype: Any = np.uint8) -> np.ndarray:
    """A writable (height, width) view of an av frame plane (rows padded to ``line_size``), of
    ``dtype`` samples (``np.uint16`` for the 10- and 12-bit formats)."""
    itemsize = np.dtype(dtype).itemsize
    return np.frombuffer(plane, dtype).reshape(-1, plane.line_size // itemsize)[:height, :width]


def _yuv420_region(y: np.ndarray, u: np.ndarray, v: np.ndarray, box: tuple[int, int, int, int], to_rgb: np.ndarray,
                   as_float: bool = False) -> np.ndarray:
    """RGB of ``box`` (x0, y0, x1, y1) of a 4:2:0 frame's planes, chroma upsampled bilinearly: uint8
    from uint8 planes; with ``as_float``, float32 in the levels ``to_rgb`` takes (a deep frame's
    samples, the box's only cast: none of their bits rounded away)."""
    x0, y0, x1, y1 = box
    # Chroma samples covering the box plus one on each side, so the bilinear upsampling
    # inside the box does not depend on where the box ends.
    cx0, cy0 = max(x0 // 2 - 1, 0), max(y0 // 2 - 1, 0)
    cx1, cy1 = min((x1 + 1) // 2 + 1, u.shape[1]), min((y1 + 1) // 2 + 1, u.shape[0])
    y, u, v = y[y0:y1, x0:x1], u[cy0:cy1, cx0:cx1], v[cy0:cy1, cx0:cx1]
    if as_float:
        y, u, v = np.float32(y), np.float32(u), np.float32(v)
    up = cv2.resize(cv2.merge([u, v]), (2 * (cx1 - cx0), 2 * (cy1 - cy0)), interpolation=cv2.INTER_LINEAR)
    ox, oy = x0 - 2 * cx0, y0 - 2 * cy0
    up = up[oy : oy + (y1 - y0), ox : ox + (x1 - x0)]
    return cv2.transform(cv2.merge([y, up[..., 0], up[..., 1]]), to_rgb)


class Yuv420Pixels:
    """The pixels of an 8-bit 4:2:0 ``av.VideoFrame`` (``yuv420p``/``yuvj420p``), converted to
    RGB only where read. :meth:`output` gives a new frame with the same planes, timestamps and
    colour tags, into which restored faces are pasted in YUV.

    A 10- or 12-bit 4:2:0 frame (:data:`streamrestore.video.reader.DEEP_YUV420`) is served through an 8-bit copy of its
    planes (:meth:`of_deep`): every stage works on the copy as on any 8-bit frame, and
    :meth:`deepen` adds what they changed to the deep frame, so that samples nothing changed keep
    every bit and changed ones keep the bits below the 8 (the faces' changes are 8-bit, as the
    restorer's output is)."""

    FORMATS = ("yuv420p", "yuvj420p")

    def __init__(self, frame):
        if frame.format.name not in self.FORMATS:
            raise ValueError(f"Yuv420Pixels needs a yuv420p frame, got {frame.format.name}")
        self.frame = frame
        #: the 10- or 12-bit frame this frame is the 8-bit copy of (:meth:`of_deep`); None for 8-bit input
        self.deep: Any = None
        w, h = frame.width, frame.height
        self.shape = (h, w, 3)
        cw, ch = (w + 1) // 2, (h + 1) // 2
        self._y = plane_view(frame.planes[0], h, w)
        self._u = plane_view(frame.planes[1], ch, cw)
        self._v = plane_view(frame.planes[2], ch, cw)
        color_range = int(frame.color_range) or (_FULL_RANGE if frame.format.name == "yuvj420p" else 0)
        self._color_range = color_range
        self._to_rgb, self._from_rgb = yuv_matrices(int(frame.colorspace), color_range)
        self._full: np.ndarray | None = None

    @property
    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The Y, U and V planes (read-only views into the decoded frame)."""
        return self._y, self._u, self._v

    @property
    def to_rgb(self) -> np.ndarray:
        """3x4 matrix from [Y, U, V, 1] to [R, G, B] for this frame (see :func:`yuv_matrices`)."""
        return self._to_rgb

    @property
    def from_rgb(self) -> np.ndarray:
        """3x4 matrix from [R, G, B, 1] to [Y, U, V] for this frame."""
        return self._from_rgb

    def full(self) -> np.ndarray:
        """The whole frame as RGB uint8 (converted once, on first use)."""
        if self._full is None:
            h, w = self.shape[:2]
            self._full = self.region(0, 0, w, h)
        return self._full

    def region(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """RGB of the box [x0, x1) x [y0, y1) (inside the frame): chroma upsampled bilinearly,
        the same values whichever box they are read through."""
        return _yuv420_region(self._y, self._u, self._v, (x0, y0, x1, y1), self._to_rgb)

    def deep_planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The 10- or 12-bit frame's own Y, U and V planes (:attr:`deep`: uint16 views) and the 3x4
        matrix from them to RGB in 8-bit levels: what maps a deep HDR frame's faces to SDR without
        the 8-bit copy's steps (``streamrestore.hdr.SdrView``)."""
        if self.deep is None:
            raise ValueError("deep_planes needs a 10- or 12-bit frame (Yuv420Pixels.of_deep)")
        to_rgb = self._to_rgb.copy()
        to_rgb[:, :3] /= 1 << (DEEP_YUV420[self.deep.format.name] - 8)
        y, u, v = (plane_view(plane, h, w, np.uint16) for plane, (h, w) in zip(self.deep.planes, _yuv420_sizes(self.deep)))
        return y, u, v, to_rgb

    def deep_region(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """:meth:`region` read from the 10- or 12-bit frame itself (:meth:`deep_planes`), as float32
        RGB in 8-bit levels with the bits below them kept."""
        *planes, to_rgb = self.deep_planes()
        return _yuv420_region(*planes, (x0, y0, x1, y1), to_rgb, as_float=True)

    def resized(self, width: int, height: int) -> np.ndarray:
        """The whole frame as RGB at ``width`` x ``height``: each plane area-shrunk, then only
        the small picture converted (a fraction of a full-size conversion)."""
        if (width, height) == self.shape[1::-1]:
            return self.full()
        size = (width, height)

        def shrink(plane):
            return cv2.resize(plane, size, interpolation=shrink_interpolation(plane.shape[1], width))

        yuv = cv2.merge([shrink(self._y), shrink(self._u), shrink(self._v)])
        return cv2.transform(yuv, self._to_rgb)

    def gray(self, width: int, height: int) -> np.ndarray:
        """The luma plane at ``width`` x ``height`` (for optical flow; no conversion needed)."""
        if (width, height) == self.shape[1::-1]:
            return self._y
        return cv2.resize(self._y, (width, height), interpolation=cv2.INTER_AREA)

    def output(self) -> "Yuv420Canvas":
        return Yuv420Canvas(self)

    @classmethod
    def of_deep(cls, frame) -> "Yuv420Pixels":
        """The pixels of a 10- or 12-bit 4:2:0 frame, through an 8-bit copy of its planes (each
        sample rounded to its top 8 bits: a 10-bit video level is 4 times the 8-bit one)."""
        shift = DEEP_YUV420[frame.format.name] - 8
        eight = []
        for plane, (h, w) in zip(frame.planes, _yuv420_sizes(frame)):
            deep = plane_view(plane, h, w, np.uint16)
            eight.append(np.minimum((deep + (1 << (shift - 1))) >> shift, 255).astype(np.uint8))
        pixels = cls(yuv420_frame(frame, eight, format="yuv420p")[0])
        pixels.deep = frame
        return pixels

    def deepen(self, result):
        """``result`` (what the stages made of :attr:`frame`, or that frame itself) as a frame of
        :attr:`deep`'s format: the deep frame plus, scaled to its depth, what changed in the 8-bit
        copy. Frames of 8-bit input are returned as they are."""
        if self.deep is None or result is self.deep:
            return result
        if result is self.frame:
            return self.deep
        bits = DEEP_YUV420[self.deep.format.name]
        shift, top = bits - 8, (1 << bits) - 1
        planes = []
        for before, after, plane, (h, w) in zip(self.planes, frame_planes(result), self.deep.planes,
                                               _yuv420_sizes(self.deep)):
            change = after[0].astype(np.int16) - before  # (both 8-bit: fits; shifted by 4 bits too)
            deep = plane_view(plane, h, w, np.uint16).astype(np.int16)
            planes.append(np.clip(deep + (change << shift), 0, top).astype(np.uint16))
        return yuv420_frame(self.deep, planes)[0]

    def sampled_planes(self) -> list[tuple[np.ndarray, int]]:
        """The frame as (plane, step) pairs: Y at full resolution, U and V at every second pixel."""
        return [(self._y, 1), (self._u, 2), (self._v, 2)]


# a format each 4:2:0 one converts to and from by moving samples only (frame_like)
_TWIN_FORMATS = {"yuv420p": "nv12", "yuvj420p": "nv12", "yuv420p10le": "p010le", "yuv420p12le": "p016le"}
# FFmpeg's "unspecified" colour space, primaries and transfer (2), and range (0): a new frame's tags
_UNSPECIFIED_COLOR, _UNSPECIFIED_RANGE = 2, 0


def frame_like(like, format: str | None = None) -> Any:
    """A new ``av.VideoFrame`` of ``like``'s size in ``format`` (default: ``like``'s), its pixels to
    be written, carrying ``like``'s side data: closed captions (CEA-608/708 in SEI), HDR10+ metadata
    and timecodes reach the encoder with a restored frame as they do with one passed through.

    PyAV cannot attach side data to a frame; FFmpeg copies it to a frame it converts. So a frame
    that has some is made by converting ``like`` (the pixels are overwritten after): to ``format``, or
    where that is ``like``'s own, to a twin format and back (4:2:0 through NV12: ~0.9 ms at 720p). One
    that has none is an empty frame."""
    import av

    format = format or like.format.name
    if not len(like.side_data):
        return av.VideoFrame(like.width, like.height, format)
    if format == like.format.name:
        carrier = like.reformat(format=_TWIN_FORMATS.get(format, "gray")).reformat(format=format)
    else:
        carrier = like.reformat(format=format)
    # as an empty frame in all else: no colour tags (the callers set them), the encoder picks the type
    carrier.colorspace, carrier.color_range = _UNSPECIFIED_COLOR, _UNSPECIFIED_RANGE
    carrier.color_primaries, carrier.color_trc = _UNSPECIFIED_COLOR, _UNSPECIFIED_COLOR
    carrier.pict_type = av.video.frame.PictureType.NONE
    return carrier


def copy_timing(source, target) -> None:
    """Gives the ``av.VideoFrame`` ``target`` the pts, duration and time base of ``source``."""
    target.pts, target.duration = source.pts, source.duration
    if source.time_base is not None:  # (a frame made by hand has none, and cannot be given None)
        target.time_base = source.time_base


def _yuv420_sizes(frame) -> list[tuple[int, int]]:
    """(height, width) of a 4:2:0 frame's Y, U and V planes."""
    h, w = frame.height, frame.width
    return [(h, w), ((h + 1) // 2, (w + 1) // 2), ((h + 1) // 2, (w + 1) // 2)]


def yuv420_frame(like, planes, format: str | None = None) -> tuple[Any, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A new frame with ``like``'s size, format (or ``format``), timestamps and colour tags holding
    ``planes`` (Y, U, V arrays, cast to the format's samples), and writable views of its planes."""
    import av

    # (a working copy in another format carries nothing to an encoder)
    frame = frame_like(like) if format is None else av.VideoFrame(like.width, like.height, format)
    samples = np.uint16 if frame.format.name in DEEP_YUV420 else np.uint8  # (the planes given are cast to them)
    views = tuple(plane_view(plane, *data.shape, samples) for plane, data in zip(frame.planes, planes))
    for view, data in zip(views, planes):
        view[...] = data
    copy_timing(like, frame)
    frame.colorspace, frame.color_range = like.colorspace, like.color_range
    frame.color_primaries, frame.color_trc = like.color_primaries, like.color_trc
    return frame, views


class Yuv420Canvas:
    """A copy of a 4:2:0 frame being restored; :attr:`frame` is what goes to the encoder."""

    def __init__(self, source: Yuv420Pixels):
        # The decoder's own buffers are never written: they may be reference frames.
        self.frame, (self._y, self._u, self._v) = yuv420_frame(source.frame, source.planes)
        self._from_rgb = source.from_rgb

    def paste(self, plan) -> None:
        """Carries out a :class:`streamrestore.blend.PastePlan` on the Y/U/V planes."""
        paste_yuv420(self._y, self._u, self._v, plan, self._from_rgb)


def frame_planes(frame) -> list[tuple[np.ndarray, int]]:
    """Writable (plane, step) views of a restored frame as the pipeline returns it (an RGB array,
    an RGB ``av.VideoFrame`` or a 4:2:0 one): its planes and each one's subsampling step, as
    ``sampled_planes`` gives them for the input. Writing them changes the frame."""
    if isinstance(frame, np.ndarray):
        return [(frame, 1)]
    h, w = frame.height, frame.width
    if frame.format.name in Yuv420Pixels.FORMATS:
        ch, cw = (h + 1) // 2, (w + 1) // 2
        return [(plane_view(frame.planes[0], h, w), 1), (plane_view(frame.planes[1], ch, cw), 2),
                (plane_view(frame.planes[2], ch, cw), 2)]
    if frame.format.name != "rgb24":
        raise ValueError(f"restored frames are rgb24 or 4:2:0, got {frame.format.name}")
    return [(plane_view(frame.planes[0], h, w * 3).reshape(h, w, 3), 1)]


def pixels_of(frame, channel_order: str = "rgb") -> Any:
    """The pixels of a frame: ``Yuv420Pixels`` for 4:2:0 ``av.VideoFrame`` values (no
    conversion; 10- and 12-bit ones through an 8-bit copy, :meth:`Yuv420Pixels.of_deep`), ``RgbPixels`` for numpy arrays (``channel_order`` "rgb" or "bgr") and for
    video frames in any other format (converted whole with the frame's own matrix)."""
    if isinstance(frame, np.ndarray):
        if frame.ndim == 3 and frame.shape[2] == 3 and channel_order == "bgr":
            frame = np.ascontiguousarray(frame[..., ::-1])
        return RgbPixels(frame)
    import av

    if isinstance(frame, av.VideoFrame):
        if frame.format.name in Yuv420Pixels.FORMATS:
            return Yuv420Pixels(frame)
        if frame.format.name in DEEP_YUV420:
            return Yuv420Pixels.of_deep(frame)
        if frame.format.name in DEEP_PLANAR:
            return RgbPixels.of_deep(frame)
        return RgbPixels(frame_to_rgb(frame))
    raise TypeError(f"frames must be numpy arrays or av.VideoFrame, got {type(frame).__name__}")
