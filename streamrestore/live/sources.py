"""Live sources: a camera, a video file played in real time, or a network stream.

Every source yields :class:`LiveFrame` values stamped with the capture clock
(``time.monotonic()`` when the frame became available here), which is what the latency figures
and the output timestamps are measured from. :class:`LatestFrame` runs a source in a thread and
keeps only the newest frame, so a consumer that falls behind skips frames instead of queueing
them.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from streamrestore.errors import InputError
from streamrestore.settings import check_kinds

log = logging.getLogger(__name__)

#: URL schemes read through PyAV (FFmpeg protocols).
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "rtp", "tcp", "http", "https")


@dataclass
class LiveFrame:
    """One captured frame.

    ``payload`` is what the source produced (a BGR array from OpenCV, an ``av.VideoFrame`` from
    PyAV); :meth:`rgb` converts it only when the frame is actually used, so frames dropped at
    the input cost no colour conversion.
    """

    index: int  # position in the source, counting dropped frames
    captured: float  # time.monotonic() when the frame became available
    payload: Any
    _to_rgb: Callable[[Any], np.ndarray] = field(repr=False, default=None)
    #: seconds on the source's own timeline (a file's timestamps, continued across loops); None
    #: for cameras and network streams, whose frames are timed by when they were captured
    media_time: float | None = None

    @property
    def timestamp(self) -> float:
        """Seconds to time the frame by in outputs: the source's own time when it has one,
        else the capture time (only differences between frames matter)."""
        return self.media_time if self.media_time is not None else self.captured

    def rgb(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        return self._to_rgb(self.payload) if self._to_rgb is not None else self.payload


def shown_rgb(frame) -> np.ndarray:
    """A decoded frame as live mode shows, restores and sends it: RGB, upright, and an HDR frame
    (PQ, HLG) in SDR: the window and the outputs are SDR, and the restorer knows SDR faces (in
    their coded values an HDR picture is pale, a PQ one flat; mapped from its 8-bit conversion:
    ~3 ms at 720p)."""
    from streamrestore.hdr import to_sdr_picture
    from streamrestore.video.reader import upright_rgb

    return to_sdr_picture(frame, upright_rgb(frame))


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a source that drops is reopened.

    Args:
        retries: reopen attempts in a row before giving up (default 5; the count starts again
            after every frame that arrives, so a stream may drop any number of times).
        backoff: seconds before the first attempt (default 0.5), doubled after each failure...
        max_backoff: ...up to this many seconds (default 4): 5 attempts span about 10 s.
        timeout: seconds a network open or read may block before the stream counts as dropped
            (default 5: long enough for a keyframe interval and a slow server, short enough to
            notice a dead sender quickly).
    """

    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 4.0
    timeout: float = 5.0

    def __post_init__(self):
        check_kinds(self)
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if not self.backoff >= 0 or not self.max_backoff >= self.backoff:
            raise ValueError(f"need 0 <= backoff <= max_backoff, got {self.backoff} and {self.max_backoff}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reopen attempt ``attempt`` (0-based)."""
        return min(self.backoff * (2 ** attempt), self.max_backoff)


class LiveSource:
    """Base of the sources: ``width``, ``height``, ``fps`` (nominal) and ``name`` after
    construction; :meth:`frames` yields until the source ends or ``stop`` is set."""

    name: str = "source"
    width: int = 0
    height: int = 0
    fps: float = 30.0
    reconnects: int = 0  # how many times the source was reopened after a drop
    #: True when the source can wait for its consumer (a file read as fast as possible): then
    #: :class:`LatestFrame` holds it back instead of dropping frames
    can_wait: bool = False
    #: a pixel's width over its height as shown, in the frames given (a DVD's 32:27; turned with them)
    pixel_aspect: float = 1.0
    #: a network stream carries audio (live outputs carry the picture only: the CLI says so)
    has_audio: bool = False
    #: the source ended because it was lost (gone, and not back after the retries), not at its end
    lost: bool = False
    problems: list

    def frames(self, stop: threading.Event) -> Iterator[LiveFrame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass


def _as_shown(width: int, height: int, pixel_aspect: float, rotation: float) -> tuple[int, int, float]:
    """A stored picture's width, height and pixel aspect as it is shown, turned by its display
    rotation (a phone's portrait video, stored sideways): the frames the sources give."""
    from streamrestore.video.reader import quarter_turns

    if quarter_turns(rotation) % 2:
        return height, width, 1 / pixel_aspect
    return width, height, pixel_aspect


def _wait(stop: threading.Event, seconds: float) -> bool:
    """Sleeps up to ``seconds``; True if ``stop`` was set meanwhile."""
    return stop.wait(seconds) if seconds > 0 else stop.is_set()


# --- camera ------------------------------------------------------------------------------------

def _bgr_to_rgb(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr[..., ::-1])


class CameraSource(LiveSource):
    """An OpenCV capture device (webcam, capture card) by index.

    Args:
        index: device number (0 is the first camera).
        width, height, fps: requested capture mode; None keeps the driver's default. Drivers
            pick the nearest mode they support, so the actual values are read back.
        policy: reopening after the device disappears (unplugged, taken by another program).
    """

    def __init__(self, index: int, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, policy: ReconnectPolicy = ReconnectPolicy()):
        if index < 0:
            raise ValueError(f"camera index must be >= 0, got {index}")
        self.index = index
        self.name = f"camera {index}"
        self.policy = policy
        self.problems = []
        self.reconnects = 0
        self._request = (width, height, fps)
        self._cap = self._open()
        if self._cap is None:
            raise InputError(
                f"cannot open camera {index}; check that it is connected and not used by another "
                "program, or give a video file or URL with --source"
            )
        import cv2

        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS)) or 30.0

    def _open(self):
        import cv2

        # OpenCV logs a WARN/ERROR line per backend it tries when there is no such camera;
        # our own error (or the reconnect warning) says it once, plainly.
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        try:
            cap = cv2.VideoCapture(self.index)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not cap.isOpened():
            cap.release()
            return None
        width, height, fps = self._request
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        # Drivers queue a few frames by default; one keeps the newest frame the newest.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def frames(self, stop: threading.Event) -> Iterator[LiveFrame]:
        index = 0
        while not stop.is_set():
            ok, bgr = self._cap.read() if self._cap is not None else (False, None)
            if ok:
                yield LiveFrame(index, time.monotonic(), bgr, _bgr_to_rgb)
                index += 1
                continue
            if not self._reopen(stop):
                return

    def _reopen(self, stop: threading.Event) -> bool:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        for attempt in range(self.policy.retries):
            log.warning("%s stopped delivering frames; reopening (attempt %d of %d)",
                        self.name, attempt + 1, self.policy.retries)
            if _wait(stop, self.policy.delay(attempt)):
                return False
            self._cap = self._open()
            if self._cap is not None:
                self.reconnects += 1
                return True
        self.problems.append(f"{self.name} was lost and could not be reopened")
        self.lost = True
        return False

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# --- video file as a camera -------------------------------------------------------------------

