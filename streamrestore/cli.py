"""Command line: argument parsing only; the work is done by the library.

Exit codes: 0 success, 1 some inputs failed (`batch`), 2 bad input or usage (one line, no traceback), 130 interrupted (Ctrl-C),
143 / 129 stopped by SIGTERM / SIGHUP (cleaned up as after Ctrl-C).
"""
from __future__ import annotations

import argparse
import logging
import sys

from streamrestore._version import __version__
from streamrestore.errors import UserError
from streamrestore.stop_signals import stop_signals_interrupt
from streamrestore.threads import TORCH_THREADS_HELP

log = logging.getLogger("streamrestore")  # the package's root logger: the CLI gives it its handler; modules log to children

SUBCOMMANDS = ("train", "eval", "live", "bench", "batch")  # each is streamrestore.commands.<name>.main(argv) -> int


def _time(text: str) -> float:
    """Seconds from ``SS``, ``SS.s``, ``MM:SS`` or ``HH:MM:SS``."""
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use seconds or HH:MM:SS)") from None
    if len(parts) > 3 or any(p < 0 for p in parts):
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use seconds or HH:MM:SS)")
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return seconds


FAST_VAE_HELP = ("decode with TAESD instead of the model's VAE: the folder holding taesd_decoder.safetensors "
                 "(madebyollin/taesd) or the file; ~12x faster decoding, some quality lost (see README). "
                 "Latent models only; ignored with a warning for lite")


