"""Stop signals (SIGTERM from ``timeout``, ``docker stop`` and systemd; SIGHUP when the terminal
goes away) handled like Ctrl-C: they raise :class:`Interrupted`, a ``KeyboardInterrupt``, so
every clean-up that runs after Ctrl-C runs after them too (the output's temporary file is
removed, an existing output is left as it was). The exit code is the shell's convention,
128 + the signal number: 143 for SIGTERM, 129 for SIGHUP (Ctrl-C stays 130).
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

#: The signals turned into :class:`Interrupted` (SIGINT already is a KeyboardInterrupt).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; ``exit_code`` is 128 + its number."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + self.signum
        super().__init__(self.signal_name)


class StopState:
    """What :func:`stop_signals_interrupt` saw: ``signum`` of the stop signal, None if none came.

    Code that catches everything (some imports do, e.g. a native library initialising) can turn
    the :class:`Interrupted` raised inside it into another exception; :meth:`interrupted` gives
    it back as it was meant.
    """

    def __init__(self):
        self.signum: int | None = None

    def interrupted(self) -> KeyboardInterrupt | None:
        if self.signum is None:
            return None
        return KeyboardInterrupt() if self.signum == signal.SIGINT else Interrupted(self.signum)


@contextmanager
def stop_signals_interrupt() -> Iterator[StopState]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread;
    Ctrl-C raises KeyboardInterrupt as always, and is noted in the state like them.

    After the first one, further stop signals are ignored until the block ends, so a second
    ``kill`` cannot cut the clean-up short (SIGKILL still ends the process). Handlers are
    installed only from the main thread (Python allows no other) and restored on exit.
    """
    state = StopState()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    saved = {}

    def handler(signum, _frame):
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        state.signum = signum
        raise Interrupted(signum)

    def on_ctrl_c(signum, frame):
        state.signum = signum  # noted, then Python's own behaviour (a second Ctrl-C works too)
        signal.default_int_handler(signum, frame)

    try:
        for sig in STOP_SIGNALS:
            saved[sig] = signal.signal(sig, handler)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            saved[signal.SIGINT] = signal.signal(signal.SIGINT, on_ctrl_c)
        yield state
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold Ctrl-C and the stop signals back while the block runs (model and native-library
    loading); one that arrives meanwhile takes effect as the block ends.

    A signal handled in the middle of a native library's import (torch, onnxruntime,
    insightface) can leave that library half set up, and the interpreter then crashed with
    SIGSEGV now and then instead of cleaning up. Inside the block the signals only are noted;
    the first one is raised again, to the handlers of before, when the block ends. Outside the
    main thread (where handlers cannot be set) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    held = (signal.SIGINT, *STOP_SIGNALS)
    previous = {s: signal.getsignal(s) for s in held}
    for s in held:
        if previous[s] is not signal.SIG_IGN:  # an ignored signal stays ignored
            signal.signal(s, lambda signum, _frame: pending.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if pending:
            signal.raise_signal(pending[0])


#: Native libraries the face models load (imported by :func:`preload_native_libraries`).
NATIVE_LIBRARIES = ("torch", "cv2", "av", "onnxruntime", "insightface", "norfair", "dlib")


def preload_native_libraries() -> None:
    """Import the native libraries the pipeline may load, those that are installed (call it
    inside :func:`stop_signals_held`, so that no signal lands mid-import)."""
    import importlib

    for name in NATIVE_LIBRARIES:
        try:
            if name == "onnxruntime":  # (as everywhere: without its telemetry, which is read at its import)
                from streamrestore.faces.detect import onnxruntime_module

                onnxruntime_module()
            else:
                importlib.import_module(name)
        except ImportError:
            pass