class FileSource(LiveSource):
    """A video file played at its own frame rate, standing in for a camera. Its frames come
    as the file is shown: turned by its display rotation (a phone's portrait video is stored
    sideways), with ``width`` and ``height`` those of the turned picture.

    Args:
        path: any video file the file mode reads.
        realtime: release each frame at its timestamp (default True, like a camera: a slow
            consumer then misses frames). False releases frames as fast as they decode.
        loop: start again at the end (default False: the source ends with the file).
        deinterlace: an interlaced file's frames are deinterlaced (default True; see
            :class:`~streamrestore.video.reader.VideoReader`).
    """

    def __init__(self, path: str | Path, *, realtime: bool = True, loop: bool = False, deinterlace: bool = True):
        from streamrestore.video.reader import probe

        self.path = Path(path)
        self.name = str(path)
        self.realtime = realtime
        self.can_wait = not realtime
        self.loop = loop
        self.deinterlace = deinterlace
        self.problems = []
        self.reconnects = 0
        info = probe(self.path)  # InputError for anything that is not a readable video
        # frames are given as shown: a phone's portrait video, stored sideways, comes out upright
        self.width, self.height, self.pixel_aspect = _as_shown(info.width, info.height, info.pixel_aspect,
                                                               info.rotation)
        self.fps = float(info.frame_rate) if info.frame_rate else 30.0

    def frames(self, stop: threading.Event) -> Iterator[LiveFrame]:
        from streamrestore.video.reader import VideoReader

        index = 0
        clock_start = time.monotonic()
        offset = 0.0  # seconds of file already played in earlier loops
        while not stop.is_set():
            first_time = None
            last_time = 0.0
            with VideoReader(self.path, deinterlace=self.deinterlace) as reader:
                for frame in reader.frames():
                    if stop.is_set():
                        return
                    t = frame.time if frame.time is not None else index / self.fps
                    if first_time is None:
                        first_time = t
                    last_time = t - first_time
                    if self.realtime and _wait(stop, clock_start + offset + last_time - time.monotonic()):
                        return
                    yield LiveFrame(index, time.monotonic(), frame, shown_rgb, media_time=offset + last_time)
                    index += 1
                self.problems.extend(reader.problems)
            if not self.loop or first_time is None:
                return
            offset += last_time + 1.0 / self.fps


