"""Decoding video files with PyAV: stream description, frames in presentation order, problems.

:class:`VideoReader` yields the decoder's own :class:`av.VideoFrame` objects, so timestamps
(``pts`` / ``time_base`` / ``duration``), colour tags and side data travel with each frame and
never pass through numpy. :func:`probe` describes a file without reading it through.

Inputs that cannot be used raise :class:`~streamrestore.errors.InputError` with one line saying
what is wrong; a file that stops early (truncated download, interrupted recording) is read as
far as it decodes and the loss is described in :attr:`VideoReader.problems`. Damaged data in
the middle of a file does not stop decoding: a frame the decoder cannot rebuild is replaced by
the frame before it, at its own timestamp, so the frames and their timing stay those of the
file's packets; how many frames were affected is one line in ``problems``.

Interlaced video (two fields of different instants woven into each frame: DV camcorders, DVDs,
broadcast 1080i) can be deinterlaced on the way out (``deinterlace=True``; what the restoring
functions ask for): FFmpeg's bwdif turns each frame into one progressive frame at the first
field's instant, so a moving face is one face and not two combed halves. Frames and timestamps
stay those of the file.
"""
from __future__ import annotations

import dataclasses
import errno
import heapq
import itertools
import logging
import math
import numbers
import os
import struct
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import av.error
import numpy as np

from streamrestore.errors import InputError

logger = logging.getLogger(__name__)

# FFmpeg's "unspecified" values (AVColorRange / AVColorSpace / AVColorPrimaries /
# AVColorTransferCharacteristic); VideoInfo reports them as None.
_RANGE_UNSPECIFIED = 0
_COLOR_UNSPECIFIED = 2

_ACCURATE_RGB = (
    av.video.reformatter.Interpolation.BILINEAR
    | av.video.reformatter.Interpolation.FULL_CHR_H_INT
    | av.video.reformatter.Interpolation.ACCURATE_RND
)

#: File suffixes (lower case) taken as videos where files are picked by name (a batch folder, a
#: reference folder); any file FFmpeg reads can be given by its path.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".flv", ".wmv",
                            ".mpg", ".mpeg", ".nut", ".3gp", ".gif", ".dv", ".mxf", ".vob", ".ogv",
                            # (a camera's raw streams: a DVR's or an IP camera's exports)
                            ".h264", ".264", ".h265", ".265", ".hevc", ".mjpeg", ".mjpg"})

# Demuxers that read single pictures; a photo is not a video for this tool.
_STILL_IMAGE_FORMATS = {"image2", "image2pipe"}

# A stream that ends this much before its declared duration is reported as truncated
# (at least this many seconds, and at least this many frame intervals); smaller gaps are
# ordinary rounding between container and stream durations.
_TRUNCATION_SLACK_S = 0.5
_TRUNCATION_SLACK_FRAMES = 3


@dataclass(frozen=True)
class VideoInfo:
    """What a video stream is, as far as the encoder on the other side needs to know.

    Colour fields hold FFmpeg's enum values (``AVColorRange``, ``AVColorSpace``,
    ``AVColorPrimaries``, ``AVColorTransferCharacteristic``, the integers PyAV exposes on
    frames and codec contexts) or None where the file does not say. They and ``rotation``
    are read from the first decoded frame, which is where FFmpeg puts what the bitstream
    and the container say.
    """

    path: str
    width: int  # picture size as decoded (before any display rotation)
    height: int
    frame_rate: Fraction | None  # average rate; FFmpeg's guess if the container lacks it
    time_base: Fraction  # of the video stream; pts * time_base = seconds
    frame_count: int | None  # container's count, else duration * rate, else None
    duration: float | None  # seconds, of the video stream where known, else the container
    codec: str  # decoder name, e.g. "h264"
    pix_fmt: str  # decoded pixel format, e.g. "yuv420p"
    rotation: int = 0  # display-matrix rotation: degrees counter-clockwise, in (-180, 180]
    color_range: int | None = None
    color_space: int | None = None
    color_primaries: int | None = None
    color_trc: int | None = None
    audio_streams: int = 0  # audio streams the writer can remux untouched
    start_time: float | None = None  # seconds of the video stream's first timestamp
    sample_aspect_ratio: Fraction | None = None  # None when pixels are square or unknown
    # Seconds of the container's first timestamp: start/end windows count from here, the
    # clock players show (and ffmpeg -ss uses), so "start=2" means 2 s into the file.
    origin: float = 0.0
    interlaced: bool = False  # the first frame is flagged interlaced (two fields)
    alpha: bool = False  # the video has transparency (an alpha plane, or VP9's alpha side stream)
    #: HDR10's mastering display (SMPTE ST 2086) in x265's master-display notation
    #: ("G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)": chromaticities in 0.00002, luminances in 0.0001 cd/m²)
    mastering_display: str | None = None
    content_light: tuple[int, int] | None = None  # HDR10's (MaxCLL, MaxFALL) in cd/m²
    profile: str | None = None  # the codec's profile as FFmpeg names it ("HQ" for ProRes 422 HQ), where known
    #: an interlaced input's field order (FFmpeg's AVFieldOrder: 2 and 5 show the top field first, 3 and 4
    #: the bottom; 0 unknown), 1 (progressive) once it is deinterlaced; 0 for a progressive input
    field_order: int = 0

    @property
    def pixel_aspect(self) -> float:
        """A stored pixel's width over its height as shown (the sample aspect ratio; 1 where the
        file says none): what :class:`~streamrestore.pipeline.FaceRestorer` cuts faces for."""
        return float(self.sample_aspect_ratio) if self.sample_aspect_ratio else 1.0


#: FFmpeg's demuxers that read other files or addresses that the file names (a playlist, a concat list, a
#: DASH manifest, an IMF package, an SDP or RTSP session description). FFmpeg picks a demuxer by a file's
#: content, whatever its name: a 43-byte text file called upload.mp4 made the tool read and restore
#: another video of its folder. A local file is read as itself only.
LIST_FORMATS = frozenset({"hls", "concat", "dash", "imf", "sdp", "rtsp", "rtp"})


def local_media_options() -> dict[str, str]:
    """FFmpeg's options that open a local file as that file only: through the file protocol (a name in the
    current folder that reads as an address, ``http:host`` or ``concat:a|b``, is not fetched) and with any
    demuxer but :data:`LIST_FORMATS`."""
    return {"protocol_whitelist": "file",
            "format_whitelist": ",".join(sorted(name for name in av.formats_available if name not in LIST_FORMATS))}


