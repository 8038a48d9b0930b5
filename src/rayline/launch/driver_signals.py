"""The driver's own SIGINT and SIGTERM handlers, for as long as it drives a run.

A process started in the background by a non-interactive shell (``nohup rayline run big.py &``,
``make test > log 2>&1 &``) inherits SIGINT as ignored, and Python keeps it so; SIGTERM, how
systemd, Kubernetes and cron supervisors stop a process, would end it without a word. Inside
``cancel_on_signals`` both raise ``KeyboardInterrupt`` naming the signal, which the ``Runner``
turns into a graceful cancel (its Ray work cancelled, the run recorded CANCELLED, exit code
130). The previous handlers come back afterwards. Python lets only the main thread set
handlers: elsewhere (a run started from a thread) this changes nothing.

Example::

    with cancel_on_signals():
        session.runner(ex).run(plan)
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["cancel_on_signals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def cancel_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt("SIGINT" | "SIGTERM")`` in the main thread
    inside the block, even where SIGINT was ignored at exec."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for s in _SIGNALS:
        signal.signal(s, _raise_interrupt)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