# --- network stream ---------------------------------------------------------------------------

def _input_options(url: str) -> dict[str, str]:
    """FFmpeg options that trade buffering for latency, per protocol."""
    scheme = url.split("://", 1)[0].lower()
    options = {
        "flags": "low_delay",
        # Probe less before the first frame (default 5 MB / 5 s); enough to find SPS/PPS.
        "probesize": "1000000",
        "analyzeduration": "2000000",
    }
    if scheme not in ("http", "https"):
        # Hand each packet to the decoder at once instead of buffering for smooth playback. The
        # packets read while probing are then dropped: over http that may be a file whose only
        # keyframe is among them (no frame at all), so http keeps them.
        options["fflags"] = "nobuffer"
    if scheme == "rtsp":
        options["rtsp_transport"] = "tcp"  # UDP RTP loses packets on busy networks: grey smears
    if scheme == "udp":
        options["overrun_nonfatal"] = "1"  # a full receive buffer loses packets instead of the run
    return options


class StreamSource(LiveSource):
    """A network stream read through PyAV: rtsp, rtmp, srt, udp (MPEG-TS), http(s), tcp.

    A stream that stops (sender gone, network down, server closed it) is reopened following
    ``policy``; frames before a drop and after the reconnect come out as one stream. The first
    open follows the same policy, so the sender may start a little after the receiver. Frames
    come as shown, as a :class:`FileSource`'s do: the first frame, decoded at open, says the
    stream's display rotation and so the ``width`` and ``height`` of the turned picture.

    A file served over http(s) (it says how long it is, or its size) is played as a file is: at its own pace
    (``realtime``, else as fast as it decodes, waiting for the consumer), once, ending at its end.
    """

    def __init__(self, url: str, *, policy: ReconnectPolicy = ReconnectPolicy(), realtime: bool = True,
                 deinterlace: bool = True):

        self.url = url
        self.name = url
        self.policy = policy
        self.realtime = realtime
        self.deinterlace = deinterlace
        self.problems = []
        self.reconnects = 0
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None  # (width, height) of the first frame, as stored
        self._resized = 0  # frames scaled to it
        self._read_error: str | None = None  # why reading the open stream stopped, if it did
        # the first frame says how the stream is shown, and its size (the codec's may be a later
        # picture's: probing can read past a switch); it is given first
        error, first = self._open_first()
        attempt = 0
        while error is not None and attempt < policy.retries:
            log.warning("cannot open %s yet (%s); retrying in %.1f s", url, error, policy.delay(attempt))
            time.sleep(policy.delay(attempt))
            error, first = self._open_first()
            attempt += 1
        if error is not None:
            advice = self._advice(nothing_read=self._container is not None)
            self.close()
            raise InputError(f"cannot open stream {url}: {error}; {advice}")
        cc = self._stream.codec_context
        self.width, self.height = cc.width, cc.height
        self.has_audio = bool(self._container.streams.audio)  # (not carried to the outputs: said)
        self._held = [first]
        sar = self._stream.sample_aspect_ratio
        if first is not None:
            self.width, self.height, self.pixel_aspect = _as_shown(first.width, first.height,
                                                                   float(sar) if sar else 1.0, first.rotation)
        from streamrestore.video.reader import stream_frame_rate

        rate = stream_frame_rate(self._stream)
        self.fps = float(rate) if rate and 1 <= float(rate) <= 240 else 30.0
        self.can_wait = self._finite and not realtime

    def _open_first(self) -> tuple[str | None, Any]:
        """Opens the URL and decodes its first frame: (None, frame) or (what went wrong, None)."""
        error = self._open()
        if error is not None:
            return error, None
        first = next(self._frames, None)
        if first is None:
            return f"it opened, but no frame could be read from it ({self._read_error or 'it ended'})", None
        return None, first

    def _advice(self, nothing_read: bool = False) -> str:
        """What to check; ``nothing_read``: the stream opened but not one frame could be read."""
        path = self.url.split("?", 1)[0].lower()
        if (nothing_read and self._read_error is not None and self.url.split("://", 1)[0].lower() in ("http", "https")
                and path.endswith((".mp4", ".mov", ".m4v"))):
            # FFmpeg reads an MP4's index where it lies; at the end, it must seek there
            return ("a file over http needs its index (moov) at its start (ffmpeg -i IN -c copy -movflags +faststart "
                    "OUT.mp4), or a server that serves byte ranges")
        return "check that the sender is running and the URL is right"

    def _open(self) -> str | None:
        """Opens the URL; returns None or what went wrong."""
        import av

        self.close()
        self._read_error = None
        try:
            container = av.open(self.url, options=_input_options(self.url),
                                timeout=(self.policy.timeout, self.policy.timeout))
        except av.error.ExitError:  # FFmpeg's words for the open our timeout cut short
            return f"nothing received for {self.policy.timeout:g} s"
        except av.error.ProtocolNotFoundError:
            from streamrestore.live.sinks import no_protocol

            raise InputError(f"cannot open stream {self.url}: {no_protocol(self.url)}") from None
        except (av.error.FFmpegError, OSError) as exc:
            return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if not container.streams.video:
            container.close()
            return "no video stream in it"
        if not container.streams.video[0].codec_context.width:
            container.close()  # probing ended before a decodable picture (e.g. no keyframe yet)
            return "no picture size found in the stream yet"
        self._container = container
        self._stream = container.streams.video[0]
        self._stream.thread_type = "AUTO"
        # a file served over http says how long it is, or at least how many bytes (an MPEG-TS file
        # names no duration unless the server lets FFmpeg read its end), and ends at its end; live
        # streams say neither (FLV says 0), and other protocols' estimates are not to be trusted
        self._finite = self.url.split("://", 1)[0].lower() in ("http", "https") and (
            (container.duration or 0) > 0 or (container.size or 0) > 0)
        self._ended = False  # its packets ran out without an error
        self._frames = self._decoded()  # one reader of the container's packets, whoever asks first
        return None

    def _decoded(self) -> Iterator:
        """The frames of the open stream until it stops (``_ended`` says whether at its end);
        an interlaced stream's deinterlaced (one frame later: bwdif looks at the next frame)."""
        from streamrestore.video.reader import Deinterlacer

        frames = self._packets_decoded()
        first = next(frames, None)
        if first is None:
            return
        if self._size is None:  # the outputs are opened at the first frame's size, kept after reconnects
            self._size = (first.width, first.height)
        frames = self._at_first_size(itertools.chain([first], frames))
        if self.deinterlace and first.interlaced_frame:
            if not self.reconnects:
                log.info("%s is interlaced: deinterlacing it (bwdif; --no-deinterlace keeps the woven fields)", self.url)
            frames = Deinterlacer().frames(frames)
        yield from frames

    def _at_first_size(self, frames: Iterator) -> Iterator:
        """``frames`` at the stream's first size, the size its outputs were opened at (a broadcast
        switching to an SD advert)."""
        from streamrestore.video.reader import resized

        for frame in frames:
            if (frame.width, frame.height) != self._size:
                if not self._resized:
                    log.warning("%s changes size mid-stream (%dx%d, was %dx%d): its frames are scaled to the first "
                                "size", self.url, frame.width, frame.height, *self._size)
                self._resized += 1
                frame = resized(frame, *self._size)
            yield frame

    def _packets_decoded(self) -> Iterator:
        """The frames decoded from the open stream's packets until it stops."""
        import av

        try:
            for packet in self._container.demux(self._stream):
                try:
                    decoded = packet.decode()
                except (av.error.InvalidDataError, av.error.PatchWelcomeError) as exc:
                    # Lost packets (UDP) or a stream joined mid-GOP: wait for the next keyframe.
                    log.debug("%s: undecodable packet skipped: %s", self.url, exc)
                    continue
                yield from decoded
            self._ended = True
        except (av.error.FFmpegError, OSError, EOFError) as exc:
            log.debug("%s: reading stopped: %s", self.url, exc)
            self._read_error = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__

    def frames(self, stop: threading.Event) -> Iterator[LiveFrame]:
        index = 0
        held, self._held = self._held, []
        # a file over http is played as a file is: timed by its own clock (outputs keep it),
        # paced by it, and after a dropped connection (which reopens it at its start) resumed
        # after the last frame given
        clock = None  # (monotonic time, file time) of its first frame
        last = None  # file time of the last frame given
        given = 0  # frames of the file given: after a reopen, as many decoded frames are skipped
        placed = 0  # frames given a time one frame after the frame before's
        barren = 0  # connections in a row that gave no new frame (each reconnect's attempts start again)
        while not stop.is_set():
            decoded = 0
            fresh = index
            for frame in itertools.chain(held, self._frames):
                if stop.is_set():
                    return
                media_time = None
                if self._finite:
                    decoded += 1
                    if decoded <= given:
                        continue  # given before the connection dropped
                    given += 1
                    at = frame.time
                    if at is None or (last is not None and at <= last):
                        # no time, or one not after the frame before's (segments joined, each from 0):
                        # placed one frame after it, as the file mode places it (the time would
                        # otherwise hold the frames back, or the outputs would go back in time)
                        at = 0.0 if last is None else last + float(frame.duration * frame.time_base
                                                                     if frame.duration else 1 / self.fps)
                        placed += 1
                    clock = clock or (time.monotonic(), at)
                    if self.realtime and _wait(stop, clock[0] + at - clock[1] - time.monotonic()):
                        return
                    last = at
                    media_time = at - clock[1]
                yield LiveFrame(index, time.monotonic(), frame, shown_rgb, media_time=media_time)
                index += 1
            held = []
            if self._ended and self._finite:
                log.info("%s: its end reached", self.url)
                break
            barren = 0 if index > fresh else barren + 1
            if barren > self.policy.retries:  # it opens, but nothing can be read: it will not get better
                self.lost = True
                self.problems.append(f"{self.url} reconnected {barren} times in a row without a new frame "
                                     f"({self._read_error or 'it ended at once'}); given up: {self._advice()}")
                break
            if stop.is_set() or not self._reopen(stop):
                break
        if placed:
            self.problems.append(f"{placed} frame(s) of {self.url} had no timestamp, or one not after the frame "
                                 "before's: each was placed one frame after it")

    def _reopen(self, stop: threading.Event) -> bool:
        for attempt in range(self.policy.retries):
            delay = self.policy.delay(attempt)
            log.warning("%s dropped; reconnecting in %.1f s (attempt %d of %d)",
                        self.url, delay, attempt + 1, self.policy.retries)
            if _wait(stop, delay):
                return False
            error = self._open()
            if error is None:
                self.reconnects += 1
                log.info("%s reconnected", self.url)
                return True
            log.debug("%s: reopen failed: %s", self.url, error)
        self.problems.append(f"{self.url} dropped and did not come back after {self.policy.retries} attempts")
        self.lost = True
        return False

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # a broken connection may fail to close; it is gone either way
                pass
            self._container = None