def _add_model_options(p: argparse.ArgumentParser, fast_vae: bool = False) -> None:
    """The model and face options every restoring command shares. ``fast_vae`` adds
    ``--fast-vae``, for commands that build the restorer with :func:`restorer_from_args`."""
    p.add_argument("--refs", action="append", default=[], metavar="DIR|NAME=DIR",
                   help="folder of photos of the person to restore towards; repeat as NAME=DIR for several people "
                        "(optional: without it faces are restored without references)")
    p.add_argument("--model", default="lite", help="lite (shipped, default), instantrestore, identity, or a checkpoint path")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the restorer runs: auto (default) uses CUDA when a GPU is visible, else the CPU")
    p.add_argument("--backend", default="auto", choices=["auto", "eager", "compile", "tensorrt"],
                   help="how the restorer runs; auto picks the fastest available and says which")
    if fast_vae:
        p.add_argument("--fast-vae", metavar="PATH", help=FAST_VAE_HELP)
    p.add_argument("--detector", default="auto", choices=["auto", "scrfd", "dlib"],
                   help="auto: SCRFD when an insightface model pack is found, else dlib")
    p.add_argument("--face-models", metavar="DIR", help="folder with an insightface model pack (SCRFD detector + recognition)")
    p.add_argument("--max-faces", type=int, metavar="N", help="restore at most N faces per frame (largest first)")
    p.add_argument("--unmatched", default="restore", choices=["restore", "skip"],
                   help="faces matching no reference set: restore without references (default) or leave them")
    p.add_argument("--detect-every", type=int, default=3, metavar="K",
                   help="run the face detector on every K-th frame, optical flow in between (default 3; 1: every frame)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="more messages; the run summary adds each track's similarity to every reference set")


def _add_encoder_options(p: argparse.ArgumentParser) -> None:
    """The output encoder's options (``streamrestore.video.writer.EncoderSettings``)."""
    p.add_argument("--crf", type=int, help="encoder quality (lower is better; default visually lossless for faces)")
    p.add_argument("--preset", help="encoder speed preset (e.g. medium, slow)")
    p.add_argument("--codec", help="libx264 (default; vp9 for .webm), libx265, vp9, av1")


def _add_temporal_options(p: argparse.ArgumentParser) -> None:
    """The temporal fusion's settings (``streamrestore.temporal.TemporalConfig``)."""
    p.add_argument("--temporal-strength", type=float, default=None, metavar="F",
                   help="temporal fusion: the most weight the previous frame's motion-compensated restoration "
                        "keeps, in [0, 1); 0 turns that part off (default 0.97; docs/temporal.md)")
    p.add_argument("--temporal-tolerance", type=float, default=None, metavar="LEVELS",
                   help="warp error (0-255 levels) at which the previous frame's weight has fallen to 1/e; "
                        "lower follows fast motion sooner (default 30)")
    p.add_argument("--temporal-denoise", type=float, default=None, metavar="F",
                   help="the most weight the previous frame's motion-compensated input keeps in the average "
                        "that removes compression flicker from degraded faces, in [0, 1); 0 turns it off "
                        "(default 0.6; clean faces are never averaged)")
    p.add_argument("--no-temporal", action="store_true",
                   help="no temporal fusion at all: every frame restored on its own")


def temporal_from_args(args: argparse.Namespace):
    """The ``TemporalConfig`` of the ``--temporal-*`` options (defaults for what is not given;
    ``--no-temporal``: off); raises UserError for values out of range."""
    from streamrestore.temporal import TemporalConfig

    if getattr(args, "no_temporal", False):
        return TemporalConfig.off()
    values = {k: v for k, v in (("strength", getattr(args, "temporal_strength", None)),
                                ("tolerance", getattr(args, "temporal_tolerance", None)),
                                ("denoise", getattr(args, "temporal_denoise", None))) if v is not None}
    try:
        return TemporalConfig(**values)
    except ValueError as exc:
        raise UserError(f"--temporal-{str(exc).split()[0]}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streamrestore",
        description="Restore the faces in a video using a few reference photos of the person.",
        epilog="Other commands: " + ", ".join(f"streamrestore {c} --help" for c in SUBCOMMANDS),
    )
    p.add_argument("--version", action="version", version=f"streamrestore {__version__}")
    p.add_argument("input", help="video file to restore")
    p.add_argument("-o", "--output", help="output file (default: <input stem>.restored.<ext> next to the input)")
    _add_model_options(p, fast_vae=True)
    _add_temporal_options(p)
    _add_encoder_options(p)
    p.add_argument("--start", type=_time, help="start time (seconds or HH:MM:SS)")
    p.add_argument("--end", type=_time, help="end time (seconds or HH:MM:SS)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--torch-threads", type=int, metavar="N", help=TORCH_THREADS_HELP)
    p.add_argument("--adapt", action="store_true",
                   help="fine-tune the model on each person's reference photos first (lite; a few minutes per "
                        "person on a CPU, once: cached in ~/.cache/streamrestore/adapted); stronger identity")
    p.add_argument("--adapt-steps", type=int, default=100, metavar="N",
                   help="fine-tuning steps per person with --adapt (default 100)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress display (by default a bar on a terminal, else a plain line every few seconds)")
    return p


class _CliHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests swap it)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def _configure_logging(verbose: bool) -> None:
    if not any(isinstance(h, _CliHandler) for h in log.handlers):
        log.addHandler(_CliHandler())
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def _set_torch_threads(requested: int | None) -> None:
    """The CLI owns its process, so it sizes torch's thread pool for all of it (the library
    only around its own work); the default is :func:`streamrestore.threads.default_torch_threads`."""
    import torch

    from streamrestore.threads import resolve_torch_threads

    torch.set_num_threads(resolve_torch_threads(requested))


def restorer_from_args(args: argparse.Namespace):
    """What to pass as ``model=`` to the library: ``args.model`` as given, or, with ``--fast-vae``,
    the restorer loaded here with TAESD and wrapped in ``--backend`` (the library's model
    options take names only)."""
    fast_vae = getattr(args, "fast_vae", None)
    if not fast_vae:
        return args.model
    if args.model == "identity":
        log.warning("--fast-vae ignored: the identity model has no decoder")
        return args.model
    from streamrestore.backends import build_backend
    from streamrestore.model.registry import load_model

    return build_backend(load_model(args.model, device=args.device, fast_vae=fast_vae), args.backend)