def open_local_media(path: str | os.PathLike) -> av.container.InputContainer:
    """``av.open`` of a local media file for reading, as that file only (:func:`local_media_options`; its
    absolute path, so a name such as ``tcp:host:port`` is a file name). Raises what ``av.open`` raises; a
    list of other files is refused with ``av.error.ArgumentError``. :func:`open_input` says why in words."""
    return av.open(os.path.abspath(path), mode="r", options=local_media_options())


def _what_list(path: Path) -> str:
    """What kind of list of other files ``path`` is, by its first bytes ("" where it is none that we know)."""
    try:
        with path.open("rb") as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return ""
    kinds = ((b"#EXTM3U", "an HLS playlist"), (b"ffconcat", "an FFmpeg concat list"), (b"v=0", "an SDP session"))
    for start, kind in kinds:
        if head.startswith(start):
            return kind
    return "a DASH manifest" if b"<MPD" in head else ""


def open_input(path: str | os.PathLike) -> av.container.InputContainer:
    """Open ``path`` for demuxing (the reader's video and the writer's audio source are opened
    this way).

    Args:
        path: the media file.

    Raises:
        InputError: saying what is wrong with it (missing, a folder, standard input or a pipe,
            empty, unreadable, not media FFmpeg can read).
    """
    p = Path(path)
    # a video is read more than once (its frames, then the audio and subtitles the writer copies), which a
    # pipe allows only once
    once = "streamrestore reads a video more than once, which a pipe allows only once; save it to a file first"
    if str(path) == "-":
        raise InputError(f"reading the video from standard input (-) is not supported: {once}")
    if not p.exists():
        raise InputError(f"input not found: {p}")
    if p.is_dir():
        raise InputError(f"input is a folder, not a video file: {p}")
    if not p.is_file():
        raise InputError(f"input {p} is a pipe or a device, not a file: {once}")
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read input {p}: {exc.strerror or exc}") from None
    if size == 0:
        raise InputError(f"input is empty (0 bytes): {p}")
    try:
        container = open_local_media(p)
    except PermissionError:
        raise InputError(f"no permission to read input: {p}") from None
    except av.error.ArgumentError:  # (a demuxer not on the whitelist, a list of other files, among others)
        kind = _what_list(p)
        if kind:
            raise InputError(f"{p} is {kind}, not a video: streamrestore reads only the file it is given, not "
                             "the files a list names; give the video file itself") from None
        raise InputError(f"cannot read {p} as a video (Invalid argument); it may be damaged, not a video file, or "
                         "a list of other files (a playlist), which streamrestore does not follow") from None
    except av.error.FFmpegError as exc:
        if _recording_without_index(p):
            raise InputError(f"{p} is a recording whose index (its moov box) is missing: it was cut off before it was "
                             "finished (a camera or phone that lost power or storage), so nothing can read its frames; "
                             "a repair tool that rebuilds the index from a good recording of the same camera (such "
                             "as untrunc) may recover it") from None
        if getattr(exc, "errno", None) == errno.EIO:  # (FFmpeg's words, "Input/output error", read as a failing disk)
            raise InputError(f"cannot read {p} as a video: it ends before its header could be read (cut off: a copy "
                             "or download that did not finish?), or its disk or share could not be read") from None
        # e.g. InvalidDataError for text files
        raise InputError(
            f"cannot read {p} as a video ({exc.strerror or type(exc).__name__}); "
            "it may be damaged or not a video file"
        ) from None
    return container


def _recording_without_index(path: Path) -> bool:
    """Whether ``path`` is an MP4/MOV with its media (mdat) but no whole index (moov): a recording cut
    off before it was finished. Reads the top-level boxes' headers only."""
    seen = set()
    try:
        with path.open("rb") as f:
            size_of_file = path.stat().st_size
            at = 0
            while at + 8 <= size_of_file:
                f.seek(at)
                header = f.read(16)
                size, kind = struct.unpack(">I4s", header[:8])
                if size == 1 and len(header) == 16:
                    size = struct.unpack(">Q", header[8:16])[0]
                elif size == 0:  # "to the end of the file": a recorder's media box, sized when it finishes
                    size = size_of_file - at
                if size < 8:
                    break  # not boxes
                if at + size <= size_of_file or kind == b"mdat":  # (an index cut short is no index)
                    seen.add(kind)
                if kind == b"moov":
                    break
                at += size
    except (OSError, struct.error):
        return False
    return b"ftyp" in seen and b"mdat" in seen and b"moov" not in seen


def _several_pictures(path: str | os.PathLike) -> bool:
    """Whether the picture stream ``path`` (a ``*_pipe`` format: JPEGs one after another) holds more than one."""
    try:
        with open_local_media(path) as container:
            return sum(1 for packet, _ in zip(container.demux(video=0), range(3)) if packet.size) > 1
    except (av.error.FFmpegError, OSError, ValueError):
        return False


def pick_video_stream(container: av.container.InputContainer, path: str | os.PathLike) -> av.video.stream.VideoStream:
    """The main video stream, ignoring cover art: the one marked default, else the first.

    Args:
        container: the opened input.
        path: its path, for messages.

    Raises:
        InputError: there is no video stream, or the file is a photo (the container is closed).
    """
    if container.format.name in _STILL_IMAGE_FORMATS or container.format.name.endswith("_pipe") \
            and not _several_pictures(container.name):  # (an IP camera's MJPEG dump, JPEGs one after another)
        container.close()
        from streamrestore.images import is_image

        if is_image(path):
            raise InputError(f"{path} is a photo, not a video; photos are restored by restore_photo (the "
                             "streamrestore command restores either)")
        raise InputError(f"{path} is a still image in a format not read as a photo; save it as .jpg or .png")
    videos = [
        s
        for s in container.streams.video
        if not (s.disposition & av.stream.Disposition.attached_pic)
    ]
    if not videos:
        has_audio = bool(container.streams.audio)
        container.close()
        if has_audio:
            raise InputError(f"{path} has audio but no video stream; give a video file")
        raise InputError(f"{path} has no video stream; give a video file")
    # Prefer the stream FFmpeg marks as default, then the first one.
    for s in videos:
        if s.disposition & av.stream.Disposition.default:
            return s
    return videos[0]


#: 4:2:0 formats of more than 8 bits per sample (little-endian, as decoders give them) -> bits; the
#: pipeline keeps their depth (``streamrestore.pixels.Yuv420Pixels.of_deep``)
DEEP_YUV420 = {"yuv420p10le": 10, "yuv420p12le": 12}
#: other planar formats of 10 or 12 bits whose depth the pipeline keeps (4:2:2 and 4:4:4 YUV, such as
#: ProRes and DNxHR decode to, and planar RGB) -> bits (``streamrestore.pixels.RgbPixels.of_deep``)
DEEP_PLANAR = {f"{layout}p{bits}le": bits for layout in ("yuv422", "yuv444", "gbr") for bits in (10, 12)}

