"""The live loop: newest frame in, restored frame out (window and/or sinks), latency measured.

One thread captures (keeping only the newest frame); the calling thread restores, shows and
sends, in capture order. Latency is measured per frame from capture to the moment the frame
was shown and sent.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from streamrestore.live.sources import LatestFrame, LiveSource
from streamrestore.settings import check_kinds
from streamrestore.types import LiveSink

if TYPE_CHECKING:  # pragma: no cover
    from streamrestore.pipeline import FaceRestorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveConfig:
    """Per-run choices of the live loop.

    Args:
        window: show the preview window (default True).
        max_frames: stop after this many frames were output (default None: until the source
            ends, ``q``, or SIGINT/SIGTERM/SIGHUP).
        max_width: preview width limit for both panes together (default 1600 pixels).
        snapshot_dir: where the ``s`` key saves PNGs (default: the current folder).
        warm_up: run the detector and restorer once on blank input before the first frame
            (default True), so one-time initialisation is not paid by the first live frame.
    """

    window: bool = True
    max_frames: int | None = None
    max_width: int = 1600
    snapshot_dir: Path = Path(".")
    warm_up: bool = True

    def __post_init__(self):
        check_kinds(self)
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {self.max_frames}")


@dataclass
class LiveStats:
    """What a live run did; :meth:`summary` is printed at exit."""

    frames_out: int = 0
    unrestored: int = 0  # of frames_out, passed on with restoration turned off (the window's r key)
    captured: int = 0
    dropped: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    latencies: list = field(default_factory=list)  # seconds, capture → shown/sent, per frame out

    def percentile(self, q: float) -> float | None:
        """Latency percentile in milliseconds (None before any frame)."""
        if not self.latencies:
            return None
        return float(np.percentile(np.asarray(self.latencies) * 1000.0, q))

    @property
    def fps(self) -> float:
        return self.frames_out / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (f"live: {self.frames_out} frames out ({self.fps:.1f} fps over {self.seconds:.1f} s), "
                f"{self.captured} captured, {self.dropped} dropped at the input")
        left = self.captured - self.dropped - self.frames_out
        if left > 0:  # (taken from the source, then the run stopped before it went out)
            text += f", {left} captured as the run stopped"
        if self.unrestored:
            text += (f"; {self.unrestored} of the frames out had restoration off (r; the line above counts the "
                     f"{self.frames_out - self.unrestored} restored)")
        if self.reconnects:
            text += f", source reconnected {self.reconnects} time(s)"
        if self.latencies:
            text += (f"\nlatency capture→shown/sent: p50 {self.percentile(50):.0f} ms, "
                     f"p95 {self.percentile(95):.0f} ms")
        return text


def warm_up(face_restorer, width: int, height: int) -> None:
    """Runs the detector and the restorer once on blank input.

    First calls pay for lazy initialisation (ONNX sessions, kernel selection, memory pools);
    paying it here keeps it off the first live frame. The tracker and statistics are untouched.
    """
    face_restorer.detector.detect(np.zeros((height, width, 3), np.uint8))
    restorer = face_restorer.restorer
    r = restorer.resolution  # the model's own side (larger crops are shrunk to it)
    caches = list(face_restorer.caches.values()) or [None]
    unadapted = getattr(restorer, "unadapted", None)  # --adapt: each person's own network, and the base's
    if unadapted is not None:
        caches += [unadapted(c) for c in caches if c is not None]
    # every identity once: an adapted person's network, or another reference count, is a program of its own
    with torch.inference_mode():
        for cache in {id(c): c for c in caches}.values():
            restorer.restore(torch.full((1, 3, r, r), 0.5), [cache])


class _Meter:
    """Output frame rate over the last second, for the window's status line."""

    def __init__(self, window: float = 1.0):
        self.window = window
        self.times: deque = deque()

    def tick(self, now: float) -> float:
        self.times.append(now)
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


class _StopOnSignal:
    """SIGINT/SIGTERM/SIGHUP set a flag instead of killing the run, so outputs are finalised.

    A second SIGINT while stopping raises KeyboardInterrupt as usual (an escape hatch if
    finalising hangs). Only the main thread may install handlers; elsewhere this does nothing.
    """

    def __init__(self, requested: threading.Event | None = None):
        self.requested = requested if requested is not None else threading.Event()
        self._saved: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
                if sig is not None:
                    self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        if self.requested.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.info("%s received: stopping and finishing the outputs", signal.Signals(signum).name)
        self.requested.set()

    def __exit__(self, *exc):
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved.clear()
        return False


