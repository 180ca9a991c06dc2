"""Library entry points: build a :class:`FaceRestorer` from options, restore a video file.

:func:`restore_video` is defined here; :func:`build_face_restorer`, :func:`load_restorer` and the
cheap option checks belong to :mod:`streamrestore.pipeline` (next to :class:`FaceRestorer`, whose
``from_options`` uses them) and are re-exported.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from streamrestore.errors import OutputError
from streamrestore.pipeline import (
    FaceRestorer,
    PipelineConfig,
    RunStats,
    build_face_restorer,
    check_model_options,
    check_references,
    load_restorer,
    run_threaded,
)
from streamrestore.temporal import TemporalConfig

if TYPE_CHECKING:  # pragma: no cover
    from streamrestore.model.adapt import AdaptConfig

__all__ = [
    "PROGRESS_INTERVAL",
    "ProgressLines",
    "build_face_restorer",
    "check_model_options",
    "check_references",
    "load_restorer",
    "restore_video",
]

log = logging.getLogger(__name__)

#: seconds between plain progress lines (when stderr is not a terminal); ``progress_interval=``
PROGRESS_INTERVAL = 5.0


def restore_video(
    src: str | Path,
    dst: str | Path | None = None,
    refs=(),
    *,
    model="lite",
    device: str = "auto",
    detector: str = "auto",
    face_models: str | Path | None = None,
    codec: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
    start: float | None = None,
    end: float | None = None,
    max_faces: int | None = None,
    unmatched: str = "restore",
    detect_every: int = 3,
    temporal: TemporalConfig | None = None,
    backend: str = "auto",
    fast_vae: str | Path | None = None,
    force: bool = False,
    progress: bool | str = False,
    progress_interval: float | None = None,
    torch_threads: int | None = None,
    adapt: "AdaptConfig | None" = None,
    face_restorer: FaceRestorer | None = None,
) -> RunStats:
    """Restores the faces of the video ``src`` into ``dst`` (default ``<stem>.restored.<ext>``).

    Every frame, timestamp and audio packet of the input is kept; the output file appears only
    when complete (an existing ``dst`` is replaced only with ``force=True``). Returns the run's
    :class:`RunStats`; what went wrong while reading (a truncated input, damaged packets) is in
    its ``problems`` and its ``summary()``. ``face_restorer`` replaces the model and face options
    with a ready-made :class:`FaceRestorer` (it must have been built with lookahead and is used
    once).
    ``temporal`` sets the temporal fusion (default None:
    :class:`~streamrestore.temporal.TemporalConfig` defaults; ``TemporalConfig.off()`` off).

    Mistakes in the options, paths and media raise a :class:`~streamrestore.errors.UserError`
    subclass before any model is loaded; ``dst`` may not be ``src`` (under any spelling), not
    even with ``force``.

    ``progress``: False (default) prints nothing; True shows a progress bar when stderr is a
    terminal and otherwise a plain line every ``progress_interval`` seconds (default
    :data:`PROGRESS_INTERVAL`, 5 s; frames, percent, fps, ETA: for the logs of nohup, CI or
    ``> log 2>&1``); ``"bar"`` or ``"lines"`` force one.
    ``torch_threads``, ``adapt``: see :func:`build_face_restorer` (threads: default half the
    cores, set only for this run's work).
    """
    from streamrestore.video.reader import VideoReader
    from streamrestore.video.writer import EncoderSettings, VideoWriter, check_not_input, default_output_path

    started = time.perf_counter()
    dst = Path(dst) if dst is not None else default_output_path(src)
    # Everything a user can get wrong is checked first, in well under a second: the options,
    # the reference folders, the input and its window, and the output (path, container, codec,
    # audio; the writer opens its encoder and writes the header). Models load only after.
    try:
        settings = EncoderSettings(codec=codec, crf=crf, preset=preset)
    except ValueError as exc:
        raise OutputError(f"bad encoder option: {exc}") from None
    if face_restorer is None:
        check_model_options(model, device=device, fast_vae=fast_vae)
        check_references(refs)
    check_not_input(src, dst)
    with VideoReader(src, start=start, end=end) as reader:
        info = reader.info
        fps = float(info.frame_rate) if info.frame_rate else 30.0
        with VideoWriter(dst, info, settings, audio_from=src, start=start, end=end, force=force) as writer:
            if face_restorer is None:
                config = PipelineConfig(max_faces=max_faces, unmatched=unmatched, detect_every=detect_every,
                                        **({"temporal": temporal} if temporal is not None else {}))
                face_restorer = FaceRestorer.from_options(
                    refs, model=model, device=device, detector=detector, face_models=face_models, config=config,
                    fps=fps, backend=backend, fast_vae=fast_vae, torch_threads=torch_threads, adapt=adapt,
                )
            stats = face_restorer.stats
            stats.startup_seconds = time.perf_counter() - started
            bar = _progress(_expected_frames(info, start, end), progress,
                            PROGRESS_INTERVAL if progress_interval is None else progress_interval)
            t_write = [0.0]

            def sink(frame):
                t0 = time.perf_counter()
                writer.write(frame)
                t_write[0] += time.perf_counter() - t0

            try:
                # Colour conversion and detection on the reader thread: they overlap the
                # restoring of the frame before.
                decoded = (face_restorer.prepare(f) for f in reader.frames())
                run_threaded(decoded, face_restorer.stream, sink, on_frame=bar.update if bar else None)
            finally:
                if bar is not None:
                    bar.close()
            stats.add_time("encode", t_write[0])
        stats.problems.extend(reader.problems)
    stats.seconds = time.perf_counter() - started
    return stats


def _expected_frames(info, start: float | None, end: float | None) -> int | None:
    """About how many frames the [start, end) window holds (None when unknown)."""
    if start is None and end is None:
        return info.frame_count
    if not info.frame_rate:
        return None
    last = end if end is not None else info.duration
    if last is None:
        return None
    if info.duration is not None:
        last = min(last, info.duration)
    return max(0, round((last - (start or 0.0)) * float(info.frame_rate)))


def _progress(total: int | None, progress: bool | str, interval: float):
    """A progress display with ``update()`` and ``close()``, or None (see :func:`restore_video`)."""
    if progress not in (False, True, "bar", "lines"):
        raise ValueError(f"progress must be True, False, 'bar' or 'lines', got {progress!r}")
    if not progress:
        return None
    if progress == "bar" or (progress is True and sys.stderr.isatty()):
        from tqdm import tqdm

        return tqdm(total=total, unit="frame", dynamic_ncols=True, smoothing=0.1)
    return ProgressLines(total, interval)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressLines:
    """Progress as a plain line every ``interval`` seconds, for stderr that is not a terminal
    (a bar's carriage returns do not work in a log file, and a silent five-minute run looks hung):

        progress: 1200/9000 frames (13%), 11.8 fps, ETA 11:01

    ``clock`` (seconds, monotonic) and ``stream`` (default: ``sys.stderr`` at the time of each
    line) are there for tests.
    """

    def __init__(self, total: int | None, interval: float = PROGRESS_INTERVAL, *, clock=time.monotonic,
                 stream=None):
        if not interval >= 0:
            raise ValueError(f"progress interval must be >= 0 seconds, got {interval!r}")
        self.total = total if total else None
        self.interval = float(interval)
        self.done = 0
        self._clock = clock
        self._stream = stream
        self._start = clock()
        self._next = self._start + self.interval

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self._clock()
        if now >= self._next:
            self._next = now + self.interval
            stream = self._stream if self._stream is not None else sys.stderr
            print(self.line(now), file=stream, flush=True)

    def line(self, now: float) -> str:
        elapsed = now - self._start
        fps = self.done / elapsed if elapsed > 0 else 0.0
        if self.total is None:
            return f"progress: {self.done} frames, {fps:.1f} fps"
        percent = min(100.0, 100.0 * self.done / self.total)
        text = f"progress: {self.done}/{self.total} frames ({percent:.0f}%), {fps:.1f} fps"
        if fps > 0:
            text += f", ETA {_clock(max(0, self.total - self.done) / fps)}"
        return text

    def close(self) -> None:
        pass  # the run's summary follows