#: how much further back than its target a seek is tried again while it lands after it (seconds);
#: after the last, from the file's start
SEEK_BACK_STEPS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def seek_not_after(when: float, origin: float, seek: Callable[[float | None], None],
                   first_time: Callable[[], float | Fraction | None], tolerance: float = 0.0) -> bool:
    """Seeks so that what is read next starts at or before ``when`` (seconds on the container's
    clock), for a window that must lose nothing at its start.

    A file without an index (MPEG-TS) can land a seek by time a second or more after its target,
    and a decoder then drops every frame up to the next keyframe: the window's first frames or
    packets would be lost without a word. So the seek is tried at ``when``, then 1, 2, 4 ... 32 s
    before it, then at the file's start (what starts after ``when`` there starts after it).

    Args:
        when: the window's start. origin: the file's first time (no seek goes before it).
        seek: seeks the container to a time (None: its first byte); raises ``av.error.FFmpegError``
            when it cannot.
        first_time: starts reading (decoding or demuxing) from where the seek landed and gives
            the first item's time (None: nothing was read).
        tolerance: how far after ``when`` the first item may lie (half a tick for frames).

    Returns:
        False when the container cannot seek at all (the reading as opened stands: from the
        start); True otherwise (where a later try failed, the one before it stands).
    """
    for number, back in enumerate((*SEEK_BACK_STEPS, None)):
        at = None if back is None or when - back <= origin else when - back
        try:
            seek(at)
        except av.error.FFmpegError:
            return number > 0
        first = first_time()
        if at is None or (first is not None and first <= when + tolerance):
            return True
    return True


def frame_ticks(rate: float | Fraction, time_base: Fraction) -> int:
    """One frame at ``rate`` frames per second, in ticks of ``time_base`` (at least 1): the step
    where a frame says nothing of its own timing."""
    return max(1, round(1 / (rate * time_base)))


#: a stream's frame rate above this is passed over where FFmpeg gives another under it (a Matroska file's frame
#: duration written from its codec's time base: 2500 fps beside a guessed 25); one that every reading gives
#: (a high-speed camera's 1000 fps file) is kept
MAX_PLAUSIBLE_FPS = 500


#: FFmpeg's demuxers of raw elementary streams (a camera's .h264 or .hevc export): their average rate is FFmpeg's
#: default 25, the stream's own (its VUI timing: a DVR's 30) is the decoder's (cctv 7)
_RAW_STREAM_FORMATS = frozenset({"h264", "hevc", "mjpeg", "jpeg_pipe", "mpegvideo", "m4v"})


def stream_frame_rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    """The frame rate a stream is played at: its average rate, else the rate FFmpeg guesses, else the base
    rate (a raw stream's own rate first, :data:`_RAW_STREAM_FORMATS`); the first of those under
    :data:`MAX_PLAUSIBLE_FPS` where one is; None where none is given."""
    given: list[Fraction | None] = [stream.average_rate, stream.guessed_rate, stream.base_rate]
    container = getattr(stream, "container", None)
    if container is not None and container.format.name in _RAW_STREAM_FORMATS:  # (no container: no rate of its own)
        given.insert(0, stream.codec_context.framerate)
    rates = [Fraction(rate) for rate in given if rate and rate > 0]
    plausible = [rate for rate in rates if rate <= MAX_PLAUSIBLE_FPS]
    chosen = plausible or rates
    return chosen[0] if chosen else None


def _time_base(stream: av.video.stream.VideoStream) -> Fraction:
    """The time base of a demuxed stream (FFmpeg sets one on every stream it reads; PyAV's type
    allows None)."""
    return cast(Fraction, stream.time_base)


def _stream_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    # Matroska keeps per-stream durations as a tag written by FFmpeg's muxer: the stream's end
    # time (its last packet's pts + duration), so a stream that starts late is that much shorter
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        try:
            h, m, s = tag.split(":")
            end = int(h) * 3600 + int(m) * 60 + float(s)
        except ValueError:
            pass
        else:
            start = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
            return end - start if end > start else end
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _unset_to_none(value, unspecified) -> int | None:
    value = int(value)
    return None if value == unspecified else value


def _normalise_rotation(degrees) -> int:
    """Degrees in (-180, 180], so 180 and -180 (the same turn) read the same."""
    degrees = round(degrees) % 360
    return degrees - 360 if degrees > 180 else degrees


def quarter_turns(rotation: float) -> int:
    """How many times ``np.rot90`` turns a stored picture to show it upright, for a display
    rotation of ``rotation`` degrees counter-clockwise (``VideoFrame.rotation``: phones store
    portrait video sideways and tag it ±90). A rotation between quarter turns counts as the
    nearest one: detectors cope with faces tilted by up to ~45°."""
    if not math.isfinite(rotation):
        raise ValueError(f"rotation must be a finite number of degrees, got {rotation!r}")
    return round(rotation / 90) % 4


#: pixel formats with an alpha plane, by the start of their FFmpeg names
_ALPHA_FORMATS = ("rgba", "bgra", "argb", "abgr", "yuva", "gbrap", "ya8", "ya16")


def _has_alpha(pix_fmt: str) -> bool:
    return pix_fmt.startswith(_ALPHA_FORMATS)


def _describe(path, container, stream, first: av.VideoFrame | None) -> VideoInfo:
    cc = stream.codec_context
    rate = stream_frame_rate(stream)
    duration = _stream_duration(container, stream)
    frame_count = stream.frames or None
    if frame_count is None and duration and rate:
        frame_count = round(duration * rate)
    source = first if first is not None else cc
    mastering_display, content_light = _hdr10_metadata(first)
    sar = stream.sample_aspect_ratio
    sar = Fraction(sar) if sar and sar != 1 else None
    start = None
    if stream.start_time is not None and stream.time_base is not None:
        start = float(stream.start_time * stream.time_base)
    return VideoInfo(
        path=str(path),
        width=first.width if first is not None else cc.width,
        height=first.height if first is not None else cc.height,
        frame_rate=rate,
        time_base=Fraction(stream.time_base),
        frame_count=frame_count,
        duration=duration,
        codec=cc.name,
        pix_fmt=first.format.name if first is not None else (cc.pix_fmt or "unknown"),
        rotation=_normalise_rotation(first.rotation) if first is not None else 0,
        color_range=_unset_to_none(source.color_range, _RANGE_UNSPECIFIED),
        color_space=_unset_to_none(source.colorspace, _COLOR_UNSPECIFIED),
        color_primaries=_unset_to_none(source.color_primaries, _COLOR_UNSPECIFIED),
        color_trc=_unset_to_none(source.color_trc, _COLOR_UNSPECIFIED),
        audio_streams=len(container.streams.audio),
        start_time=start,
        sample_aspect_ratio=sar,
        origin=container.start_time / av.time_base if container.start_time else 0.0,
        interlaced=bool(first.interlaced_frame) if first is not None else False,
        field_order=int(cc.field_order or 0) if first is not None and first.interlaced_frame else 0,
        alpha=_has_alpha(first.format.name if first is not None else (cc.pix_fmt or ""))
        or stream.metadata.get("alpha_mode") == "1",  # WebM's VP9 alpha: decoded without it
        mastering_display=mastering_display,
        content_light=content_light,
        profile=cc.profile or None,
    )


