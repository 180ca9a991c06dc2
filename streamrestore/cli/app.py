"""The ``streamrestore`` program: picks the command, sets up logging and torch's threads for the
process, turns user mistakes and stop signals into exit codes.

Exit codes: 0 success, 1 some inputs failed (`batch`), 2 bad input or usage (one line, no traceback), 130 interrupted (Ctrl-C),
143 / 129 stopped by SIGTERM / SIGHUP (cleaned up as after Ctrl-C).
"""
from __future__ import annotations

import importlib
import sys

from streamrestore.cli.options import configure_logging, log
from streamrestore.cli.restore import SUBCOMMANDS
from streamrestore.cli.restore import main as restore_main
from streamrestore.errors import UserError
from streamrestore.stop_signals import StopState, stop_signals_interrupt


def main(argv: list[str] | None = None) -> int:
    """Runs one command (``argv`` without the program name; default ``sys.argv[1:]``) and
    returns its exit code."""
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


def _main(argv: list[str], stop: StopState | None = None) -> int:
    try:
        if argv and argv[0] in SUBCOMMANDS:
            configure_logging("-v" in argv or "--verbose" in argv)
            module = importlib.import_module(f"streamrestore.cli.{argv[0]}")
            return module.main(argv[1:])
        return restore_main(argv)
    except UserError as exc:
        print(f"streamrestore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (stop_signals.Interrupted)
        if stop is not None and stop.signum is not None and not getattr(exc, "signal_name", None):
            # a library that caught the stop signal's Interrupted and raised its own KeyboardInterrupt
            # (Ray's ray.wait): the signal's exit code and name, with what the work kept
            meant = stop.interrupted() or exc
            meant.kept = getattr(exc, "kept", None)  # type: ignore[union-attr]
            exc = meant
        return _interrupted(exc)
    except Exception:
        if stop is None or stop.signum is None:
            raise
        return _interrupted(stop.interrupted())  # the stop signal surfaced as another error


def _interrupted(exc: KeyboardInterrupt) -> int:
    how = f" by {exc.signal_name}" if getattr(exc, "signal_name", None) else ""
    # what the interrupted work kept, where it kept something (a training run's checkpoint)
    kept = getattr(exc, "kept", None) or "the output was not written"
    print(f"streamrestore: interrupted{how}; {kept}", file=sys.stderr)
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