def _adapt_config(args: argparse.Namespace):
    """The per-identity adaptation asked for (``--adapt``), or None."""
    if args.adapt_steps < 1:
        raise UserError(f"--adapt-steps must be at least 1, got {args.adapt_steps}")
    if not args.adapt:
        return None
    from streamrestore.model.adapt import AdaptConfig

    return AdaptConfig(steps=args.adapt_steps)


def _restore_file(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    if args.start is not None and args.end is not None and args.end <= args.start:
        raise UserError(f"--end ({args.end}s) must be after --start ({args.start}s)")
    if args.max_faces is not None and args.max_faces < 1:
        raise UserError(f"--max-faces must be at least 1, got {args.max_faces}")
    if args.detect_every < 1:
        raise UserError(f"--detect-every must be at least 1, got {args.detect_every}")
    if args.torch_threads is not None and args.torch_threads < 1:
        raise UserError(f"--torch-threads must be at least 1, got {args.torch_threads}")
    temporal = temporal_from_args(args)
    _set_torch_threads(args.torch_threads)
    from streamrestore.api import restore_video
    from streamrestore.video.writer import default_output_path

    output = args.output or default_output_path(args.input)
    stats = restore_video(
        args.input, output, args.refs,
        model=args.model, fast_vae=args.fast_vae, device=args.device, detector=args.detector, face_models=args.face_models,
        codec=args.codec, crf=args.crf, preset=args.preset, start=args.start, end=args.end,
        max_faces=args.max_faces, unmatched=args.unmatched, detect_every=args.detect_every, temporal=temporal,
        backend=args.backend, force=args.force, torch_threads=args.torch_threads, adapt=_adapt_config(args),
        progress=not args.no_progress,
    )
    print(stats.summary(verbose=args.verbose), file=sys.stderr)
    print(f"wrote {output}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The CLI's log and thread set-up is undone on return, so calling main() from Python
    # (tests, scripts) leaves the "streamrestore" logger and torch as it found them.
    torch = sys.modules.get("torch")  # only a caller that already loaded torch has threads to keep
    saved = (list(log.handlers), log.level, log.propagate, torch.get_num_threads() if torch else None)
    try:
        with stop_signals_interrupt() as stop:
            return _main(argv, stop)
    finally:
        log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]
        if saved[3] is not None:
            torch.set_num_threads(saved[3])


def _main(argv: list[str], stop=None) -> int:
    try:
        if argv and argv[0] in SUBCOMMANDS:
            import importlib

            _configure_logging("-v" in argv or "--verbose" in argv)
            module = importlib.import_module(f"streamrestore.commands.{argv[0]}")
            return module.main(argv[1:])
        return _restore_file(argv)
    except UserError as exc:
        print(f"streamrestore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (stop_signals.Interrupted)
        return _interrupted(exc)
    except Exception:
        if stop is None or stop.signum is None:
            raise
        return _interrupted(stop.interrupted())  # the stop signal surfaced as another error


def _interrupted(exc: KeyboardInterrupt) -> int:
    how = f" by {exc.signal_name}" if getattr(exc, "signal_name", None) else ""
    print(f"streamrestore: interrupted{how}; the output was not written", file=sys.stderr)
    return getattr(exc, "exit_code", 130)


def entry() -> None:
    """The console script: runs :func:`main` and exits with its code.

    After a stop signal (SIGTERM 143, SIGHUP 129), once the clean-up is done, the process ends
    at once (``os._exit``): a signal that lands while a native library is being imported (torch,
    onnxruntime) can leave it half set up, and the interpreter's own shutdown then crashed with
    SIGSEGV now and then instead of exiting with the signal's code.
    """
    import os

    code = main()
    if code in (128 + 1, 128 + 15):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