def _hdr10_metadata(frame: av.VideoFrame | None) -> tuple[str | None, tuple[int, int] | None]:
    """A frame's HDR10 static metadata: its mastering display, as :attr:`VideoInfo.mastering_display`
    says, and its content light levels (FFmpeg puts the bitstream's SEI on each frame)."""
    display = light = None
    # (PyAV's side data container iterates its SideData objects; its stubs say str)
    for data in cast(Iterable[Any], frame.side_data.keys() if frame is not None else ()):
        raw = bytes(data)
        if data.type.name == "MASTERING_DISPLAY_METADATA" and len(raw) >= 88:
            # AVMasteringDisplayMetadata: 10 AVRationals (R, G, B primaries' x and y, white point
            # x and y, min and max luminance), then has_primaries, has_luminance
            values = struct.unpack_from("<20i2i", raw)
            ratio = [values[2 * i] / values[2 * i + 1] if values[2 * i + 1] else 0.0 for i in range(10)]
            if values[20] and values[21]:
                xy = [round(v * 50000) for v in ratio[:8]]
                display = (f"G({xy[2]},{xy[3]})B({xy[4]},{xy[5]})R({xy[0]},{xy[1]})WP({xy[6]},{xy[7]})"
                           f"L({round(ratio[9] * 10000)},{round(ratio[8] * 10000)})")
        elif data.type.name == "CONTENT_LIGHT_LEVEL" and len(raw) >= 8:
            light = struct.unpack_from("<2I", raw)
    return display, light


def probe(path: str | os.PathLike, deinterlace: bool | str = False) -> VideoInfo:
    """Describe the video in ``path`` (decodes only its first frame), as a :class:`VideoReader`
    with ``deinterlace`` gives its frames.

    Raises:
        InputError: as :class:`VideoReader` does.
    """
    with VideoReader(path, deinterlace=deinterlace) as reader:
        return reader.info


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded frame, using the frame's own matrix and range.

    :class:`~streamrestore.video.writer.VideoWriter` converts back with the same matrix and
    range, so a frame that goes out unchanged comes back with the same colours.
    """
    return frame.to_ndarray(
        format="rgb24",
        src_color_range=int(frame.color_range) or None,
        # swscale's fast 4:2:0 -> RGB path is ~1 level too bright, which darkens the whole
        # picture by ~1 level after the writer's RGB -> YUV; full-resolution chroma with
        # accurate rounding makes the round trip exact (costs ~5 ms per 1080p frame).
        interpolation=_ACCURATE_RGB,
    )


def turned_upright(picture: np.ndarray, rotation: float) -> np.ndarray:
    """``picture`` (H, W, ...) as shown with a display rotation of ``rotation`` degrees
    counter-clockwise: turned by :func:`quarter_turns` (a contiguous copy), or itself."""
    turns = quarter_turns(rotation)
    return np.ascontiguousarray(np.rot90(picture, turns)) if turns else picture


def upright_rgb(frame: av.VideoFrame) -> np.ndarray:
    """:func:`frame_to_rgb` turned as the frame is shown, for pictures that go on without the
    rotation tag: live mode's preview and outputs."""
    return turned_upright(frame_to_rgb(frame), frame.rotation)


def _repeat_frame(frame: av.VideoFrame, pts: int, duration: int) -> av.VideoFrame:
    """A copy of ``frame`` (pixels, colour tags) shown at ``pts`` for ``duration``."""
    copy = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for src, dst in zip(frame.planes, copy.planes):
        # memoryview: the planes have the buffer protocol, which numpy's types only know from 3.12
        a = np.frombuffer(memoryview(src), np.uint8).reshape(-1, src.line_size)
        b = np.frombuffer(memoryview(dst), np.uint8).reshape(-1, dst.line_size)
        rows, width = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
        b[:rows, :width] = a[:rows, :width]
    picture_type = copy.pict_type  # a stand-in for a lost frame: the encoder chooses its type
    _keep_timing_and_tags(copy, frame)
    copy.pts, copy.duration, copy.pict_type = pts, duration or frame.duration, picture_type
    return copy


def _keep_timing_and_tags(out: av.VideoFrame, frame: av.VideoFrame) -> None:
    """``out``, a new picture made from ``frame`` (copied, scaled, deinterlaced), given ``frame``'s
    pts, time base, duration, picture type and colour tags."""
    out.pts, out.time_base, out.duration = frame.pts, frame.time_base, frame.duration
    out.pict_type = frame.pict_type
    out.colorspace, out.color_range = frame.colorspace, frame.color_range
    out.color_primaries, out.color_trc = frame.color_primaries, frame.color_trc


def resized(frame: av.VideoFrame, width: int, height: int) -> av.VideoFrame:
    """``frame`` scaled to ``width`` x ``height`` in its own format, with its timing and colour tags
    (a stream that changes size mid-way is given at one size: the reader's and the live stream's)."""
    out = frame.reformat(width=width, height=height, interpolation="BICUBIC")
    _keep_timing_and_tags(out, frame)
    return out


#: frames looked at for fields woven into frames the file does not flag interlaced (:func:`woven_field_order`)
WOVEN_LOOK_FRAMES = 16
#: ... in videos at most this tall (SD and 1080i: no interlaced format is taller; a taller progressive video's
#: first frames are not held back for it)
WOVEN_MAX_HEIGHT = 1088


