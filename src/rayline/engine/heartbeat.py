"""The driver's heartbeat: a thread that renews the run's lease every ``interval`` seconds and
notices what must stop the run from outside its loop.

On each beat: a lease taken over by another process (``lost``) and compute that is gone
(``compute_lost``, from ``Executor.lost()``: the Ray cluster's head died, which Ray itself
reports only after a minute, by ending the process). Every ``cancel_interval`` (half a second,
apart from the lease's interval): a cancel requested through the run store (``rayline cancel``
from any host, ``store/cancels.py``), acknowledged at once and kept in ``cancelled`` for the
driver loop. While the loop runs a node in the main thread itself (a sequential executor), the
request interrupts it as Ctrl-C would, if the process handles SIGINT (``launch`` makes sure).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

from rayline.engine.executors.base import Executor
from rayline.errors import LeaseLostError
from rayline.store.cancels import CancelRequests

log = logging.getLogger("rayline.runner")


class BeatThread:
    """A daemon thread that runs ``_beat`` while the ``with`` block runs; ``_beat`` loops until
    ``_stop`` is set, which leaving the block does (then waits up to 5 s for the thread)."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=name, daemon=True)

    def _beat(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Heartbeat(BeatThread):
    """Heartbeats the run's lease from a thread, and notices what must stop the run: another
    process took the run over (``lost``), the executor's compute is gone (``compute_lost``: the
    Ray cluster's head died), or a cancel was requested (``cancelled``: its reason). The driver
    loop checks all three every turn."""

    #: Consecutive failed probes of the compute before the run gives up on it.
    PROBES = 2

    def __init__(self, store: Any, run_id: str, generation: int, interval: float, executor: Executor | None = None,
                 *, cancel_interval: float = 0.5):  # fmt: skip
        self.store, self.run_id, self.generation, self.interval = store, run_id, generation, interval
        self.executor = executor
        self.cancel_interval = min(cancel_interval, interval)
        self.lost: LeaseLostError | None = None
        self.compute_lost: str | None = None
        self.cancelled: str | None = None
        self._cancels = CancelRequests(store)
        self._failed_probes = 0
        self._interruptible = False
        super().__init__(f"rayline-lease-{run_id}")

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Around a node that the loop runs in this (main) thread: a cancel noticed meanwhile
        raises ``KeyboardInterrupt`` here, as Ctrl-C would."""
        self._interruptible = threading.current_thread() is threading.main_thread()
        try:
            if self.cancelled:
                self._interrupt_main()
            yield
        finally:
            self._interruptible = False

    def _beat(self) -> None:
        next_beat = time.monotonic() + self.interval
        while not self._stop.wait(self.cancel_interval):
            if self.cancelled is None:
                self._check_cancel()
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + self.interval
            try:
                self.store.heartbeat(self.run_id, self.generation)
            except LeaseLostError as exc:
                self.lost = exc
                return
            except Exception as exc:  # a transient store error must not kill the run
                log.warning("heartbeat for run %s failed: %s", self.run_id, exc)
            self._probe()

    def _check_cancel(self) -> None:
        try:
            why = self._cancels.standing(self.run_id, self.generation)
            if why is None:
                return
            self._cancels.notice(self.run_id, self.generation)
        except Exception as exc:  # a transient store error: the next look may work
            log.warning("looking for a cancel of run %s failed: %s", self.run_id, exc)
            return
        log.info("run %s: %s", self.run_id, why)
        self.cancelled = why
        if self._interruptible:
            self._interrupt_main()

    def _interrupt_main(self) -> None:
        # Only into a Python handler: SIGINT ignored would do nothing, and its default would
        # kill the process without recording anything.
        if callable(signal.getsignal(signal.SIGINT)):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def _probe(self) -> None:
        try:
            why = self.executor.lost() if self.executor is not None else None
        except Exception as exc:  # a probe that breaks is not a verdict on the compute
            log.warning("probing the compute of run %s failed: %s", self.run_id, exc)
            return
        self._failed_probes = self._failed_probes + 1 if why else 0
        if why and self._failed_probes >= self.PROBES:
            self.compute_lost = why
