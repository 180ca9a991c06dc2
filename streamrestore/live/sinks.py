"""Live outputs: a video file or a network stream, timestamped from the source's clock.

Frames arrive at an uneven rate (the input drops what processing cannot keep up with), so each
output frame's timestamp is its time relative to the first frame: for cameras and network
streams the capture time, for a video file source its own timestamp (so with
``--as-fast-as-possible`` the output plays at the file's pace, not at the processing speed).
Players then show the restored stream at the pace it was filmed, gaps included.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

from streamrestore.errors import OutputError
from streamrestore.output_file import check_output_path

log = logging.getLogger(__name__)

#: 90 kHz: MPEG-TS's native clock, fine enough for any frame rate.
TIME_BASE = Fraction(1, 90000)

# Output muxer per URL scheme.
_STREAM_FORMATS = {"udp": "mpegts", "srt": "mpegts", "tcp": "mpegts", "rtp": "rtp_mpegts",
                   "rtmp": "flv", "rtmps": "flv", "rtsp": "rtsp"}


def is_url(spec: str) -> bool:
    return "://" in str(spec) and not str(spec).lower().startswith("file://")



#: FFmpeg's BT.709 colour space, primaries and transfer (1) and limited ("tv") range (1): what live
#: outputs are converted with and tagged as
BT709_TAGS = {"color_space": 1, "color_primaries": 1, "color_trc": 1, "color_range": 1}

class _Clock:
    """Capture times → strictly increasing pts in :data:`TIME_BASE`."""

    def __init__(self):
        self.start: float | None = None
        self.last: int | None = None

    def pts(self, captured: float) -> int:
        if self.start is None:
            self.start = captured
        pts = round((captured - self.start) / TIME_BASE)
        if self.last is not None and pts <= self.last:
            pts = self.last + 1  # two frames within one tick: keep order, nudge by one tick
        self.last = pts
        return pts


class StreamSink:
    """Encodes frames to a network URL with H.264 tuned for low latency.

    Args:
        url: ``udp://HOST:PORT`` (MPEG-TS), ``srt://...``, ``tcp://...``, ``rtmp://.../app/key``
            (FLV), ``rtsp://...`` (publish to an RTSP server).
        width, height: frame size (every frame must have it).
        keyframe_interval: seconds between keyframes (default 1: a receiver that joins late,
            or loses packets, shows a picture within about a second).
        crf: x264 quality (default 23, x264's own default: a network stream favours size).
        timeout: seconds a connection attempt may take (rtmp, srt, tcp, rtsp).

    ``zerolatency`` turns off x264's lookahead and B-frames, so every frame leaves the encoder
    as soon as it is given; ``ultrafast`` keeps encoding a 640x480 frame to a few ms.
    """

    def __init__(self, url: str, width: int, height: int, *, keyframe_interval: float = 1.0, crf: int = 23,
                 timeout: float = 10.0):
        import av

        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        if not keyframe_interval > 0:
            raise ValueError(f"keyframe_interval must be positive, got {keyframe_interval}")
        self.url = url
        self.name = url
        self.width, self.height = width, height
        self.keyframe_interval = keyframe_interval
        self.frames_written = 0
        scheme = url.split("://", 1)[0].lower()
        fmt = _STREAM_FORMATS.get(scheme)
        if fmt is None:
            raise OutputError(f"cannot stream to {scheme}:// URLs; use udp://, srt://, tcp://, rtmp:// or rtsp://")
        target = url
        if scheme == "udp" and "pkt_size" not in url:
            # 7 TS packets per datagram: fits a 1500-byte MTU without IP fragmentation.
            target += ("&" if "?" in url else "?") + "pkt_size=1316"
        try:
            self._out = av.open(target, mode="w", format=fmt, timeout=timeout)
        except (av.error.FFmpegError, OSError) as exc:
            if isinstance(exc, av.error.ProtocolNotFoundError):
                raise OutputError(f"cannot open output {url}: {no_protocol(url)}") from None
            raise OutputError(f"cannot open output {url}: {getattr(exc, 'strerror', None) or exc}; "
                              "check the address and that the receiving server is running") from None
        try:
            stream = self._out.add_stream("libx264", options={
                "preset": "ultrafast", "tune": "zerolatency", "crf": str(crf),
                # Keyframes are forced by time below; this only caps the GOP if time stalls.
                "g": "600", "forced-idr": "1",
            })
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            context = stream.codec_context  # (SDR BT.709, converted so in write: see FileSink)
            context.colorspace, context.color_range = BT709_TAGS["color_space"], BT709_TAGS["color_range"]
            context.color_primaries, context.color_trc = BT709_TAGS["color_primaries"], BT709_TAGS["color_trc"]
            stream.codec_context.time_base = TIME_BASE
            stream.time_base = TIME_BASE
            self._stream = stream
            self._out.start_encoding()
        except (av.error.FFmpegError, OSError) as exc:
            self._close_quietly()
            if isinstance(exc, av.error.ProtocolNotFoundError):
                raise OutputError(f"cannot start streaming to {url}: {no_protocol(url)}") from None
            raise OutputError(f"cannot start streaming to {url}: {getattr(exc, 'strerror', None) or exc}") from None
        self._clock = _Clock()
        self._last_key: int | None = None

    def write(self, rgb: np.ndarray, captured: float) -> None:
        """Encodes and sends one RGB frame timed at ``captured`` (seconds; see the module docstring)."""
        import av

        if self._out is None:
            raise RuntimeError("write() after close()")
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            format="yuv420p", dst_colorspace=BT709_TAGS["color_space"], dst_color_range=BT709_TAGS["color_range"])
        frame.pts = self._clock.pts(captured)
        frame.time_base = TIME_BASE
        every = round(self.keyframe_interval / TIME_BASE)
        if self._last_key is None or frame.pts - self._last_key >= every:
            frame.pict_type = av.video.frame.PictureType.I
            self._last_key = frame.pts
        try:
            for packet in self._stream.encode(frame):
                self._out.mux(packet)
        except (av.error.FFmpegError, OSError) as exc:
            raise OutputError(f"sending to {self.url} failed: {getattr(exc, 'strerror', None) or exc}") from None
        self.frames_written += 1

    def close(self) -> None:
        """Flushes the encoder and ends the stream (a receiver sees the end of the stream)."""
        if self._out is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._out.mux(packet)
        except Exception as exc:  # the peer may already be gone; closing must still finish
            log.debug("flushing %s: %s", self.url, exc)
        self._close_quietly()

    def abort(self) -> None:
        self._close_quietly()

    def _close_quietly(self) -> None:
        if self._out is not None:
            try:
                self._out.close()
            except Exception as exc:
                log.debug("closing %s: %s", self.url, exc)
            self._out = None


class FileSink:
    """Writes frames to a video file through :class:`streamrestore.video.writer.VideoWriter`
    (atomic: the file appears complete, or not at all if the run fails).

    Args:
        path: output file (.mp4, .mkv, .mov, .webm, .ts).
        width, height: frame size.
        fps: nominal rate written in the header; the real timing is each frame's timestamp.
        force: replace an existing file.
        encoder: codec, crf and preset (default None: ``EncoderSettings()``, the main command's:
            x264 "veryfast" keeps up in real time at 720p on two cores while staying far smaller
            than "ultrafast"; VP9 for .webm).
    """

    def __init__(self, path: str | Path, width: int, height: int, *, fps: float = 30.0, force: bool = False,
                 encoder=None):
        from streamrestore.provenance import restored_comment
        from streamrestore.video.reader import VideoInfo
        from streamrestore.video.writer import EncoderSettings, VideoWriter

        self.path = Path(path)
        self.name = str(path)
        info = VideoInfo(
            path=str(path), width=width, height=height,
            frame_rate=Fraction(fps).limit_denominator(1001) if fps > 0 else None,
            time_base=TIME_BASE, frame_count=None, duration=None, codec="rawvideo", pix_fmt="yuv420p",
            # the restored RGB is SDR: converted with, and tagged as, BT.709 (untagged, a player takes
            # an HD picture for BT.709, and swscale's default BT.601 shifted its colours)
            **BT709_TAGS,
        )
        self._writer = VideoWriter(self.path, info, encoder if encoder is not None else EncoderSettings(), force=force,
                                   comment=restored_comment())
        for note in self._writer.notes:  # (how the file will play: an odd-sized picture as 4:4:4), said at once
            log.warning("%s: %s", self.name, note)
        self._clock = _Clock()
        self.frames_written = 0  # given to the writer (it holds the newest one back)

    def write(self, rgb: np.ndarray, captured: float) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self._clock.pts(captured)
        frame.time_base = TIME_BASE
        self._writer.write(frame)
        self.frames_written += 1

    def close(self) -> None:
        """Finishes the file (moov index written, renamed into place): it plays from here on."""
        if self.frames_written == 0:
            # Nothing was captured: leave no file rather than raise at shutdown.
            self._writer.abort()
            log.warning("no frames reached %s, so it was not written", self.path)
            return
        self._writer.close()

    def abort(self) -> None:
        self._writer.abort()


def check_output(spec: str, *, force: bool = False) -> None:
    """Fails fast (before models load) on an output that cannot be written."""
    from streamrestore.video.writer import TIMESTAMP_CONTAINERS

    if is_url(spec):
        scheme = spec.split("://", 1)[0].lower()
        if scheme not in _STREAM_FORMATS:
            raise OutputError(f"cannot stream to {scheme}:// URLs; use udp://, srt://, tcp://, rtmp:// or rtsp://")
        return
    path = Path(spec)
    check_output_path(path, force, "live.mp4")
    if path.suffix.lower() not in TIMESTAMP_CONTAINERS:
        raise OutputError(f"cannot write {path.suffix or 'extension-less'} files; use .mp4, .mkv, .mov, .webm or .ts")


def open_sink(spec: str, width: int, height: int, *, fps: float = 30.0, force: bool = False,
              encoder=None) -> StreamSink | FileSink:
    """A :class:`StreamSink` for a URL, else a :class:`FileSink` (both are a
    :class:`~streamrestore.types.LiveSink`). ``encoder`` (an
    :class:`~streamrestore.video.writer.EncoderSettings`): a file's codec, crf and preset; a
    stream's crf only (a stream is H.264 "ultrafast" "zerolatency": every frame leaves at once)."""
    if is_url(spec):
        crf = encoder.crf if encoder is not None and encoder.crf is not None else None
        return StreamSink(spec, width, height) if crf is None else StreamSink(spec, width, height, crf=crf)
    return FileSink(spec[len("file://"):] if spec.lower().startswith("file://") else spec,
                    width, height, fps=fps, force=force, encoder=encoder)


def no_protocol(url: str) -> str:
    """What to say when PyAV's FFmpeg lacks ``url``'s protocol (PyPI's wheels are built without SRT)."""
    import av

    scheme = url.split("://", 1)[0].lower()
    return (f"this FFmpeg (PyAV {av.__version__}'s) has no {scheme}:// support; use udp://, rtmp:// or tcp://, or "
            "an FFmpeg built with it (e.g. PyAV built from source against a system FFmpeg with libsrt)")