def woven_field_order(frames: Sequence[av.VideoFrame]) -> str | None:
    """``"tff"`` or ``"bff"`` where FFmpeg's idet finds most of ``frames`` woven from two fields of different
    instants (a capture card's MJPEG, a re-encode that lost the flag), else None.

    Each frame's own verdict (idet's "single") is counted: woven needs at least half the frames and three
    times as many as progressive ones. On the first 16 frames of 120 progressive shared clips at most 5
    came out woven (beside 5 progressive); a PAL MJPEG capture 13 of 16, top field first (family F9). A still
    interlaced picture shows no combing and reads as progressive (and needs no deinterlacing). None also
    where the filter cannot be set up for the frames' format."""
    if not frames:
        return None
    verdicts: Counter[str] = Counter()
    try:
        graph = av.filter.Graph()
        first = frames[0]
        source = graph.add_buffer(width=first.width, height=first.height, format=first.format,
                                  time_base=first.time_base or Fraction(1, 90000))
        idet = graph.add("idet")
        sink = graph.add("buffersink")
        source.link_to(idet)
        idet.link_to(sink)
        graph.configure()
        for frame in [*frames, None]:
            graph.push(frame)
            while True:
                try:
                    out = cast(av.VideoFrame, graph.pull())
                except (av.error.BlockingIOError, av.error.EOFError):
                    break
                verdicts[out.metadata.get("lavfi.idet.single.current_frame", "")] += 1
    except (av.error.FFmpegError, ValueError):
        return None
    woven = verdicts["tff"] + verdicts["bff"]
    if woven < max(4, len(frames) / 2) or woven < 3 * verdicts["progressive"]:
        return None
    return "tff" if verdicts["tff"] >= verdicts["bff"] else "bff"


def _woven_order_of_file(path: Path) -> str | None:
    """:func:`woven_field_order` of the first frames of the file at ``path`` (None where one is flagged
    interlaced, or they cannot be read): what a window of it decides by, as the whole file does (review 52:
    chunks of one capture starting on a still shot kept their combing beside deinterlaced ones)."""
    try:
        with open_local_media(path) as container:  # (a local file only, as the reader opens it)
            stream = pick_video_stream(container, path)
            frames = list(itertools.islice(container.decode(stream), WOVEN_LOOK_FRAMES))
    except (av.error.FFmpegError, InputError, OSError):
        return None
    return None if any(f.interlaced_frame for f in frames) else woven_field_order(frames)


