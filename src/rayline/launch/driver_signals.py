"""The driver's own SIGINT and SIGTERM handlers, for as long as it drives a run.

A process started in the background by a non-interactive shell (``nohup rayline run big.py &``,
``make test > log 2>&1 &``) inherits SIGINT as ignored, and Python keeps it so; SIGTERM, how
systemd, Kubernetes and cron supervisors stop a process, would end it without a word. Inside
``cancel_on_signals`` both raise ``KeyboardInterrupt`` naming the signal, which the ``Runner``
turns into a graceful cancel (its Ray work cancelled, the run recorded CANCELLED, exit code
130). The previous handlers come back afterwards. Python lets only the main thread set
handlers: elsewhere (a run started from a thread) this changes nothing.

Example::

    with cancel_on_signals() as signals:
        ex = session.executor()
        signals.arm()  # again: ray.init sets a SIGTERM handler of its own
        session.runner(ex).run(plan)
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["DriverSignals", "cancel_on_signals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


class DriverSignals:
    """The handlers ``cancel_on_signals`` installed, and what they replaced."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self._previous: dict[int, Any] = {}

    def arm(self) -> None:
        """Install the handlers (again): ``ray.init`` sets a SIGTERM handler of its own (one
        that exits the process), so call this once the executor has started."""
        if not self.active:
            return
        for s in _SIGNALS:
            current = signal.getsignal(s)
            if current is not _raise_interrupt:
                self._previous[s] = current
            signal.signal(s, _raise_interrupt)

    def restore(self) -> None:
        """Put back the handlers found before the last ``arm`` (Ray's, if it set one)."""
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


@contextmanager
def cancel_on_signals() -> Iterator[DriverSignals]:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt("SIGINT" | "SIGTERM")`` in the main thread
    inside the block, even where SIGINT was ignored at exec. Call ``arm()`` on what it yields
    again after starting Ray."""
    signals = DriverSignals(threading.current_thread() is threading.main_thread())
    signals.arm()
    try:
        yield signals
    finally:
        if signals.active:
            signals.restore()
