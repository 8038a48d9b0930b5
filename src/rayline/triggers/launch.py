"""From a trigger's fire to a running run: build the run to reserve, and start reserved runs.

``planned_run`` compiles the flow (no cluster needed) into the ``NewRun`` that
``FlowSlots.reserve`` inserts. ``start_run`` then starts a reserved PENDING run in this process:
it is ``rayline.resume`` of a reserved run: the runner's ``take_over`` goes through the flow
slot (``SlotGuardedStore``), so only the slot's holder can become RUNNING. Two launchers use it:
``InProcessLauncher`` (``rayline schedule tick`` and ``rayline trigger``: run now, wait) and
``ProcessLauncher`` (``rayline scheduler``: one child process per run,
``python -m rayline.triggers.launch RUN_ID``, so the loop never blocks and a crashing run cannot
take the scheduler down). ``run_in_slot`` is ``rayline run`` and ``rayline.run(..., overlap=...)``:
reserve, then run here and wait, with the same guarded start.

Example::

    new = planned_run(graph, {"lr": 0.1}, run_key="churn/manual@x", trigger={"kind": "manual"})
    got = FlowSlots(store).reserve(new, overlap="skip")
    for run_id in got.to_start:
        start_run(run_id, settings=settings, executor="local")
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from rayline.config import Settings
from rayline.engine.compiler import compile_plan
from rayline.sdk.graph import Graph
from rayline.store.slots import FlowSlots, NewRun
from rayline.store.states import RunStatus

log = logging.getLogger("rayline.triggers")

__all__ = ["InProcessLauncher", "ProcessLauncher", "declared_overlap", "planned_run", "run_in_slot", "start_run"]


def planned_run(
    graph: Graph,
    params: Mapping[str, Any],
    *,
    offer: Mapping[str, Any] | None = None,
    run_key: str | None = None,
    trigger: Mapping[str, Any] | None = None,
    sort_key: float | None = None,
    persist_all: bool = True,
) -> NewRun:
    """The run to reserve for ``graph``: its compiled plan, params and trigger record.

    ``offer`` values (``logical_time``, ``snapshot``) become params only where the flow declares
    a parameter of that name and ``params`` does not set it.

    Raises:
        DefinitionError: the flow does not compile with these params.
    """
    declared = {p.name for p in graph.params}
    merged = dict(params)
    for name, value in (offer or {}).items():
        if name in declared and name not in merged:
            merged[name] = value
    plan = compile_plan(graph, merged, cluster=None, persist_all=persist_all)
    return NewRun(
        flow_name=graph.name,
        source=graph.source,
        params=plan.jsonable_params(),
        plan_hash=plan.plan_hash,
        plan_json=plan.to_json(),
        node_ids=tuple(n.id for n in plan.nodes),
        run_key=run_key,
        trigger=dict(trigger or {}),
        sort_key=sort_key,
    )


class _KeepReserved:
    """Heartbeats a reserved PENDING run while its starter imports the flow and starts Ray, so
    a slow start is not mistaken for a dead starter."""

    def __init__(self, slots: FlowSlots, run_id: str, interval: float) -> None:
        self._slots, self._run_id, self._interval = slots, run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"rayline-reserved-{run_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._slots.touch(self._run_id)
            except Exception as exc:  # a transient store error: the next beat may work
                log.warning("could not refresh reserved run %s: %s", self._run_id, exc)

    def __enter__(self) -> _KeepReserved:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def start_run(
    run_id: str,
    *,
    settings: Settings | None = None,
    executor: Any = None,
    address: str | None = None,
    on_event: Any = None,
) -> Any:
    """Start the reserved PENDING run ``run_id`` here and wait for it; returns the ``Run``.

    If the run cannot even start (its flow file no longer loads or compiles, the cluster cannot
    satisfy it), it is marked FAILED with the reason, which frees the flow's slot.

    Raises:
        StoreError: the run does not hold its flow's slot (it stays queued), or is not PENDING.
    """
    from rayline import api

    with api.Engine(settings, executor, address) as eng:
        slots = FlowSlots(eng.runs, eng.settings.lease_ttl)
        try:
            with _KeepReserved(slots, run_id, eng.settings.heartbeat_interval):
                record = eng.runs.get_run(run_id)
                graph = api.load_flow(record.source or "")
                ex = eng.executor()
                plan = eng.compile(graph, record.params, ex)
        except Exception as exc:
            _unreserve(eng.runs, run_id, exc)
            raise
        eng.runner(ex, on_event, slot="start").resume(plan, run_id)
        return api.Run.load(eng, run_id, graph=graph)


def _unreserve(store: Any, run_id: str, exc: BaseException) -> None:
    """End a reserved run that never started (FAILED, or CANCELLED on Ctrl-C): that frees the
    flow's slot, or drops the run from the flow's queue."""
    if store.get_run(run_id).status != RunStatus.PENDING:
        return
    if isinstance(exc, KeyboardInterrupt):
        store.set_run_status(run_id, RunStatus.CANCELLED, error="cancelled (SIGINT) before it started")
    else:
        store.set_run_status(run_id, RunStatus.FAILED, error=f"could not start the run: {type(exc).__name__}: {exc}")


def declared_overlap(target: str) -> str:
    """The overlap policy the flow at ``target`` declares with its schedule or trigger (the
    first one), ``skip`` when it declares none: what ``rayline run`` uses."""
    from rayline.triggers.catalog import declared_triggers

    declared = declared_triggers(target)
    return declared[0].trigger.overlap if declared else "skip"


def run_in_slot(
    eng: Any,
    graph: Graph,
    params: Mapping[str, Any],
    *,
    overlap: str,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    run_key: str | None = None,
    trigger: Mapping[str, Any] | None = None,
    on_event: Any = None,
    executor: Any = None,
    address: str | None = None,
    poll_interval: float = 1.0,
) -> str:
    """Run ``graph`` here through its flow's slot under ``overlap`` and wait; return the run id.

    The run is reserved before the executor (Ray) starts, so finding the flow busy costs little:

    - ``skip``: busy -> a SKIPPED record at once (its ``error`` names the run holding the slot,
      its trigger has ``held_by``); nothing runs, and ``run_key`` stays free for later.
    - ``queue``: busy -> the run waits in the flow's queue (one waiting run at most, else it is
      skipped); as the slot frees, this process starts the queued runs ahead of it, then its own.
      If another process (``rayline scheduler``) starts it meanwhile, this waits for its end.
    - ``allow``: it runs regardless.
    - a run with ``run_key`` exists: that run's id; nothing runs.

    The slot is freed by the run ending in any state (SUCCEEDED, FAILED, CANCELLED on Ctrl-C,
    INTERRUPTED when the driver fails). A run reserved here that could not start is marked
    FAILED (CANCELLED on Ctrl-C); a killed process's slot passes on once its lease is stale.
    ``executor`` and ``address`` start other processes' queued runs that this call must start.

    Raises:
        DefinitionError: the flow does not compile with these params (before any reservation).
    """
    from rayline.engine.compiler import compile_plan

    slots = FlowSlots(eng.runs, eng.settings.lease_ttl)
    plan = compile_plan(graph, params, cluster=None, overrides=overrides,
                        persist_all=eng.settings.persist == "all")  # fmt: skip
    new = NewRun(flow_name=graph.name, source=graph.source, params=plan.jsonable_params(),
                 plan_hash=plan.plan_hash, plan_json=plan.to_json(), node_ids=tuple(n.id for n in plan.nodes),
                 run_key=run_key, trigger=dict(trigger or {}))  # fmt: skip
    got = slots.reserve(new, overlap=overlap, skip_takes_key=False)
    others = InProcessLauncher(eng.settings, executor, address)
    run_id, mine = got.run_id or "", got.action == "start"
    try:
        if got.promoted:  # older queued work that this reservation moved into the free slot
            log.info("starting queued run %s of flow '%s' first", got.promoted, graph.name)
            others.start(got.promoted)
        if got.action == "queued":
            mine = _wait_in_queue(slots, run_id, graph.name, others, poll_interval)
        if mine:
            with _KeepReserved(slots, run_id, eng.settings.heartbeat_interval):
                ex = eng.executor()
                plan = eng.compile(graph, params, ex, overrides)
            eng.runner(ex, on_event, slot="start").resume(plan, run_id)  # it ends the run
    except BaseException as exc:
        if got.action in ("start", "queued"):
            _unreserve(eng.runs, run_id, exc)  # only if it is still PENDING
        raise
    if got.action == "skipped":
        log.warning("run %s of flow '%s' skipped: %s", run_id, graph.name, got.reason)
    elif got.action == "queued" and not mine:
        _wait_until_ended(eng.runs, run_id, eng.settings.lease_ttl, poll_interval)
    return run_id


def _wait_in_queue(slots: FlowSlots, run_id: str, flow: str, others: InProcessLauncher,
                   poll_interval: float) -> bool:  # fmt: skip
    """Wait for the queued ``run_id``'s turn: True when this process now holds the slot for it
    (and must start it), False when another process started it (or it ended)."""
    log.info("run %s of flow '%s' is queued; waiting for the flow's slot", run_id, flow)
    while slots.store.get_run(run_id).status == RunStatus.PENDING:
        nxt = slots.claim_next(flow)
        if nxt == run_id:
            return True
        if nxt is None:
            time.sleep(poll_interval)  # the slot is busy (maybe with ours, claimed elsewhere)
            continue
        others.start(nxt)  # an older queued run: ours waits behind it
    return False


def _wait_until_ended(store: Any, run_id: str, lease_ttl: float, poll_interval: float) -> None:
    """Wait for a run that another process runs (an INTERRUPTED one if that process died)."""
    while True:
        store.mark_interrupted_if_stale(run_id, lease_ttl)
        if store.get_run(run_id).status.terminal:
            return
        time.sleep(poll_interval)


class InProcessLauncher:
    """Starts each run in this process and waits for it (``schedule tick``, ``trigger``)."""

    def __init__(self, settings: Settings, executor: Any = None, address: str | None = None) -> None:
        self.settings, self.executor, self.address = settings, executor, address
        self.finished: list[tuple[str, str]] = []  # (run_id, final status)

    def start(self, run_id: str) -> None:
        t0 = time.monotonic()
        try:
            run = start_run(run_id, settings=self.settings, executor=self.executor, address=self.address)
        except Exception as exc:
            log.error("run %s did not start: %s", run_id, exc)
            self.finished.append((run_id, "FAILED"))
            return
        status = run.status.value
        self.finished.append((run_id, status))
        tail = f": {run.error.strip().splitlines()[0]}" if run.error else ""
        log.info("run %s (%s) %s in %.1f s%s", run_id, run.flow_name, status, time.monotonic() - t0, tail)

    def busy(self) -> bool:
        return False

    def reap(self) -> None:
        pass

    def shutdown(self, timeout: float) -> None:
        pass


class ProcessLauncher:
    """Starts each run in a child process (``rayline scheduler``) and keeps track of them."""

    def __init__(self, settings: Settings, local: bool = False, address: str | None = None) -> None:
        self.settings, self.local, self.address = settings, local, address
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def command(self, run_id: str) -> list[str]:
        cmd = [sys.executable, "-m", "rayline.triggers.launch", run_id]
        if self.local:
            cmd.append("--local")
        if self.address:
            cmd += ["--address", self.address]
        return cmd

    def start(self, run_id: str) -> None:
        env = dict(os.environ)
        s = self.settings
        env.update(RAYLINE_HOME=str(s.resolved_home), RAYLINE_LEASE_TTL=str(s.lease_ttl),
                   RAYLINE_HEARTBEAT_INTERVAL=str(s.heartbeat_interval))  # fmt: skip
        if s.db_url:
            env["RAYLINE_DB_URL"] = s.db_url
        # A session of its own: a Ctrl-C on the scheduler's terminal reaches the scheduler,
        # which then stops each run cleanly (SIGINT -> CANCELLED), once.
        self.children[run_id] = subprocess.Popen(self.command(run_id), env=env, stdin=subprocess.DEVNULL,
                                                 start_new_session=True)  # fmt: skip
        log.info("run %s started in pid %d", run_id, self.children[run_id].pid)

    def busy(self) -> bool:
        return bool(self.children)

    def reap(self) -> None:
        for run_id, child in list(self.children.items()):
            code = child.poll()
            if code is not None:
                del self.children[run_id]
                log.info("run %s finished (pid %d exited %d)", run_id, child.pid, code)

    def shutdown(self, timeout: float) -> None:
        """Ask every running child to stop (SIGINT: the run is recorded CANCELLED and can be
        resumed), wait up to ``timeout`` s, then kill what is left."""
        import signal

        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for run_id, child in self.children.items():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("run %s (pid %d) did not stop within %g s; killing it", run_id, child.pid, timeout)
                child.kill()
                child.wait()
        self.children.clear()


def plain_log_lines() -> None:
    """rayline's log lines to stderr as ``2026-01-02T03:00:00Z INFO name: message``."""
    handler = logging.StreamHandler(sys.stderr)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
    fmt.converter = time.gmtime
    handler.setFormatter(fmt)
    logger = logging.getLogger("rayline")
    logger.handlers[:] = [handler]
    logger.setLevel(os.environ.get("RAYLINE_LOG_LEVEL", "INFO").upper())
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    """``python -m rayline.triggers.launch RUN_ID [--local] [--address A]``: start one reserved
    run (the scheduler's child process). Exit 0 if it succeeded, 130 if cancelled, else 1."""
    parser = argparse.ArgumentParser(prog="python -m rayline.triggers.launch")
    parser.add_argument("run_id")
    parser.add_argument("--local", action="store_true")
    parser.add_argument("--address")
    args = parser.parse_args(argv)
    plain_log_lines()
    launcher = InProcessLauncher(Settings(), "local" if args.local else None, args.address)
    try:
        launcher.start(args.run_id)
    except KeyboardInterrupt:
        return 130
    status = launcher.finished[-1][1] if launcher.finished else "FAILED"
    return {"SUCCEEDED": 0, "SUCCEEDED_WITH_WARNINGS": 0, "CANCELLED": 130}.get(status, 1)


if __name__ == "__main__":
    sys.exit(main())