class Deinterlacer:
    """FFmpeg's bwdif, one progressive frame out per frame in (``send_frame``), each with its input
    frame's pts, time base, duration and picture type. Only frames flagged interlaced are changed;
    the field order is each frame's own. ``field_order`` (``"tff"``, ``"bff"``) takes every frame for
    interlaced in that order instead (fields woven into frames the file does not flag:
    :func:`woven_field_order`). bwdif holds one frame back (it looks at the next one)
    and gives it up when the input ends. Used by :class:`VideoReader` and the live stream source.
    The filter is set up for the first frame's size and format (a stream's own may name a later
    picture's); the frames given must keep them (the reader scales a size change before)."""

    def __init__(self, per_field: bool = False, field_order: str | None = None) -> None:
        if field_order not in (None, "tff", "bff"):
            raise ValueError(f"field_order must be None, 'tff' or 'bff', got {field_order!r}")
        #: one frame per field (``send_field``: 50i gives 50p), timed in half the input's time base (the
        #: filter's own; a frame flagged progressive gives one frame)
        self.per_field = per_field
        self.field_order = field_order
        self._graph: av.filter.Graph | None = None

    def _configure(self, first: av.VideoFrame) -> av.filter.Graph:
        graph = av.filter.Graph()
        source = graph.add_buffer(width=first.width, height=first.height, format=first.format,
                                  time_base=first.time_base or Fraction(1, 90000))
        mode = "send_field" if self.per_field else "send_frame"
        bwdif = graph.add("bwdif", f"mode={mode}:parity=auto:deint=interlaced")
        sink = graph.add("buffersink")
        if self.field_order is not None:  # (flags every frame interlaced, in that order)
            setfield = graph.add("setfield", self.field_order)
            source.link_to(setfield)
            setfield.link_to(bwdif)
        else:
            source.link_to(bwdif)
        bwdif.link_to(sink)
        graph.configure()
        return graph

    def frames(self, frames: Iterable[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        """``frames`` deinterlaced, in order, one for one (:attr:`per_field`: two for one)."""
        given: deque[av.VideoFrame] = deque()
        for frame in frames:
            if self._graph is None:
                self._graph = self._configure(frame)
            given.append(frame)
            self._graph.push(frame)
            yield from self._pull(given)
        if self._graph is not None:
            self._graph.push(None)
            yield from self._pull(given)

    def _pull(self, given: deque[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        while given:
            try:
                out = cast(av.VideoFrame, cast(av.filter.Graph, self._graph).pull())
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            if self.per_field:  # (its own timing, in field time: the tags of the frame it came from)
                while len(given) > 1 and given[1].pts is not None and out.pts is not None and \
                        out.pts >= 2 * given[1].pts:
                    given.popleft()
                timing = (out.pts, out.time_base, out.duration)
                _keep_timing_and_tags(out, given[0])
                out.pts, out.time_base, out.duration = timing
                out.pict_type = av.video.frame.PictureType.NONE
                yield out
                continue
            # the filter counts in field time (half the time base); the frame keeps the file's
            _keep_timing_and_tags(out, given.popleft())
            yield out


class VideoReader:
    """Decode one video stream of a file, in presentation order.

    Args:
        path: any file FFmpeg can demux (mp4, mkv, mov, webm, ts, ...).
        start: first second to return, counted from the file's start as players show it
            (``info.origin``); frames before it are decoded from the keyframe before it and
            skipped. None reads from the beginning.
        end: stop before the first frame at or after this second (same clock); None reads
            to the end. A window with no frame in it raises InputError.
        threads: decoder threads; 0 lets FFmpeg pick one per core. Frame and slice
            threading are both allowed (``thread_type = "AUTO"``).
        deinterlace: ``"fields"``: when the first frame is flagged interlaced, give a frame per field (50i
            gives 50p; ``info``'s rate, count and time base say so: half the input's). True: when the first
            frame is flagged interlaced, give each frame deinterlaced
            (bwdif, one frame per frame; see the module). ``info.interlaced`` then says False
            (the frames given are progressive) and ``problems`` says it was done. Default False:
            the frames as decoded.
        size: ``(width, height)`` every frame is given at (``info`` says it); None: the first
            frame's. A stream that changes size mid-way is scaled to it either way (the output holds
            one size); a window that starts after the change is given at the whole file's size.
        counted: ``(from, until)`` seconds (the clock of ``start``; None: open) of the frames that
            :attr:`problems` counts (damaged, scaled); None: every frame given. A batch chunk reads
            warm-up frames around the frames it keeps, which the chunks beside it count.

    Use as a context manager, from one thread. ``info`` is available right after
    construction; :meth:`frames` can be iterated once.

    Raises:
        InputError: the file cannot be read as a video, no frame decodes, or no frame lies in
            the window.
        ValueError: a bad ``start``, ``end`` or ``threads``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        start: float | None = None,
        end: float | None = None,
        threads: int = 0,
        deinterlace: bool | str = False,
        size: tuple[int, int] | None = None,
        counted: tuple[float | None, float | None] | None = None,
    ) -> None:
        for name, value in (("start", start), ("end", end)):
            if value is not None and (not isinstance(value, numbers.Real) or isinstance(value, bool)):
                raise ValueError(f"{name} must be a number of seconds, got {value!r}")
        if start is not None and not (start >= 0 and math.isfinite(start)):
            raise ValueError(f"start must be a finite number of seconds >= 0, got {start!r}")
        if end is not None and not (end > 0 and math.isfinite(end)):
            raise ValueError(f"end must be a finite number of seconds > 0, got {end!r}")
        if start is not None and end is not None and end <= start:
            raise ValueError(f"end ({end}) must be after start ({start})")
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        if size is not None and not (len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise ValueError(f"size must be (width, height) in pixels, got {size!r}")
        self.counted = counted
        self.path = Path(path)
        self.start = start
        self.end = end
        self.frames_decoded = 0
        self.problems: list[str] = []
        #: the times (seconds from the file's start) of the frames given so far that damaged data spoiled: lost
        #: and given as a repeat of the frame before, or decoded with errors (within ``counted``)
        self.damaged_times: list[float] = []
        self._damaged_packets = 0
        self._lost_leading = 0  # pictures before the first that decodes, which cannot be made up
        # a raw stream's packets and frames have no timestamps: what never decoded is their difference
        self._untimed_packets = self._untimed_frames = 0
        self._interlaced_seen = False  # (a field-coded picture may come in two packets: then not compared)
        self._last_time: float | None = None
        self._iterated = False
        self._container = open_input(self.path)
        try:
            self._stream = pick_video_stream(self._container, self.path)
            self._stream.thread_type = "AUTO"
            self._stream.thread_count = threads
            origin = self._container.start_time
            self._origin = origin / av.time_base if origin else 0.0
            # The first frame carries rotation and colour tags; keep it to yield later.
            self._first: tuple[av.VideoFrame, bool] | None = None  # (frame, repeated)
            if not start or not self._seek_to(self._origin + start):
                if start:  # (the seeks left the demuxer anywhere: a raw .h264 stream at its end, "no frame decodes")
                    self._container.close()
                    self._container = open_input(self.path)
                    self._stream = pick_video_stream(self._container, self.path)
                    self._stream.thread_type = "AUTO"
                    self._stream.thread_count = threads
                self._start_decoding()
            if self._first is None:
                raise InputError(
                    f"no video frame in {self.path} could be decoded; the file is damaged "
                    "or the video stream is empty"
                )
            self.info: VideoInfo = _describe(self.path, self._container, self._stream, self._first[0])
            if size is not None:
                self.info = dataclasses.replace(self.info, width=size[0], height=size[1])
            self._deinterlacer: Deinterlacer | None = None
            #: whether frames given were deinterlaced (flagged interlaced, or woven: :meth:`frames`); final once
            #: :meth:`frames` is exhausted
            self.deinterlaced: bool = False
            # a progressive start (a broadcast capture's ident) may turn interlaced later: the fields are
            # then looked for in every frame (frames())
            if deinterlace not in (True, False, "fields"):
                raise ValueError(f"deinterlace must be True, False or 'fields', got {deinterlace!r}")
            self._deinterlace_later: bool = bool(deinterlace) and not self.info.interlaced
            self._field_rate: bool = deinterlace == "fields"
            if deinterlace == "fields" and self.info.interlaced:
                self._deinterlacer = Deinterlacer(per_field=True)
                self.deinterlaced = True
                info = self.info
                self.info = dataclasses.replace(
                    info, interlaced=False, field_order=1, time_base=info.time_base / 2,
                    frame_rate=info.frame_rate * 2 if info.frame_rate else None,
                    frame_count=info.frame_count * 2 if info.frame_count else None)
                self.problems.append("the input is interlaced: each field was made a frame (bwdif: twice the frames "
                                     "of the input, each at its field's instant, the motion kept whole)")
            elif deinterlace and self.info.interlaced:
                self._deinterlacer = Deinterlacer()
                self.deinterlaced = True
                self.info = dataclasses.replace(self.info, interlaced=False, field_order=1)
                self.problems.append("the input is interlaced: each frame was deinterlaced (bwdif: one frame at "
                                     "its first field's instant, timestamps kept); --no-deinterlace (library: "
                                     "deinterlace=False) keeps the fields woven as they are")
            if start:
                # Decode up to the window now (from the keyframe before it, as frames() would),
                # so a start past the end fails here, before the caller loads anything.
                self._skip_to_window(start)
        except BaseException:
            self._container.close()
            raise

    def _start_decoding(self) -> float | None:
        """Decodes from where the container is; the first frame's time (None: no frame)."""
        self._damaged_packets = 0  # counted again from here
        self._untimed_packets = self._untimed_frames = 0
        self._decoded = self._decode()
        self._first = next(self._decoded, None)
        return None if self._first is None else self._first[0].time

    def _seek_to(self, when: float) -> bool:
        """Decodes from at or before ``when`` (:func:`seek_not_after`); False when the file cannot
        seek (said in a warning; the caller decodes from the start and skips)."""
        stream = self._stream

        def seek(at: float | None) -> None:
            if at is None:  # 0 on the container's clock: its first byte (a ts seek by pts lands late)
                self._container.seek(0, backward=True)
            else:
                self._container.seek(int(at / _time_base(stream)), stream=stream, backward=True)

        def first_time() -> float | None:
            time = self._start_decoding()
            # a frame without a time is taken where it is (it cannot be placed)
            return when if self._first is not None and time is None else time

        if seek_not_after(when, self._origin, seek, first_time, tolerance=float(_time_base(stream)) / 2):
            return True
        # unseekable input (pipes, some ts): decode from the start and skip instead
        logger.warning("cannot seek in %s; decoding from the start", self.path)
        return False

    def _skip_to_window(self, start: float) -> None:
        """Make ``_first`` the first frame at or after ``start``; InputError if there is none."""
        eps = float(_time_base(self._stream)) / 2
        first = self._origin + start - eps
        item = self._first
        while item is not None and item[0].time is not None and item[0].time < first:
            item = next(self._decoded, None)
        if item is None or (
            self.end is not None and item[0].time is not None and item[0].time >= self._origin + self.end - eps
        ):
            raise InputError(self._empty_window_message())
        self._first = item

    def _empty_window_message(self) -> str:
        # the window is on the file's clock (from its first packet, audio too: as players show
        # it); say where the video frames lie on that clock, where they may start later
        def given(seconds: float) -> str:  # as precise as given: 0.501 and 0.5011 were both "0.50"
            return f"{seconds:.6f}".rstrip("0").rstrip(".")

        window = (f"from {given(self.start or 0)} s" if self.end is None
                  else f"between {given(self.start or 0)} s and {given(self.end)} s")
        first = (self.info.start_time - self._origin) if self.info.start_time is not None else None
        if first is not None and self.info.duration:
            where = f"its video frames lie between {first:.2f} s and {first + self.info.duration:.2f} s"
        elif self.info.duration:
            where = f"its video is {self.info.duration:.2f} s long"
        else:
            where = "its length is unknown"
        return (f"no video frame of {self.path} lies {window} ({where}, counted from the start of the file as "
                "players show it); choose a window inside it")

    def _packets(self) -> Iterator[av.Packet]:
        """The video packets, ending with the empty packet that drains the decoder."""
        return self._container.demux(self._stream)

    def _decode_packets(self, expected: list) -> Iterator[av.VideoFrame]:
        """Every frame the decoder gives, including the ones it holds until flushed. The pts of
        each packet that should become a frame is pushed onto the heap ``expected``."""
        stream = self._stream
        try:
            for packet in self._packets():
                if packet.size and packet.pts is not None and not packet.is_discard:
                    heapq.heappush(expected, (packet.pts, packet.duration or 0))
                elif packet.size and not packet.is_discard:
                    self._untimed_packets += 1
                if packet.is_corrupt:
                    self._damaged_packets += 1
                try:
                    # PyAV ends demuxing with an empty packet, which drains the decoder.
                    yield from packet.decode()
                except (av.error.InvalidDataError, av.error.PatchWelcomeError) as exc:
                    self._damaged_packets += 1
                    logger.debug("skipping undecodable packet in %s: %s", self.path, exc)
        except (av.error.FFmpegError, OSError) as exc:
            # Demuxing broke off (cut file, read error): keep what decoded, report it.
            self.problems.append(f"reading stopped early: {exc}")
            try:
                yield from stream.decode(None)
            except (av.error.FFmpegError, EOFError):
                pass

    def _decode(self) -> Iterator[tuple[av.VideoFrame, bool]]:
        """(frame, repeated) for each decoded frame, and for each frame the decoder lost to
        damaged data a copy of the frame before it at the lost packet's timestamp (repeated).

        A packet whose pts lies before the frame the decoder outputs now will never become a
        frame (frames come out in presentation order), so its place is filled there. Frames
        lost before the first decoded one are not made up (there is no frame to repeat).
        """
        expected: list = []  # heap of (pts, duration) of packets not yet matched by a frame
        last = None
        first_pts = None  # the first decoded frame's
        self._lost_leading = 0
        for frame in self._decode_packets(expected):
            pts = frame.pts
            self._untimed_frames += pts is None
            self._interlaced_seen |= bool(frame.interlaced_frame)
            if pts is not None:
                first_pts = pts if first_pts is None else first_pts
                while expected and expected[0][0] < pts:
                    lost, duration = heapq.heappop(expected)
                    # (a file cut mid-GOP starts with pictures whose keyframe is gone, the open GOP's
                    # leading ones too, all before the first frame that decodes: counted, said)
                    self._lost_leading += lost < first_pts
                    if last is not None and last.pts is not None and lost > last.pts:
                        last = _repeat_frame(last, lost, duration)
                        yield last, True
                if expected and expected[0][0] == pts:
                    heapq.heappop(expected)
            last = frame
            yield frame, False
        # Packets after the last frame that never decoded (damaged data at the very end).
        while expected and last is not None and last.pts is not None:
            lost, duration = heapq.heappop(expected)
            if lost > last.pts:
                last = _repeat_frame(last, lost, duration)
                yield last, True

    def _report_damage(self, repeated: int, corrupt: int, times: Sequence[float] = ()) -> None:
        """One line in ``problems`` for all the damaged data met in the window read; ``times``: the affected
        frames' times from the file's start, said as the places to look at (an editor or an archivist checks
        those frames: "2 frames" alone sent them through the whole film)."""
        if repeated or corrupt:
            parts = []
            if repeated:
                parts.append(f"{repeated} could not be decoded and repeat the frame before")
            if corrupt:
                parts.append(f"{corrupt} decoded with errors and pass through as they are")
            self.problems.append(
                f"damaged data in the file: {repeated + corrupt} frame(s) affected "
                f"({'; '.join(parts)}){_places(times, self.info.frame_rate)}; timestamps are kept"
            )
        elif self._damaged_packets:
            self.problems.append(f"damaged data in the file: {self._damaged_packets} packet(s) could not be decoded")

    def frames(self) -> Iterator[av.VideoFrame]:
        """Decoded frames in presentation order, within [start, end). A frame lost to damaged
        data comes as a copy of the frame before it, at its own timestamp (see the module);
        deinterlaced where the reader was asked to.

        Raises:
            RuntimeError: when iterated a second time.
            InputError: no frame lies in the window.
        """
        if self._iterated:
            raise RuntimeError("VideoReader.frames() can only be iterated once")
        self._iterated = True
        frames = self._frames_in_window()
        if self._deinterlace_later:
            frames = self._deinterlaced_from_first_flagged(frames)
        yield from frames if self._deinterlacer is None else self._deinterlacer.frames(frames)

    def _deinterlaced_from_first_flagged(self, frames: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        """``frames``, deinterlaced from the first one flagged interlaced on: a capture that opened progressive
        and turned interlaced kept its combing, tagged progressive (the first frame alone was looked at).
        Where none of the first frames is flagged but most are woven from two fields
        (:func:`woven_field_order`), every frame is deinterlaced in that field order."""
        looked: list[av.VideoFrame] = []
        if self.info.height <= WOVEN_MAX_HEIGHT:
            if self.start:  # a window or a batch chunk: the file's own first frames, so every part of it agrees
                order = _woven_order_of_file(self.path)
            else:
                looked = list(itertools.islice(frames, WOVEN_LOOK_FRAMES))
                order = None if any(f.interlaced_frame for f in looked) else woven_field_order(looked)
            if order is not None:
                first = "top" if order == "tff" else "bottom"
                # (--field-rate sets the output's rate as the file opens: a weave found after gives a frame each)
                rate = "; --field-rate needs the file's own flags: one frame per frame here" \
                    if self._field_rate else ""
                self.problems.append(f"the input's frames are woven from two fields though the file does not flag "
                                     f"them interlaced (FFmpeg's idet, on the file's first frames; {first} field "
                                     "first): each frame was deinterlaced (bwdif: one frame at its first field's "
                                     "instant, timestamps kept); --no-deinterlace (library: deinterlace=False) keeps "
                                     f"the fields woven as they are{rate}")
                self.deinterlaced = True
                yield from Deinterlacer(field_order=order).frames(itertools.chain(looked, frames))
                return
        given = itertools.chain(looked, frames)
        for index, frame in enumerate(given):
            if frame.interlaced_frame:
                # (on the clock players show: from the file's first timestamp)
                at = f"{float(frame.pts * frame.time_base) - self.info.origin:.2f} s" \
                    if frame.pts is not None and frame.time_base else f"frame {index}"
                self.problems.append(f"the input turns interlaced at {at} (frame {index} of the window): from there "
                                     "each frame flagged interlaced was deinterlaced (bwdif: one frame at its first "
                                     "field's instant, timestamps kept); --no-deinterlace (library: "
                                     "deinterlace=False) keeps the fields woven as they are")
                self.deinterlaced = True
                yield from Deinterlacer().frames(itertools.chain([frame], given))
                return
            yield frame

    def _frames_in_window(self) -> Iterator[av.VideoFrame]:
        """:meth:`frames` as decoded."""
        # Half a tick of slack so a frame exactly at `start` or `end` is not lost to rounding.
        eps = float(_time_base(self._stream)) / 2
        first = None if self.start is None else self._origin + self.start - eps
        last = None if self.end is None else self._origin + self.end - eps
        count_from, count_until = (None, None) if self.counted is None else (
            None if when is None else self._origin + when - eps for when in self.counted)

        def counted(t: float | None) -> bool:
            return t is None or ((count_from is None or t >= count_from) and (count_until is None or t < count_until))
        reached_end = True
        pending = [self._first] if self._first is not None else []
        self._first = None
        repeated = corrupt = placed = unstamped = 0
        damaged_at = self.damaged_times  # the affected frames' times, from the file's start
        tb = _time_base(self._stream)
        rate = self.info.frame_rate
        step = frame_ticks(rate, tb) if rate else 1
        previous: tuple[int, int] | None = None  # (pts, duration) of the frame before
        size = (self.info.width, self.info.height)  # a broadcast capture may change it (an SD advert): scaled
        scaled: list[float | None] = []  # times of the frames scaled to it

        def all_frames():
            yield from pending
            yield from self._decoded

        first_given: float | None = None  # the first decoded frame's time
        for frame, is_repeat in all_frames():
            # A frame without a timestamp, or with one not after the frame before (a broken mux:
            # every pts 0), is placed one frame after it: the writer needs increasing timestamps,
            # and no frame is dropped for the file's fault.
            if frame.pts is None or (previous is not None and frame.pts <= previous[0]):
                unstamped += frame.pts is None
                placed += frame.pts is not None
                frame.pts = previous[0] + (previous[1] or step) if previous is not None else round(self._origin / tb)
            previous = (frame.pts, frame.duration)
            t = frame.time
            if first_given is None:
                first_given = t
            if t is not None:
                if first is not None and t < first:
                    continue
                if last is not None and t >= last:
                    reached_end = False
                    break
                self._last_time = t + float((frame.duration or 0) * frame.time_base)
            self.frames_decoded += 1
            if counted(t):
                repeated += is_repeat
                corrupt += frame.is_corrupt and not is_repeat
                if t is not None and (is_repeat or frame.is_corrupt):
                    damaged_at.append(t - self._origin)
            if (frame.width, frame.height) != size:
                if counted(t):
                    scaled.append(frame.time)
                frame = resized(frame, *size)
            yield frame
        self._report_damage(repeated, corrupt, damaged_at)
        if self._lost_leading and self.start is None and first_given is not None:
            self.problems.append(f"the file starts without the keyframe its first {self._lost_leading} frame(s) need "
                                 "(cut mid-GOP?): they cannot be decoded and are left out; the video starts at the "
                                 f"first frame that decodes, {first_given - self._origin:.2f} s in")
        if scaled:
            when = f" from {scaled[0] - self._origin:.2f} s" if scaled[0] is not None else ""
            self.problems.append(f"the video changes size mid-stream: {len(scaled)} frame(s){when} were scaled to "
                                 f"{size[0]}x{size[1]}, the size of its first frame (the output holds one size)")
        if unstamped:
            rate_text = f" at {float(rate):g} fps" if rate else ""
            self.problems.append(f"{unstamped} frame(s) had no timestamp (a raw stream?): each was placed one frame "
                                 f"after the frame before{rate_text}")
        if placed:
            self.problems.append(f"{placed} frame(s) had a timestamp not after the frame before's: each was placed "
                                 "one frame after it (the file's timestamps are broken)")
        lost = self._untimed_packets - self._untimed_frames
        if reached_end and lost > 0 and self.start is None and self.end is None and not self._interlaced_seen:
            # (the TS or MP4 cut the same way says so above, from its packets' timestamps)
            self.problems.append(f"{lost} picture(s) of the stream could not be decoded and are left out: a raw "
                                 "stream cut before a keyframe (mid-GOP?) loses the pictures up to it, damaged "
                                 "data the pictures that need it")
        if reached_end:
            self._check_complete()
        if self.frames_decoded == 0 and (self.start is not None or self.end is not None):
            raise InputError(self._empty_window_message())

    def _check_complete(self) -> None:
        """Note in ``problems`` if the stream ended well before its declared duration."""
        expected = self.info.duration
        if expected is None or self._last_time is None:
            return
        if self.info.start_time:
            expected += self.info.start_time
        if self.end is not None:
            expected = min(expected, self._origin + self.end)
        slack = _TRUNCATION_SLACK_S
        if self.info.frame_rate:
            slack = max(slack, _TRUNCATION_SLACK_FRAMES / float(self.info.frame_rate))
        if self._last_time < expected - slack:
            self.problems.insert(
                0,
                f"input is truncated: decoding stopped at {self._last_time:.1f} s "
                f"(frame {self.frames_decoded}) of {expected:.1f} s",
            )
        # Not logged here: the callers report ``problems`` once (the run summary, live's exit).

    def close(self) -> None:
        """Closes the file."""
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: how many places a damage warning names (the rest counted)
PLACES_SAID = 4


def _places(times: Sequence[float], rate: Fraction | None) -> str:
    """" at 1.00 s, 3.20-3.36 s and 2 more places": ``times`` (seconds, ascending) with frames next to each other
    (within 1.5 frames) said as one span; "" without any."""
    if not times:
        return ""
    gap = 1.5 / float(rate) if rate else 0.0
    spans = [[times[0], times[0]]]
    for t in times[1:]:
        if t - spans[-1][1] <= gap:
            spans[-1][1] = t
        else:
            spans.append([t, t])
    said = [f"{a:.2f} s" if round(a, 2) == round(b, 2) else f"{a:.2f}-{b:.2f} s" for a, b in spans[:PLACES_SAID]]
    more = len(spans) - len(said)
    return " at " + ", ".join(said) + (f" and {more} more place{'s' if more > 1 else ''}" if more else "")