def open_source(spec: str | int, *, realtime: bool = True, loop: bool = False,
                policy: ReconnectPolicy = ReconnectPolicy(), deinterlace: bool = True) -> LiveSource:
    """A source from what the user typed: a camera index (``"0"``), a URL, or a file path;
    ``deinterlace``: for files and streams whose frames are interlaced (default True)."""
    text = str(spec).strip()
    if text.isdigit():
        return CameraSource(int(text), policy=policy)
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme == "file":
            return FileSource(text[len("file://"):], realtime=realtime, loop=loop, deinterlace=deinterlace)
        if scheme not in NETWORK_SCHEMES:
            raise InputError(f"unsupported source URL scheme {scheme}://; use one of "
                             + ", ".join(f"{s}://" for s in NETWORK_SCHEMES))
        return StreamSource(text, policy=policy, realtime=realtime, deinterlace=deinterlace)
    return FileSource(text, realtime=realtime, loop=loop, deinterlace=deinterlace)


# --- newest frame wins ------------------------------------------------------------------------

class LatestFrame:
    """Runs a source in a thread and keeps only its newest frame.

    A consumer slower than the source gets the most recent frame each time it asks; the frames
    in between are dropped (counted in :attr:`dropped`), so the wait between capture and
    output never grows. Nothing is queued: memory is one frame. A source that can wait
    (``source.can_wait``, e.g. a file read as fast as possible) is held back instead, and
    every frame is used.
    """

    def __init__(self, source: LiveSource):
        self.source = source
        self.captured = 0
        self.dropped = 0
        self._frame: LiveFrame | None = None
        self._ended = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamrestore-capture", daemon=True)

    def start(self) -> "LatestFrame":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            hold_back = self.source.can_wait
            for frame in self.source.frames(self._stop):
                with self._cond:
                    while hold_back and self._frame is not None and not self._stop.is_set():
                        self._cond.wait(0.1)
                    if self._stop.is_set():
                        return
                    if self._frame is not None:
                        self.dropped += 1
                    self._frame = frame
                    self.captured += 1
                    self._cond.notify()
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify()

    def get(self, timeout: float | None = None) -> LiveFrame | None:
        """The newest frame not yet taken; waits up to ``timeout`` for one. None when none came
        in time or the source has ended (see :attr:`ended`)."""
        with self._cond:
            if self._frame is None and not self._ended:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            self._cond.notify()  # a held-back source may go on
            if frame is None and self._error is not None:
                error, self._error = self._error, None
                raise error
            return frame

    def discard(self) -> None:
        """Drops the waiting frame (e.g. while paused), so the next one taken is fresh."""
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
                self._frame = None

    @property
    def ended(self) -> bool:
        """True once the source has ended and its last frame was taken."""
        with self._cond:
            return self._ended and self._frame is None and self._error is None

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the capture thread (network reads end within the policy's timeout)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.source.close()
