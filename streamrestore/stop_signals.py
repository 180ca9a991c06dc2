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


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread.

    After the first one, further stop signals are ignored until the block ends, so a second
    ``kill`` cannot cut the clean-up short (SIGKILL still ends the process). Handlers are
    installed only from the main thread (Python allows no other) and restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}

    def handler(signum, _frame):
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    try:
        for sig in STOP_SIGNALS:
            saved[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)