class LiveSession:
    """Restores a live source into a preview window and/or outputs.

    Args:
        face_restorer: a :class:`streamrestore.pipeline.FaceRestorer` built with ``lookahead=0``
            and ``channel_order="rgb"`` (its references are already encoded).
        source: a :class:`streamrestore.live.sources.LiveSource` (already open).
        sinks: outputs (:class:`~streamrestore.types.LiveSink`: ``open_sink``).
        config: see :class:`LiveConfig`.
        window: a ready :class:`PreviewWindow` (default: one is opened when ``config.window``).
    """

    def __init__(self, face_restorer: FaceRestorer, source: LiveSource, sinks: Sequence[LiveSink] = (), *,
                 config: LiveConfig = LiveConfig(), window=None):
        if face_restorer.config.lookahead != 0:
            raise ValueError("live mode needs a FaceRestorer built with lookahead=0")
        if face_restorer.channel_order != "rgb":
            raise ValueError("live mode gives RGB frames; build the FaceRestorer with channel_order='rgb'")
        self.face_restorer = face_restorer
        self.source = source
        self.sinks = list(sinks)
        self.config = config
        self.stats = LiveStats()
        self.restoring = True
        self.paused = False
        self._window = window
        self._stop = threading.Event()
        if self._window is None and config.window:
            from streamrestore.live.preview import PreviewWindow

            self._window = PreviewWindow(max_width=config.max_width, snapshot_dir=config.snapshot_dir)

    def request_stop(self) -> None:
        """Ends :meth:`run` soon, from any thread (as SIGINT does): outputs are finished."""
        self._stop.set()

    def run(self) -> LiveStats:
        """Runs until the source ends, ``max_frames``, ``q``, or SIGINT/SIGTERM/SIGHUP; then closes the
        outputs (files are finalised and playable) and returns the statistics."""
        if self.config.warm_up:
            try:
                warm_up(self.face_restorer, self.source.width, self.source.height)
            except BaseException:  # e.g. stopped while warming up: no output is left half-made
                self._close_outputs(False)
                raise
        grabber = LatestFrame(self.source)
        meter = _Meter()
        ok = False
        with _StopOnSignal(self._stop) as signals:
            started = time.monotonic()
            grabber.start()
            try:
                self._loop(grabber, meter, signals)
                ok = True
            finally:
                grabber.stop()
                self.stats.seconds = time.monotonic() - started
                self.stats.captured = grabber.captured
                self.stats.dropped = grabber.dropped
                self.stats.reconnects = self.source.reconnects
                self._close_outputs(ok)
        for problem in self.source.problems:
            log.warning("%s", problem)
        return self.stats

    def _loop(self, grabber: LatestFrame, meter: _Meter, signals: _StopOnSignal) -> None:
        size = (self.source.width, self.source.height)
        resized_warned = False
        last_pair = None
        while not signals.requested.is_set():
            if self.config.max_frames is not None and self.stats.frames_out >= self.config.max_frames:
                return
            if self.paused:
                grabber.discard()  # keep the input fresh for when the pause ends
                if self._window is not None and self._handle(self._window.poll(30), last_pair):
                    return
                continue
            live = grabber.get(timeout=0.05)
            if live is None:
                if grabber.ended:
                    return
                if self._window is not None and self._handle(self._window.poll(1), last_pair):
                    return
                continue
            rgb = live.rgb()
            if (rgb.shape[1], rgb.shape[0]) != size:
                # A reconnected stream may come back at another size; outputs keep the first.
                if not resized_warned:
                    log.warning("the source changed size to %dx%d; scaling to %dx%d",
                                rgb.shape[1], rgb.shape[0], *size)
                    resized_warned = True
                import cv2

                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            out = self.face_restorer.process(rgb) if self.restoring else rgb
            self.stats.unrestored += not self.restoring
            for sink in self.sinks:
                sink.write(out, live.timestamp)  # a file's own timestamps, else capture times
            keys = None
            if self._window is not None:
                now = time.monotonic()
                fps = meter.tick(now)
                recent = self.stats.latencies[-15:]
                latency = 1000 * float(np.median(recent)) if recent else 1000 * (now - live.captured)
                mode = "restoring" if self.restoring else "restoration off (r)"
                status = f"{fps:4.1f} fps  latency {latency:3.0f} ms  {mode}"
                keys = self._window.show(rgb, out, status)
                last_pair = (rgb, out)
            self.stats.latencies.append(time.monotonic() - live.captured)
            self.stats.frames_out += 1
            if keys is not None and self._handle(keys, last_pair):
                return

    def _handle(self, keys, last_pair) -> bool:
        """Acts on the keys; True to quit."""
        if keys.quit:
            return True
        if keys.toggle_restore:
            self.restoring = not self.restoring
            log.info("restoration %s", "on" if self.restoring else "off")
        if keys.snapshot:
            self._window.snapshot()
        if keys.toggle_pause:
            self.paused = not self.paused
            log.info("paused" if self.paused else "resumed")
            if self.paused and last_pair is not None:
                self._window.show(*last_pair, "paused (space to resume)")
        return False

    def _close_outputs(self, ok: bool) -> None:
        errors = []
        for sink in self.sinks:
            try:
                sink.close() if ok or _finishable(sink) else sink.abort()
            except Exception as exc:  # close the others; report the first failure after
                errors.append(exc)
        if self._window is not None:
            self._window.close()
        if errors:
            raise errors[0]


def _finishable(sink) -> bool:
    # A file that got frames is worth finishing even when the run failed part-way: it plays.
    return getattr(sink, "frames_written", 0) > 0
