"""Library entry points: build a :class:`FaceRestorer` from options, restore a video file or a photo.

:func:`restore_video` and :func:`restore_photo` are defined here; :func:`build_face_restorer`,
:func:`load_restorer` and the cheap option checks belong to :mod:`streamrestore.pipeline` (next to
:class:`FaceRestorer`, whose ``from_options`` uses them) and are re-exported. The loop it runs is
:mod:`streamrestore.run`'s.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Union

from streamrestore.pipeline import (
    FaceRestorer,
    build_face_restorer,
    check_model_options,
    check_references,
    load_restorer,
)
from streamrestore.run import ProgressMode, RunStats, expected_frames, make_progress, restore_frames

if TYPE_CHECKING:  # pragma: no cover
    from streamrestore.video.writer import EncoderSettings

__all__ = [
    "RestorerSpec",
    "build_face_restorer",
    "check_model_options",
    "check_references",
    "load_restorer",
    "restore_photo",
    "restore_video",
]

log = logging.getLogger(__name__)

#: ``restorer=`` of :func:`restore_video`: a ready :class:`FaceRestorer`, or a function of the
#: video's frame rate that builds one (called once the cheap checks have passed)
RestorerSpec = Union[FaceRestorer, Callable[[float], FaceRestorer]]


def restore_video(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    restorer: RestorerSpec | None = None,
    *,
    encoder: EncoderSettings | None = None,
    start: float | None = None,
    end: float | None = None,
    force: bool = False,
    progress: ProgressMode = False,
    deinterlace: bool | str = True,
    on_frame: Callable[[], object] | None = None,
) -> RunStats:
    """Restores the faces of the video ``src`` into ``dst``.

    Every frame, timestamp and audio packet of the input is kept; the output file appears only
    when complete. What went wrong while reading (a truncated input, damaged packets) is in the
    returned stats' ``problems`` and ``summary()``.

    Args:
        src: the input video file.
        dst: the output file (default None: ``<stem>.restored.<ext>`` next to ``src``). It may
            not be ``src`` (under any spelling), not even with ``force``.
        restorer: who restores the faces: a :class:`FaceRestorer` (e.g.
            ``FaceRestorer.from_options(refs="anna/", model="lite")``, built with lookahead: the
            default ``PipelineConfig``), or a function ``fps -> FaceRestorer`` called once the
            checks below have passed (so a bad output path fails before any model loads; the
            CLI passes one), or None (default: ``FaceRestorer.from_options()``, the lite model
            without references). A FaceRestorer that has already restored frames, or was built
            for another frame rate, is left as it is: the run uses its :meth:`~FaceRestorer.fresh`
            copy (same models and encoded references, new tracker and stats), as it does for one
            another run is using at the same time (a service's two requests on one object).
        encoder: how the output is encoded (default None: ``EncoderSettings()``, visually
            lossless for faces; see :class:`~streamrestore.video.writer.EncoderSettings`).
        start: restore only the input from this second on (default None: from the beginning).
        end: restore only the input before this second (default None: to the end).
        force: replace an existing ``dst`` (default False: a :class:`~streamrestore.errors.OutputError`).
        progress: False (default) prints nothing; True shows a progress bar when stderr is a
            terminal and otherwise a plain line every :data:`streamrestore.run.PROGRESS_INTERVAL`
            seconds (5 s; frames, percent, fps, ETA: for the logs of nohup, CI or ``> log
            2>&1``); ``"bar"`` or ``"lines"`` force one.
        deinterlace: an interlaced input (DV, DVD, 1080i) is deinterlaced as it is read (default
            True: FFmpeg's bwdif, one frame per frame, timestamps kept; the faces are restored on
            whole frames and the output plays without combing); False writes the woven fields
            as they are, as progressive frames (:class:`~streamrestore.video.reader.VideoReader`);
            ``"fields"`` makes a frame of each field (50i gives 50p: the motion kept whole, twice the
            frames to restore).
        on_frame: called once per frame handed to the writer, on the calling thread (default
            None): an application's own progress display (``restore_video`` itself knows the
            frame count as :func:`streamrestore.run.expected_frames` does), and its way to
            cancel a run: an exception raised there ends it at once, the output not written
            and no temporary file left (a service raises when a job's cancel flag is set).

    Returns:
        The run's :class:`~streamrestore.run.RunStats`.

    Raises:
        UserError: a :class:`~streamrestore.errors.UserError` subclass for mistakes in the
            paths, the window and the output (container, codec, audio), raised before
            ``restorer`` is built.
        ValueError: a ``progress``, ``on_frame``, ``encoder`` or ``restorer`` of the wrong kind.
    """
    from streamrestore.provenance import restored_comment
    from streamrestore.video.reader import VideoReader
    from streamrestore.video.writer import EncoderSettings, VideoWriter, check_not_input, default_output_path

    started = time.perf_counter()
    if progress not in (False, True, "bar", "lines"):
        raise ValueError(f"progress must be True, False, 'bar' or 'lines', got {progress!r}")
    if on_frame is not None and not callable(on_frame):
        raise ValueError(f"on_frame must be a function of no arguments or None, got {type(on_frame).__name__}")
    if encoder is None:
        encoder = EncoderSettings()
    elif not isinstance(encoder, EncoderSettings):
        raise ValueError(f"encoder must be an EncoderSettings or None, got {type(encoder).__name__}")
    _check_paths(src, dst)
    _check_restorer_argument(restorer)
    _check_window(start, end)
    dst = Path(dst) if dst is not None else default_output_path(src)
    # Everything a user can get wrong is checked first, in well under a second: the input and
    # its window, and the output (path, container, codec, audio; the writer opens its encoder
    # and writes the header). Models load only after.
    check_not_input(src, dst)
    with VideoReader(src, start=start, end=end, deinterlace=deinterlace) as reader:
        info = reader.info
        fps = float(info.frame_rate) if info.frame_rate else 30.0
        with VideoWriter(dst, info, encoder, audio_from=src, start=start, end=end, force=force,
                         comment=restored_comment()) as writer:
            face_restorer = _face_restorer(restorer, fps, info.pixel_aspect)
            stats = face_restorer.stats
            stats.startup_seconds = time.perf_counter() - started
            stats.encoded = True
            bar = None
            try:
                bar = make_progress(expected_frames(info, start, end), progress)
                hooks = [hook for hook in (bar.update if bar else None, on_frame) if hook is not None]

                def each_frame() -> None:
                    for hook in hooks:
                        hook()

                stats.add_time("encode", restore_frames(reader.frames(), writer, face_restorer,
                                                        on_frame=each_frame if hooks else None))
            except KeyboardInterrupt as exc:  # (Ctrl-C, a stop signal): what was lost, said by the command line
                exc.kept = _work_lost(stats.frames, expected_frames(info, start, end),  # type: ignore[attr-defined]
                                      time.perf_counter() - started)
                raise
            finally:
                _record_runner(stats, face_restorer)
                face_restorer._release()
                if bar is not None:
                    bar.close()
    stats.problems.extend(reader.problems + writer.notes)
    stats.deinterlaced = reader.deinterlaced
    stats.seconds = time.perf_counter() - started
    return stats


def runner_of(restorer: Any) -> tuple[str | None, str | None]:
    """``(backend, device)`` that run ``restorer`` now (``("onnxruntime", "cpu")``; a backend that fell back says
    ``eager``, a network run without one too); ``(None, None)`` for a restorer with no network (``identity``): for
    a record of how an output was made, where ``auto`` said nothing."""
    device = getattr(restorer, "device", None)
    device = None if device is None else getattr(device, "type", str(device))
    return getattr(restorer, "backend", None) or ("eager" if device else None), device


def _record_runner(stats: RunStats, face_restorer: FaceRestorer) -> None:
    stats.backend, stats.device = runner_of(face_restorer.restorer)
    stats.face_models = faces_ran(face_restorer)
    try:  # (in a finally: a device that failed would raise again here and hide why the run stopped)
        face_restorer.settle_device_counts()
    except RuntimeError:
        log.debug("the faces with invalid values counted on the device could not be read back")


def faces_ran(face_restorer: FaceRestorer) -> dict:
    """Which detector and embedder a restorer's faces went through, their model files (None: not one file) and
    whether the identity gate judged faces: what --json records as run (``face_models`` is the folder as typed;
    two packs gave two outputs under the same settings: support F4)."""
    def file_of(part: object) -> str | None:
        path = getattr(part, "model_file", None)
        return str(Path(path).resolve()) if path is not None else None

    detector, embedder = face_restorer.detector, face_restorer.embedder
    return {"detector": getattr(detector, "name", type(detector).__name__), "detector_file": file_of(detector),
            "embedder": None if embedder is None else getattr(embedder, "name", type(embedder).__name__),
            "embedder_file": file_of(embedder), "identity_gate": face_restorer.identity_gate_active}


#: seconds after the run's start (models loading included) from which a stopped run's message points to
#: ``streamrestore batch``
LOST_WORK_HINT_SECONDS = 60.0


def _work_lost(done: int, total: int | None, seconds: float) -> str:
    """What a stopped :func:`restore_video` says it lost: its output is written only when complete."""
    of = f" of {total}" if total and done <= total else ""  # (the total is the file's estimate)
    text = f"the output was not written ({done}{of} frames had been restored)"
    if seconds >= LOST_WORK_HINT_SECONDS:
        text += ("; streamrestore batch restores a long video in chunks, keeps the finished ones through a stop and "
                 "resumes with them")
    return text


def restore_photo(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    restorer: RestorerSpec | None = None,
    *,
    force: bool = False,
    strip_metadata: bool = False,
) -> RunStats:
    """Restores the faces of the photo ``src`` into ``dst``.

    The photo is restored as a one-frame video (the same stages; the temporal ones have nothing
    to carry) and written back as it was: upright (its EXIF orientation applied and reset), grey
    if it was grey, with its transparency, colour profile and EXIF (see
    :func:`streamrestore.images.write_photo`). A photo in which nothing changed (no face, or only
    faces the quality gate found clean) is copied byte for byte where ``dst`` is in its format. The
    output file appears only when complete.

    Args:
        src: the photo (any of :data:`streamrestore.images.IMAGE_SUFFIXES`).
        dst: the output file (default None: ``<stem>.restored<ext>`` next to ``src``, PNG where
            ``src``'s format is not written); its suffix picks the format.
        restorer: as for :func:`restore_video` (a function gets 30.0 as the frame rate).
        force: replace an existing ``dst`` (default False: an
            :class:`~streamrestore.errors.OutputError`).
        strip_metadata: leave out the photo's EXIF (a GPS position, the camera, its owner, the date),
            XMP and PNG text (default False: kept); its colour profile stays (colours, not people). See
            :class:`~streamrestore.video.writer.EncoderSettings`' ``strip_metadata`` for videos.

    Returns:
        The run's :class:`~streamrestore.run.RunStats`, its ``photo`` set (its summary speaks of faces,
        not frames and tracks); ``problems`` names what the output does not keep (16 bits, transparency
        in a JPEG).

    Raises:
        UserError: the photo cannot be read, or ``dst`` cannot be written (its suffix, an existing
            file, a missing folder, ``src`` itself), raised before ``restorer`` is built.
        ValueError: a ``restorer`` of the wrong kind.
    """
    import numpy as np

    from streamrestore.images import (
        check_photo_output,
        copy_photo,
        default_photo_output,
        read_photo,
        same_photo_format,
        write_photo,
    )
    from streamrestore.provenance import restored_comment
    from streamrestore.video.writer import check_not_input

    started = time.perf_counter()
    _check_paths(src, dst)
    _check_restorer_argument(restorer)
    dst = Path(dst) if dst is not None else default_photo_output(src)
    check_not_input(src, dst)
    photo = read_photo(src)
    if strip_metadata:
        photo.exif, photo.xmp, photo.text, photo.comment, photo.iptc = None, None, {}, None, None
    check_photo_output(dst, force)
    face_restorer = _face_restorer(restorer, restorer.fps if isinstance(restorer, FaceRestorer) else 30.0)
    stats = face_restorer.stats
    stats.photo = True
    stats.startup_seconds = time.perf_counter() - started
    bgr = face_restorer.channel_order == "bgr"  # the numpy frame it takes is in its channel order
    frame = photo.rgb[:, :, ::-1] if bgr else photo.rgb
    try:
        (restored,) = face_restorer.stream([frame])
    finally:
        _record_runner(stats, face_restorer)
        face_restorer._release()
    unchanged = np.array_equal(restored, frame)
    if same_photo_format(src, dst) and unchanged and not strip_metadata:
        copy_photo(src, dst, force=force)  # nothing changed: its bytes, not a second compression
    else:  # (a changed face says so in the file: streamrestore.provenance)
        stats.problems.extend(write_photo(dst, restored[:, :, ::-1] if bgr else restored, photo, force=force,
                                          software=None if unchanged else restored_comment()))
    stats.seconds = time.perf_counter() - started
    return stats


def _check_paths(src: object, dst: object) -> None:
    """ValueError naming a ``src`` or ``dst`` that is not a path (a restorer given second, where
    ``dst`` goes, or a picture instead of its file)."""
    for name, value in (("src", src), ("dst", dst)):
        if value is None and name == "dst":
            continue
        if isinstance(value, (str, os.PathLike)):
            continue
        hint = ""
        if isinstance(value, FaceRestorer) or callable(value):
            hint = " (pass the restorer as restorer=...)"
        elif hasattr(value, "shape"):
            hint = " (a file's path: a picture in memory is restored by FaceRestorer.process)"
        raise ValueError(f"{name} must be a file path, got {type(value).__name__}{hint}")


def _check_window(start: object, end: object) -> None:
    """InputError for a window no video has (a negative start, an end not after the start): a
    user's mistake, as a start past the video's end is; ValueError for what is not a number."""
    import numbers

    from streamrestore.errors import InputError

    for name, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise ValueError(f"{name} must be a number of seconds or None, got {value!r}")
    import math

    if start is not None and not (start >= 0 and math.isfinite(start)):  # type: ignore[operator,arg-type]
        raise InputError(f"the window's start must be a time of 0 s or later, got {start} s")
    if end is not None and not (end > 0 and math.isfinite(end)):  # type: ignore[operator,arg-type]
        raise InputError(f"the window's end must be a time after 0 s, got {end} s")
    if start is not None and end is not None and end <= start:  # type: ignore[operator]
        raise InputError(f"the window's end ({end} s) must be after its start ({start} s)")


def _check_restorer_argument(restorer: object) -> None:
    """ValueError for a ``restorer`` argument of the wrong kind (see :func:`restore_video`)."""
    if restorer is not None and not (isinstance(restorer, FaceRestorer) or callable(restorer)):
        raise ValueError(f"restorer must be a FaceRestorer, a function of the frame rate or None, got "
                         f"{type(restorer).__name__}")


def _face_restorer(restorer: RestorerSpec | None, fps: float, aspect: float = 1.0) -> FaceRestorer:
    """The FaceRestorer a run at ``fps`` of pixels of ``aspect`` uses (see ``restorer`` of
    :func:`restore_video`), held for the run (``FaceRestorer._claim``: release it when done)."""
    if restorer is None:
        restorer = FaceRestorer.from_options(fps=fps)
    elif not isinstance(restorer, FaceRestorer):
        built = restorer(fps)
        if not isinstance(built, FaceRestorer):
            raise ValueError(f"the restorer function must return a FaceRestorer, got {type(built).__name__}")
        restorer = built
    restorer._check_process()
    # Its tracker and temporal state belong to another stream (it restored frames before, or another
    # run holds it now: a service's two requests at once), its smoothing is tuned for another frame
    # rate, or it cuts faces for other pixels: a fresh copy shares everything loaded and starts clean.
    if (restorer.frames_in or restorer.stats.frames or restorer.fps != fps or restorer.pixel_aspect != aspect
            or not restorer._claim()):
        restorer = restorer.fresh(fps, aspect)
        restorer._claim()
    return restorer


