"""The scheduler: poll due triggers, reserve their runs under the overlap policy, persist what
they fired, start what may start; as one ``tick`` or as a loop.

``tick(now)`` is the whole algorithm and what ``rayline schedule tick`` (system cron) runs:

1. for each (flow, trigger) whose stored next fire time has come (or that was never polled):
   ``poll(now, state)`` says which runs are due (``Fire``) and when to poll next;
2. each fire becomes a reserved run (``FlowSlots.reserve``, one ``BEGIN IMMEDIATE``
   transaction: run key, slot and insert together): ``start``, ``queued``, ``skipped`` (recorded
   with its reason) or ``exists`` (same run key: the tick was already fired, by a restart or a
   second scheduler, and nothing new is made);
3. the trigger's new state, next fire time (UTC) and last run are stored;
4. runs that may start are handed to the launcher; then queued runs whose flow slot is free.

``run_forever(stop)`` repeats ``tick`` and sleeps until the earliest next fire time (at most
``max_sleep`` s, so a wall-clock jump is noticed within that), waking at once when ``stop`` is
set (SIGINT/SIGTERM in ``rayline scheduler``).

Flows are loaded (and their schedules read) when the scheduler starts; restart it after
editing a schedule. Each fire's run is planned once (``rayline.launch.admission.plan_run``) and
reserved through ``rayline.launch``; a run started in this process runs that plan, a run's child
process (``ProcessLauncher``) loads its flow afresh from the file, once.

Clocks: ``now`` (the ``clock`` argument, injectable; tests never sleep) only decides which ticks
are due and their logical times. Leases and staleness use the run store's clock, so a scheduler
whose clock jumps back neither fires a tick twice (its state, and the run key, remember it) nor
takes a live run for a dead one.

Example::

    sched = Scheduler(load_entries(["flows/churn.py"]), settings=Settings(), launcher=None)
    report = sched.tick()              # launcher=None: reserve only, start nothing
    [(f.flow_name, f.action, f.run_id) for f in report]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rayline.config import Settings
from rayline.errors import RaylineError
from rayline.launch.admission import plan_run, reserve
from rayline.launch.flow_files import load_flow
from rayline.launch.session import Session
from rayline.store.slots import FlowSlots
from rayline.store.trigger_states import TriggerStates
from rayline.triggers.catalog import Entry, flows_of
from rayline.triggers.trigger import Fire, iso_utc, utc_now

log = logging.getLogger("rayline.scheduler")

__all__ = ["Fired", "Scheduler"]


@dataclass(frozen=True, slots=True)
class Fired:
    """What one fire led to."""

    trigger_id: str
    flow_name: str
    kind: str
    run_key: str | None
    action: str  # start | queued | skipped | exists | error
    run_id: str | None
    reason: str
    logical_time: str | None = None


class Scheduler:
    """Fires the triggers of ``entries`` (see the module docstring).

    Args:
        entries: from ``catalog.load_entries``.
        settings: where the run store is; its ``lease_ttl`` decides when a holder is dead.
        clock: returns the current aware UTC time (inject a fake one in tests).
        launcher: starts runs (``InProcessLauncher``, ``ProcessLauncher``); None reserves only.
    """

    def __init__(
        self,
        entries: Sequence[Entry],
        *,
        settings: Settings | None = None,
        clock: Callable[[], datetime] = utc_now,
        launcher: Any = None,
    ) -> None:
        self.entries = list(entries)
        self.session = Session(settings or Settings(), executor="local")
        self.settings = self.session.settings
        self.store = self.session.runs
        self.slots = FlowSlots(self.store, self.settings.lease_ttl)
        self.states = TriggerStates(self.store)
        self.clock = clock
        self.launcher = launcher
        self._graphs: dict[str, Any] = {}
        self._plans: dict[str, Any] = {}  # run id -> its plan, until the tick starts it
        self._next: dict[str, datetime | None] = {}

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------- one tick
    def tick(self, now: datetime | None = None) -> list[Fired]:
        """Fire what is due at ``now`` (default: the clock), start what may start."""
        now = now or self.clock()
        report: list[Fired] = []
        to_start: list[str] = []
        for entry in self.entries:
            stored = self.states.get(entry.trigger_id)
            if stored is not None and stored.next_at is not None and stored.next_at > now:
                self._next[entry.trigger_id] = stored.next_at
                continue
            state = dict(stored.state) if stored else {}
            try:
                poll = entry.trigger.poll(now, state)
            except Exception as exc:  # one broken trigger must not stop the others
                log.error("%s: polling failed: %s: %s", entry.trigger_id, type(exc).__name__, exc)
                self._next[entry.trigger_id] = now + timedelta(seconds=30)
                continue
            if poll.note:
                log.warning("flow '%s': %s", entry.flow_name, poll.note)
            state, last_run = poll.state, None
            for fire in poll.fires:
                fired, starts = self._fire(entry, fire, now)
                report.append(fired)
                to_start += starts
                if fired.action != "error":
                    state = entry.trigger.settle(state, fire, fired.action)
                    last_run = fired.run_id or last_run
            extra: dict[str, Any] = {"last_fired_at": now, "last_run_id": last_run} if last_run else {}
            self.states.put(entry.trigger_id, flow_name=entry.flow_name, kind=entry.trigger.kind,
                            state=state, next_at=poll.next_at, **extra)  # fmt: skip
            self._next[entry.trigger_id] = poll.next_at
        if self.launcher is not None:
            for run_id in to_start:
                self._start(run_id)
            self.drain()
        return report

    def _start(self, run_id: str) -> None:
        self.launcher.start(run_id, plan=self._plans.pop(run_id, None))

    def drain(self) -> list[str]:
        """Start queued runs of this scheduler's flows whose slot is free; return their ids."""
        started = []
        if self.launcher is None:
            return started
        for flow in flows_of(self.entries):
            while (run_id := self.slots.claim_next(flow)) is not None:
                log.info("flow '%s': queued run %s may start now", flow, run_id)
                self._start(run_id)
                started.append(run_id)
        return started

    def _fire(self, entry: Entry, fire: Fire, now: datetime) -> tuple[Fired, list[str]]:
        info = dict(fire.info)
        kind = entry.trigger.kind
        run_key = f"{entry.flow_name}/{fire.run_key}" if fire.run_key else None
        what = f"flow '{entry.flow_name}' ({entry.trigger.describe()}"
        what += f", logical time {info['logical_time']})" if "logical_time" in info else ")"
        trigger = {**info, "kind": kind, "reason": fire.reason, "trigger_id": entry.trigger_id,
                   "fired_at": iso_utc(now)}  # fmt: skip
        try:
            planned = plan_run(self.session, self._graph(entry), entry.all_params, offer=fire.offer,
                               run_key=run_key, trigger=trigger, sort_key=fire.sort_key)  # fmt: skip
            got = reserve(self.slots, planned, overlap=entry.trigger.overlap, backlog=fire.backlog,
                          record_skip=fire.record_skip, skip_takes_key=fire.skip_takes_key)  # fmt: skip
        except Exception as exc:  # a flow that no longer compiles must not stop the others
            text = str(exc) if isinstance(exc, RaylineError) else f"{type(exc).__name__}: {exc}"
            log.error("%s: not fired: %s", what, text)
            return Fired(entry.trigger_id, entry.flow_name, kind, run_key, "error", None, text,
                         info.get("logical_time")), []  # fmt: skip
        if got.action == "start" and got.run_id:  # started at the end of this tick
            self._plans[got.run_id] = planned.plan
        if got.promoted:
            log.info("flow '%s': queued run %s takes the free slot", entry.flow_name, got.promoted)
        message = {
            "start": f"run {got.run_id} starts",
            "queued": f"run {got.run_id} queued: {got.reason}",
            "skipped": f"skipped{f' (run {got.run_id})' if got.run_id else ''}: {got.reason}",
            "exists": f"already fired: run {got.run_id} has key {run_key}",
        }[got.action]
        log.info("%s fired (%s): %s", what, fire.reason, message)
        fired = Fired(entry.trigger_id, entry.flow_name, kind, run_key, got.action, got.run_id,
                      got.reason or fire.reason, info.get("logical_time"))  # fmt: skip
        return fired, got.to_start

    def _graph(self, entry: Entry) -> Any:
        graph = entry.graph or self._graphs.get(entry.target)
        if graph is None:
            graph = self._graphs[entry.target] = load_flow(entry.target)
        return graph

    # ------------------------------------------------------------------------- the loop
    def next_wake(self) -> datetime | None:
        """The earliest next poll time known after the last tick."""
        times = [t for t in self._next.values() if t is not None]
        return min(times) if times else None

    def run_forever(self, stop: threading.Event, *, max_sleep: float = 30.0, shutdown_timeout: float = 30.0) -> None:
        """Tick, sleep until the next fire time, repeat, until ``stop`` is set; then stop the
        runs this scheduler started (see ``ProcessLauncher.shutdown``)."""
        kinds = ", ".join(sorted({e.trigger.kind for e in self.entries})) or "none"
        log.info("scheduler started: %d trigger(s) (%s) of %d flow(s); run store %s",
                 len(self.entries), kinds, len(flows_of(self.entries)), self.store.url)  # fmt: skip
        try:
            while not stop.is_set():
                self.tick()
                if self.launcher is not None:
                    self.launcher.reap()
                    self.drain()
                stop.wait(self._sleep_for(max_sleep))
        finally:
            if self.launcher is not None:
                self.launcher.shutdown(shutdown_timeout)
            log.info("scheduler stopped")

    def _sleep_for(self, max_sleep: float) -> float:
        wake = self.next_wake()
        delay = max_sleep if wake is None else (wake - self.clock()).total_seconds()
        if self.launcher is not None and self.launcher.busy():
            delay = min(delay, 1.0)  # notice finished runs soon, to start what is queued
        return min(max(delay, 0.01), max_sleep)
