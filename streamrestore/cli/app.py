"""The ``streamrestore`` program: picks the command, sets up logging and torch's threads for the
process, turns user mistakes and stop signals into exit codes.

Exit codes: 0 success, 1 some inputs failed (`batch`), out of memory or an unexpected error, 2 bad input or usage
(one line, no traceback), 75 what may work when run again (:class:`~streamrestore.errors.TemporaryError`: another
batch writing the folder, a Ray cluster not reachable), 130 interrupted (Ctrl-C), 143 / 129 stopped by SIGTERM /
SIGHUP (cleaned up as after Ctrl-C).
"""
from __future__ import annotations

import importlib
import os
import sys

from streamrestore.cli.options import configure_logging, log
from streamrestore.cli.restore import SUBCOMMANDS
from streamrestore.cli.restore import main as restore_main
from streamrestore.errors import UserError, one_line, out_of_memory, thread_not_started
from streamrestore.stop_signals import StopState, stop_signals_interrupt


def main(argv: list[str] | None = None) -> int:
    """Runs one command (``argv`` without the program name; default ``sys.argv[1:]``) and
    returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # The CLI's log and thread set-up is undone on return, so calling main() from Python
    # (tests, scripts) leaves the "streamrestore" logger and torch as it found them.
    torch = sys.modules.get("torch")  # only a caller that already loaded torch has threads to keep
    saved = (list(log.handlers), log.level, log.propagate, torch.get_num_threads() if torch else None)
    streams = sys.stdout, sys.stderr
    # None: a descriptor closed at start-up (`2>&-`, a daemon): what is said goes nowhere, as print()'s
    # own does, where the progress bar and the summary asked it whether it was a terminal
    closed = [open(os.devnull, "w") if stream is None else None for stream in streams]  # noqa: SIM115
    sys.stdout, sys.stderr = (_ReaderMayLeave(stream or null) for stream, null in zip(streams, closed))
    try:
        with stop_signals_interrupt() as stop:
            return _main(argv, stop)
    finally:
        for wrapped in (sys.stdout, sys.stderr):
            if isinstance(wrapped, _ReaderMayLeave):
                try:
                    wrapped.flush()  # (a pipe's block buffer: its reader may be gone, found here, not at exit)
                except (OSError, ValueError):  # (a full disk, a closed stream: the clean-up goes on)
                    pass
                wrapped.restore()
        sys.stdout, sys.stderr = streams
        for null in closed:
            if null is not None:
                null.close()
        log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]
        if saved[3] is not None:
            torch.set_num_threads(saved[3])


class _ReaderMayLeave:
    """A standard stream whose reader may go before the program ends (``2>&1 | head -1``, a closed
    log viewer): what is said after that is dropped and the work goes on, so the exit code is the
    work's, not 1 from a ``BrokenPipeError`` raised by the last line of a finished run. The stream's
    descriptor then points at the null device, so the interpreter's own flush at exit cannot fail
    either (Python's advice for a broken pipe)."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._gone = False
        # A file name that is not UTF-8 (a Latin-1 "caf\xe9.mp4") reaches Python as lone surrogates,
        # which stderr wrote as "caf\udce9": a name no file has. Written back as the bytes they stand
        # for, a message names the file as ls does and a script can use the path it prints.
        # A stream of another encoding (PYTHONIOENCODING=ascii, Windows' cp1252 into a file) writes what it cannot
        # hold as escapes: a table's arrows, a name's accents made eval, bench and cache end in a traceback.
        self._errors = None
        self._utf8 = (getattr(stream, "encoding", "") or "").lower().replace("-", "") == "utf8"
        if hasattr(stream, "reconfigure") and (self._utf8 or getattr(stream, "errors", None) == "strict"):
            self._errors = stream.errors
            stream.reconfigure(errors="surrogateescape" if self._utf8 else "backslashreplace")

    def restore(self) -> None:
        """The stream as it was (its error handler)."""
        if self._errors is not None:
            try:
                self._stream.reconfigure(errors=self._errors)
            except (ValueError, OSError):  # (closed)
                pass

    def _left(self) -> None:
        self._gone = True
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        except (OSError, AttributeError, ValueError):  # (not a real descriptor: a test's captured stream)
            pass

    def write(self, text: str) -> int:
        if not self._gone:
            if self._errors is not None and self._utf8:
                try:
                    text.encode("utf-8", "surrogateescape")
                except UnicodeEncodeError:  # a surrogate that stands for no byte: written as before, escaped
                    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._left()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._left()

    def __getattr__(self, name: str):  # isatty, fileno, encoding, ...: the stream's own
        return getattr(self._stream, name)


def _main(argv: list[str], stop: StopState | None = None) -> int:
    try:
        if argv and argv[0] in SUBCOMMANDS:
            configure_logging("-v" in argv or "--verbose" in argv)
            module = importlib.import_module(f"streamrestore.cli.{argv[0]}")
            return module.main(argv[1:])
        return restore_main(argv, stop=stop)
    except UserError as exc:
        text = str(exc)
        shown = "\n".join(map(one_line, text.split("\n"))) if exc.several_lines else one_line(text)
        print(f"streamrestore: error: {shown}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (stop_signals.Interrupted)
        if stop is not None and stop.signum is not None and not getattr(exc, "signal_name", None):
            # a library that caught the stop signal's Interrupted and raised its own KeyboardInterrupt
            # (Ray's ray.wait): the signal's exit code and name, with what the work kept
            meant = stop.interrupted() or exc
            meant.kept = getattr(exc, "kept", None)  # type: ignore[union-attr]
            exc = meant
        return _interrupted(exc)
    except Exception as exc:
        if stop is not None and stop.signum is not None:
            return _interrupted(stop.interrupted())  # the stop signal surfaced as another error
        memory = out_of_memory(exc)
        if memory is not None and thread_not_started(memory):
            said = str(memory).strip().splitlines()
            print(f"streamrestore: error: could not start a thread ({said[-1] if said else type(memory).__name__}): "
                  "memory or the process's thread limit ran out; free memory, or raise the limit (ulimit -v, "
                  "ulimit -u, a container's memory or pids limit)", file=sys.stderr)
            return 1
        if memory is not None:  # (a traceback from deep in torch or onnxruntime, its last line varying)
            said = str(memory).strip().splitlines()
            gpu = "cuda" in str(memory).lower() or type(memory).__name__ == "OutOfMemoryError"
            print(f"streamrestore: error: {'GPU ' if gpu else ''}out of memory "
                  f"({said[-1] if said else type(memory).__name__}); {_memory_advice(argv, gpu)}", file=sys.stderr)
            return 1
        raise


def _option_text(argv: list[str], option: str) -> str | None:
    """What was given to ``option`` (``--x V`` or ``--x=V``; the last one counts), None where nothing is."""
    value = None
    for arg, after in zip(argv, [*argv[1:], ""]):
        text = after if arg == option else arg.partition("=")[2] if arg.startswith(option + "=") else None
        if text is not None:
            value = text
    return value


def _option_value(argv: list[str], option: str) -> float | None:
    """The number given to ``option`` (:func:`_option_text`), None where none is."""
    text = _option_text(argv, option)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _memory_advice(argv: list[str], gpu: bool) -> str:
    """What to try after memory ran out, leaving out the options the command already gave (advice to add
    `--torch-threads 1` to a command that has it reads as if the tool had not looked)."""
    threads = _option_value(argv, "--torch-threads")
    fewer_threads = [] if gpu or (threads is not None and threads <= 1) else ["--torch-threads 1"]
    if argv and argv[0] == "train":
        batch_sizes = [arg.partition("=")[2] for arg in argv if arg.startswith("batch_size=")]  # (--set KEY=VALUE)
        less = fewer_threads + ([] if batch_sizes and batch_sizes[-1] == "1" else ["--set batch_size=N smaller"])
    elif gpu:
        crop = _option_value(argv, "--crop-resolution")
        less = [] if crop is not None and crop <= 128 else ["--crop-resolution 128"]
    else:  # (on a CPU the restorer's weights and ONNX sessions hold the most: smaller crops left the peak as it was;
        # eager held 0.2-0.9 GB less, and ran under limits where the default was killed)
        less = ([] if _option_text(argv, "--backend") == "eager" else ["--backend eager"]) + fewer_threads
    if gpu:
        ways = ["free the GPU (other processes on it)", "use --device cpu"]
    else:
        ways = ["free memory", "raise the process's limit (ulimit -v, a container's)"]
    if less:
        ways.append(f"give it less to hold at once: {', '.join(less)}")
    return ", ".join(ways[:-1]) + f" or {ways[-1]}" if len(ways) > 1 else ways[0]


def _interrupted(exc: KeyboardInterrupt) -> int:
    how = f" by {exc.signal_name}" if getattr(exc, "signal_name", None) else ""
    # what the interrupted work kept, where it kept something (a training run's checkpoint)
    kept = getattr(exc, "kept", None) or "the output was not written"
    print(one_line(f"streamrestore: interrupted{how}; {kept}"), file=sys.stderr)
    return getattr(exc, "exit_code", 130)


#: the address-space limit under which OpenBLAS gets one thread: it hung at 1.8 GB, ran at 2.5 GB; a scheduler's
#: limit of a job's tens of GB leaves numpy its threads (review 52)
OPENBLAS_ONE_THREAD_BELOW = 8 << 30


def one_blas_thread_under_an_address_limit() -> None:
    """Sets ``OPENBLAS_NUM_THREADS=1`` where the process has an address-space limit (``ulimit -v``) under
    :data:`OPENBLAS_ONE_THREAD_BELOW` and the user set no count. Under ``ulimit -v 1800000`` scipy's OpenBLAS (loaded with the face models' packages)
    retried its threads' buffers forever as it was imported: 14 minutes at 100 % CPU, no word, deaf to Ctrl-C
    and SIGTERM. With one thread it starts, and the run ends with the out-of-memory line (support F2). Left
    alone without a limit: the count is the user's, and numpy's own work keeps its threads."""
    try:
        import resource
    except ImportError:  # (Windows: no such limit)
        return
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft < OPENBLAS_ONE_THREAD_BELOW:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def entry() -> None:
    """The console script: runs :func:`main` and exits with its code.

    After a stop signal (SIGTERM 143, SIGHUP 129), once the clean-up is done, the process ends
    at once (``os._exit``): a signal that lands while a native library is being imported (torch,
    onnxruntime) can leave it half set up, and the interpreter's own shutdown then crashed with
    SIGSEGV now and then instead of exiting with the signal's code.

    Once the work is done and its code known, a SIGTERM or SIGHUP no longer changes it: one that came
    while the interpreter shut down (its threads joined, ~2 s after `live`) ended the process as killed
    (143) after it had said it wrote the file. Ctrl-C still ends a shut-down that hangs.
    """
    import os
    import signal

    from streamrestore.stop_signals import STOP_SIGNALS

    one_blas_thread_under_an_address_limit()
    code = main()
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if code in (128 + 1, 128 + 15):
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:  # (closed at start-up)
                    stream.flush()
            except (OSError, ValueError):  # (its reader gone)
                pass
        os._exit(code)
    sys.exit(code)
