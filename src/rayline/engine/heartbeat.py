"""The driver's heartbeat: a thread that renews the run's lease every ``interval`` seconds and,
on each beat, notices what must stop the run from outside its loop.

Today that is a lease taken over by another process (``lost``) and compute that is gone
(``compute_lost``, from ``Executor.lost()``: the Ray cluster's head died, which Ray itself
reports only after a minute, by ending the process). A cancel requested through the run store
belongs here too: the beat is where the driver looks at the database anyway.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from rayline.engine.executors.base import Executor
from rayline.errors import LeaseLostError

log = logging.getLogger("rayline.runner")


class Heartbeat:
    """Heartbeats the run's lease from a thread, and on each beat notices what must stop the run:
    another process took the run over (``lost``), or the executor's compute is gone
    (``compute_lost``: the Ray cluster's head died). The driver loop checks both every turn.
    A cancel requested through the run store is meant to be noticed here too."""

    #: Consecutive failed probes of the compute before the run gives up on it.
    PROBES = 2

    def __init__(self, store: Any, run_id: str, generation: int, interval: float, executor: Executor | None = None):
        self.store, self.run_id, self.generation, self.interval = store, run_id, generation, interval
        self.executor = executor
        self.lost: LeaseLostError | None = None
        self.compute_lost: str | None = None
        self._failed_probes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"rayline-lease-{run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.store.heartbeat(self.run_id, self.generation)
            except LeaseLostError as exc:
                self.lost = exc
                return
            except Exception as exc:  # a transient store error must not kill the run
                log.warning("heartbeat for run %s failed: %s", self.run_id, exc)
            self._probe()

    def _probe(self) -> None:
        try:
            why = self.executor.lost() if self.executor is not None else None
        except Exception as exc:  # a probe that breaks is not a verdict on the compute
            log.warning("probing the compute of run %s failed: %s", self.run_id, exc)
            return
        self._failed_probes = self._failed_probes + 1 if why else 0
        if why and self._failed_probes >= self.PROBES:
            self.compute_lost = why
