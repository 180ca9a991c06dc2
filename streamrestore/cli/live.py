"""``streamrestore live``: restore a camera, a video file (played in real time) or a network
stream with low latency; watch it in a window and/or send it to a file or URL.

    streamrestore live --refs me/                                  # camera 0, preview window
    streamrestore live --refs me/ --source talk.mp4 --output out.mp4
    streamrestore live --refs me/ --source rtsp://cam.local/stream --no-window --output udp://127.0.0.1:5000
    streamrestore live --refs me/ --adapt                          # the model fine-tuned to me first

With ``--adapt`` each person's fine-tune (about a minute per person on a CPU) is made before the
source is opened, or loaded from the disk cache that any earlier ``--adapt`` run of the same
photos, model and settings left (``streamrestore FILE --refs me/ --adapt`` makes it too): no
stream is left unread while it runs (a source that cannot be opened is therefore reported after it).

Window keys: q quit, r toggle restoration, s save a snapshot PNG, space pause. SIGINT (Ctrl-C),
SIGTERM and SIGHUP stop the run cleanly: outputs are finished (files play) and the exit code is 0;
a source lost for good (not back after the retries) ends the run with exit code 1, its outputs kept.
(Before the first frame, while models load, they stop it as they stop the main command.)
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from streamrestore.cli.options import (
    CommandParser,
    adapt_from_args,
    add_adapt_options,
    add_crop_resolution_option,
    add_deinterlace_option,
    add_encoder_options,
    add_face_choice_options,
    add_identity_gate_option,
    add_model_options,
    add_reference_detail_option,
    add_temporal_options,
    check_face_options,
    check_torch_threads,
    decimal,
    encoder_from_args,
    pipeline_config,
    restorer_options,
    set_torch_threads,
    whole,
)
from streamrestore.errors import UserError, one_line
from streamrestore.threads import TORCH_THREADS_HELP

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="streamrestore live",
        description="Restore faces in a live source with low latency: preview window (original | restored) "
                    "and/or output to a file or network URL.",
        epilog="Window keys: q quit, r toggle restoration, s snapshot PNG, space pause. "
               "Latency (capture → shown/sent) p50/p95 is printed at exit.",
    )
    p.add_argument("--source", default="0", metavar="0|FILE|URL",
                   help="camera index (default 0), a video file played at its own frame rate, or a stream URL "
                        "(rtsp://, rtmp://, srt://, udp://, http://)")
    p.add_argument("-o", "--output", action="append", default=[], metavar="FILE|URL",
                   help="also write the restored stream to a file (.mp4, .mkv, .ts, ...) or a URL "
                        "(udp://HOST:PORT sends MPEG-TS; srt://, tcp://, rtp://, rtmp://, rtmps://, rtsp://); repeatable")
    p.add_argument("--no-window", action="store_true", help="no preview window (for servers; use with --output)")
    p.add_argument("--max-frames", type=whole, metavar="N", help="stop after N frames were output")
    p.add_argument("--loop", action="store_true", help="a file source starts again at its end")
    p.add_argument("--as-fast-as-possible", dest="realtime", action="store_false",
                   help="a file source (or a file over http) is read as fast as "
                        "it decodes instead of at its frame rate (no drops); an --output file keeps the source's "
                        "timestamps either way")
    p.add_argument("--timeout", type=decimal, default=5.0, metavar="SECONDS",
                   help="a network source that delivers nothing for this long counts as dropped (default 5)")
    p.add_argument("--retries", type=whole, default=5, metavar="N",
                   help="reconnect attempts (with backoff 0.5, 1, 2, 4 s ...) before giving up (default 5)")
    p.add_argument("--snapshots", default=".", metavar="DIR", help="folder for snapshots taken with s (default .)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--torch-threads", type=whole, metavar="N", help=TORCH_THREADS_HELP)
    add_model_options(p, fast_vae=True)
    add_temporal_options(p)
    add_reference_detail_option(p)
    add_identity_gate_option(p)
    add_face_choice_options(p)
    add_crop_resolution_option(p)
    add_adapt_options(p)
    add_deinterlace_option(p)
    add_encoder_options(p, metadata=False)
    return p


def _encoder_settings(args: argparse.Namespace):
    """The file outputs' encoder (``--codec/--crf/--preset``, checked before anything loads); a
    stream output takes ``--crf`` only (H.264 "ultrafast" "zerolatency": every frame leaves at once)."""
    from streamrestore.errors import OutputError
    from streamrestore.live.sinks import is_url

    encoder = encoder_from_args(args)
    files = [spec for spec in args.output if not is_url(spec)]
    if (args.codec is not None or args.preset is not None or args.pix_fmt is not None) and not files:
        raise UserError("--codec, --preset and --pix-fmt apply to file outputs; a stream is sent as H.264 (ultrafast, "
                        "zerolatency: every frame leaves at once), its quality set by --crf")
    for spec in files:
        try:
            encoder.check_for(encoder.codec_for(Path(spec)))
        except ValueError as exc:
            raise OutputError(f"bad encoder option: {exc}") from None
    return encoder


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames must be at least 1, got {args.max_frames}")
    check_face_options(args)
    if not 0 < args.timeout < float("inf"):
        raise UserError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    check_torch_threads(args)
    if args.retries < 0:
        raise UserError(f"--retries must be 0 or more, got {args.retries}")
    if args.no_window and not args.output:
        log.warning("--no-window without --output: frames are restored but go nowhere (use for timing only)")
    config = pipeline_config(args, lookahead=0)  # live: no frame may wait
    adapt = adapt_from_args(args, has_refs=bool(args.refs))
    if not Path(args.snapshots).is_dir():
        raise UserError(f"--snapshots folder {args.snapshots} does not exist; create it first")

    from streamrestore.api import check_model_options, check_references
    from streamrestore.live.preview import check_display
    from streamrestore.live.sinks import check_output, is_url
    from streamrestore.video.writer import check_not_input

    # Cheap checks first: a missing display, an unwritable output, a device that is not there or
    # an unusable reference folder fails before the source opens and models load.
    if not args.no_window:
        check_display()
    places = [spec if is_url(spec) else Path(spec).resolve() for spec in args.output]  # x.mp4 is ./x.mp4
    for spec, place in zip(args.output, places):
        if places.count(place) > 1:
            raise UserError(f"--output {spec} given more than once; give each output once")
    for spec in args.output:
        check_output(spec, force=args.force)
        if not is_url(spec) and not is_url(args.source):
            check_not_input(args.source, spec)  # even with --force: never overwrite the source
    encoder = _encoder_settings(args)
    check_model_options(args.model, device=args.device, fast_vae=args.fast_vae)
    check_references(args.refs, unmatched=args.unmatched)

    from streamrestore.live.session import LiveConfig, LiveSession
    from streamrestore.live.sinks import open_sink
    from streamrestore.live.sources import ReconnectPolicy, open_source
    from streamrestore.pipeline import FaceRestorer
    from streamrestore.stop_signals import preload_native_libraries, stop_signals_held

    set_torch_threads(args.torch_threads)  # the same default as every command: half the cores
    options = dict(config=config, channel_order="rgb", torch_threads=args.torch_threads, **restorer_options(args))
    adapted = None
    if adapt is not None:
        # The fine-tunes (a minute per person) come before the source is opened: a network stream
        # left unread that long is dropped by its server or fills its buffer with stale frames, and
        # a camera would stay busy. Adapting must stay interruptible: only the imports hold the
        # stop signals back, as in the main command. The stream's own rate is set once it is open.
        with stop_signals_held():
            preload_native_libraries()
        adapted = FaceRestorer.from_options(args.refs, adapt=adapt, **options)
    policy = ReconnectPolicy(retries=args.retries, timeout=args.timeout)
    source = open_source(args.source, realtime=args.realtime, loop=args.loop, policy=policy,
                         deinterlace=not args.no_deinterlace)
    sinks = []
    try:
        fps = min(source.fps, 60.0)
        if adapted is not None:
            face_restorer = adapted.fresh(fps=fps, pixel_aspect=source.pixel_aspect)
        else:
            with stop_signals_held():  # a stop signal mid-import of a native library could crash it
                face_restorer = FaceRestorer.from_options(args.refs, fps=fps, **options)
            if source.pixel_aspect != 1:  # a DVD's wide pixels: faces cut out as shown
                face_restorer = face_restorer.fresh(pixel_aspect=source.pixel_aspect)
        for spec in args.output:
            sinks.append(open_sink(spec, source.width, source.height, fps=source.fps, force=args.force,
                                   encoder=encoder))
        if args.output and Path(args.source).is_file() and _has_audio(args.source):
            log.warning("live --output writes the restored picture only: the source's audio is not kept "
                        "(`streamrestore %s` restores the file with its audio)", args.source)
        elif args.output and source.has_audio:
            log.warning("live --output writes the restored picture only: the audio of %s is not kept", args.source)
        config = LiveConfig(window=not args.no_window, max_frames=args.max_frames,
                            snapshot_dir=Path(args.snapshots))
        log.info("live: %s (%dx%d, %.2f fps) → %s", source.name, source.width, source.height, source.fps,
                 ", ".join(["window"] * config.window + args.output) or "nowhere")
        session = LiveSession(face_restorer, source, sinks, config=config)
        sinks = []  # the session owns and closes them from here
        stats = session.run()
    finally:
        for sink in sinks:
            sink.abort()
        source.close()
    # the run's time as the main command counts it: the streaming, and before it the start-up (models, source)
    face_restorer.stats.seconds = time.perf_counter() - started
    face_restorer.stats.startup_seconds = max(0.0, face_restorer.stats.seconds - stats.seconds)
    face_restorer.stats.encoded = bool(args.output)  # (a window only: nothing was encoded)
    print(face_restorer.stats.summary(verbose=args.verbose), file=sys.stderr)
    print(stats.summary(), file=sys.stderr)
    for sink in session.sinks:
        if sink.frames_written:
            print(one_line(f"{'sent' if is_url(sink.name) else 'wrote'} {sink.frames_written} frames to {sink.name}"),
                  file=sys.stderr)
    if source.lost:  # (the problem itself was said above): a script sees the run did not end as asked
        print(one_line(f"streamrestore: live ended because {source.name} was lost (exit 1); what came before is kept"),
              file=sys.stderr)
        return 1
    return 0


def _has_audio(path: str) -> bool:
    """Whether the file at ``path`` has an audio stream (False where it cannot be read as media)."""
    from streamrestore.errors import InputError
    from streamrestore.video.reader import open_input

    try:
        with open_input(path) as container:
            return bool(container.streams.audio)
    except InputError:
        return False
