"""Library entry points: build a :class:`FaceRestorer` from options, restore a video file.

:func:`restore_video` is defined here; :func:`build_face_restorer`, :func:`load_restorer` and the
cheap option checks belong to :mod:`streamrestore.pipeline` (next to :class:`FaceRestorer`, whose
``from_options`` uses them) and are re-exported.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from streamrestore.errors import OutputError
from streamrestore.pipeline import (
    FaceRestorer,
    PipelineConfig,
    build_face_restorer,
    check_model_options,
    check_references,
    load_restorer,
)
from streamrestore.run import RunStats, expected_frames, make_progress, restore_frames
from streamrestore.temporal import TemporalConfig

if TYPE_CHECKING:  # pragma: no cover
    from streamrestore.model.adapt import AdaptConfig

__all__ = [
    "build_face_restorer",
    "check_model_options",
    "check_references",
    "load_restorer",
    "restore_video",
]

log = logging.getLogger(__name__)


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
            bar = make_progress(expected_frames(info, start, end), progress, progress_interval)
            try:
                stats.add_time("encode", restore_frames(reader.frames(), writer, face_restorer,
                                                        on_frame=bar.update if bar else None))
            finally:
                if bar is not None:
                    bar.close()
        stats.problems.extend(reader.problems)
    stats.seconds = time.perf_counter() - started
    return stats
