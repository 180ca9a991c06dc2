"""Library entry points: build a :class:`FaceRestorer` from options, restore a video file."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from streamrestore.errors import ModelError, OutputError
from streamrestore.pipeline import FaceRestorer, PipelineConfig, RunStats, run_threaded
from streamrestore.temporal import TemporalConfig
from streamrestore.threads import resolve_torch_threads, torch_threads as _torch_threads

if TYPE_CHECKING:  # pragma: no cover
    from streamrestore.model.adapt import AdaptConfig

log = logging.getLogger(__name__)

#: seconds between plain progress lines (when stderr is not a terminal); ``progress_interval=``
PROGRESS_INTERVAL = 5.0


def _as_specs(refs) -> list:
    if refs is None:
        return []
    if isinstance(refs, (str, Path)):
        return [str(refs)]
    return list(refs)


def build_face_restorer(
    refs=(),
    *,
    model="lite",
    device: str = "auto",
    detector: str = "auto",
    face_models: str | Path | None = None,
    config: PipelineConfig = PipelineConfig(),
    channel_order: str = "rgb",
    fps: float = 30.0,
    backend: str = "auto",
    fast_vae: str | Path | None = None,
    torch_threads: int | None = None,
    adapt: "AdaptConfig | None" = None,
) -> FaceRestorer:
    """Loads the model, the face models and the reference photos, and encodes the references.

    Args:
        refs: a folder of photos of one person, or a list of folders / ``"NAME=DIR"`` specs for
            several people, or already loaded ``ReferenceSet`` objects. Empty: restore without
            references.
        model: ``"lite"`` (shipped), ``"instantrestore"`` (official checkpoint, needs the base
            models locally), a checkpoint path, ``"identity"`` (changes nothing; for testing), or
            any object implementing the :class:`streamrestore.types.Restorer` protocol.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        detector: ``"auto"`` (SCRFD when an insightface pack is found, else dlib), ``"scrfd"``, ``"dlib"``.
        face_models: folder holding an insightface model pack (SCRFD + recognition).
        config: see :class:`PipelineConfig`.
        channel_order: ``"rgb"`` or ``"bgr"`` for numpy frames given to ``process``/``stream``.
        fps: the stream's frame rate (the tracker's smoothing is tuned in seconds).
        backend: how the restorer network runs: ``"auto"`` (the fastest available, said in one
            log line), ``"eager"``, ``"compile"`` or ``"tensorrt"`` (see ``streamrestore.backends``).
        fast_vae: a TAESD folder or decoder file to decode with instead of the model's VAE
            (latent models given by name; see ``streamrestore.model.fast_vae``).
        torch_threads: CPU threads torch uses for the restorer's work; None: half the cores (the
            CLI's default, :func:`streamrestore.threads.default_torch_threads`). Applied only
            while streamrestore works; your ``torch.get_num_threads()`` is left as it was.
        adapt: fine-tune the model on each person's reference photos before restoring (see
            :mod:`streamrestore.model.adapt`; minutes per person on a CPU, once: the result is
            cached on disk). None (default): no adaptation. Runs the eager backend.

    The options are checked (device, reference folders) before anything is loaded.
    """
    from streamrestore.faces.detect import create_detector
    from streamrestore.faces.identity import ReferenceSet, create_embedder
    from streamrestore.faces.references import load_reference_sets

    specs = _as_specs(refs)
    check_model_options(model, device=device, fast_vae=fast_vae)
    check_references(specs)
    threads = resolve_torch_threads(torch_threads)
    with _torch_threads(threads):
        if adapt is not None:
            from streamrestore.model.adapt import AdaptedRestorer

            restorer = AdaptedRestorer(load_restorer(model, device=device, backend=None, fast_vae=fast_vae), adapt)
        else:
            restorer = load_restorer(model, device=device, backend=backend, fast_vae=fast_vae)
        face_detector = create_detector(detector, models_dir=face_models)
        embedder = None
        needs_embedder = len(specs) > 1 or (specs and config.unmatched == "skip")
        if specs and not all(isinstance(s, ReferenceSet) for s in specs):
            embedder = create_embedder("auto", models_dir=face_models)
            sets = load_reference_sets(specs, face_detector, embedder, restorer.resolution)
        else:
            sets = specs
            if needs_embedder:
                embedder = create_embedder("auto", models_dir=face_models)
    return FaceRestorer(
        restorer, face_detector, sets, embedder=embedder, config=config, channel_order=channel_order, fps=fps,
        torch_threads=threads,
    )


def load_restorer(model="lite", *, device: str = "auto", backend: str | None = "auto",
                  fast_vae: str | Path | None = None):
    """A restorer from a name, a path, or an object that already is one (used as given).
    ``fast_vae``: decode with TAESD (see :func:`build_face_restorer`); ``backend=None``: the
    plain eager restorer, not wrapped by :func:`streamrestore.backends.build_backend`."""
    if not isinstance(model, (str, Path)):
        return model
    if str(model) == "identity":
        from streamrestore.model.identity import IdentityRestorer

        if fast_vae:
            log.warning("--fast-vae ignored: the identity model has no decoder")
        return IdentityRestorer()
    from streamrestore.backends import build_backend
    from streamrestore.model.registry import load_model

    loaded = load_model(str(model), device=device, fast_vae=fast_vae or None)
    return loaded if backend is None else build_backend(loaded, backend)


def check_model_options(model="lite", *, device: str = "auto", fast_vae: str | Path | None = None) -> None:
    """Fails at once, before any model loads, on a device that is not there (``cuda`` without
    CUDA: :class:`~streamrestore.errors.DeviceError`) or a ``fast_vae`` path that does not exist.
    A restorer object given as ``model`` has its own device: nothing to check."""
    if not isinstance(model, (str, Path)):
        return
    from streamrestore.model.restorer import pick_device

    pick_device(device)
    if fast_vae and str(model) != "identity" and not Path(fast_vae).expanduser().exists():
        raise ModelError(f"--fast-vae {fast_vae} does not exist; give the folder holding taesd_decoder.safetensors "
                         "or the file itself")


def check_references(refs) -> None:
    """Fails at once on reference specs that cannot work: a folder that is missing or holds no
    photos, or a set name given twice (``NAME=DIR``). Reads no photo (see
    :func:`streamrestore.faces.references.check_reference_specs`)."""
    from streamrestore.faces.references import check_reference_specs

    specs = [s for s in _as_specs(refs) if isinstance(s, (str, Path))]
    if specs:
        check_reference_specs(specs)


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
                face_restorer = build_face_restorer(
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
