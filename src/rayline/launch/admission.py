"""Admission: every run enters here. Plan it once, reserve its place under the flow's overlap
policy, wait its turn in the flow's queue, start it, or resume it.

The one path (DESIGN.md principle 7): ``plan_run`` compiles the flow (no cluster needed) into a
``PlannedRun``, the plan and the ``NewRun`` that ``FlowSlots.reserve`` inserts. ``admit`` reserves
it and, as the slot allows, starts it here with that same plan (``start_reserved``), so a run's
flow is loaded once and its plan compiled once; the cluster's resource check runs on the plan
once the executor has started (``Session.check_cluster``). Runs of other callers that this call
must start (queued runs the slot passes to) go to the caller's launcher (``launchers.py``).

The overlap policy is decided in ``choose_overlap``: the caller's (``--overlap``), else the
flow's declared schedule's, else ``skip``; ``None`` (``rayline.run`` without ``overlap=``) runs
without a slot (``run_unslotted``).

Example::

    with Session(settings, executor="local") as session:
        planned = plan_run(session, graph, {"n": 3})
        done = admit(session, planned, overlap="skip", launcher=InProcessLauncher(settings, "local"))
        done.run_id, done.reservation.action    # ("1a2b3c4d5e6f", "start")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rayline.engine.compiler import Plan
from rayline.engine.heartbeat import BeatThread
from rayline.errors import LeaseLostError, UsageError
from rayline.launch.driver_signals import cancel_on_signals
from rayline.launch.flow_files import load_flow
from rayline.launch.session import Session
from rayline.sdk.graph import Graph
from rayline.store.slots import OVERLAPS, FlowSlots, NewRun, Reservation
from rayline.store.states import RunStatus

log = logging.getLogger("rayline.launch")

__all__ = ["Admitted", "PlannedRun", "admit", "choose_overlap", "drive", "plan_run", "reserve", "resume_run",
           "run_unslotted", "start_reserved", "wait_for_turn"]  # fmt: skip


@dataclass(frozen=True)
class PlannedRun:
    """A run ready to reserve: its compiled ``plan`` and the ``new`` record to insert."""

    plan: Plan
    new: NewRun


@dataclass(frozen=True)
class Admitted:
    """What ``admit`` did: the reservation, and the run this call asked for (``run_id``: the
    started, queued, skipped or existing run; None when a skip recorded nothing)."""

    reservation: Reservation
    run_id: str | None


def choose_overlap(requested: str | None, declared: str) -> str:
    """The overlap policy of a run: ``requested`` (``--overlap``), else the flow's ``declared``
    one (its schedule's or trigger's), else ``skip``.

    Raises:
        UsageError: not one of skip, queue, allow.
    """
    chosen = (requested or declared or "skip").lower()
    if chosen not in OVERLAPS:
        raise UsageError(f"overlap={chosen!r} is not a policy; use one of {', '.join(OVERLAPS)}")
    return chosen


def plan_run(
    session: Session,
    graph: Graph,
    params: Mapping[str, Any],
    *,
    offer: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    run_key: str | None = None,
    trigger: Mapping[str, Any] | None = None,
    sort_key: float | None = None,
) -> PlannedRun:
    """Compile ``graph`` once into the run to reserve.

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
    plan = session.compile(graph, merged, overrides)
    new = NewRun(flow_name=graph.name, source=graph.source, params=plan.jsonable_params(),
                 plan_hash=plan.plan_hash, plan_json=plan.to_json(), node_ids=tuple(n.id for n in plan.nodes),
                 run_key=run_key, trigger=dict(trigger or {}), sort_key=sort_key)  # fmt: skip
    return PlannedRun(plan, new)


def run_unslotted(session: Session, planned: PlannedRun, *, on_event: Any = None) -> str:
    """Run a planned run here without a flow slot (``rayline.run`` without ``overlap``); return
    its id."""
    with cancel_on_signals() as signals:
        ex = session.executor()
        signals.arm()  # again: ray.init sets a SIGTERM handler of its own
        session.check_cluster(planned.plan, ex)
        new = planned.new
        return drive(session, planned.plan, ex, on_event=on_event, run_key=new.run_key,
                     trigger=new.trigger or None)  # fmt: skip


def drive(
    session: Session,
    plan: Plan,
    executor: Any,
    *,
    on_event: Any = None,
    resume_id: str | None = None,
    slot: str | None = None,
    run_key: str | None = None,
    trigger: Mapping[str, Any] | None = None,
) -> str:
    """Run ``plan`` to its end with the session's ``Runner`` (a new run, or ``resume_id``'s),
    then announce the end (the flow's hooks, the webhook: ``notify.announce_end``). Every way
    of running a flow comes through here, so hooks run once per run end, after the run's final
    state is committed. Returns the run id.
    """
    from rayline.launch.notify import announce_end
    from rayline.launch.queued_executor import queue_gate

    seen: dict[str, str] = {"run_id": resume_id or ""}

    def events(kind: str, data: dict[str, Any]) -> None:
        if kind == "run_started":
            seen["run_id"] = data["run_id"]
        if on_event is not None:
            on_event(kind, data)

    executor = queue_gate(session, plan, executor, events)  # itself when no queues are configured
    runner = session.runner(executor, events, slot=slot)
    try:
        if resume_id is None:
            outcome = runner.run(plan, run_key=run_key, trigger=dict(trigger) if trigger else None)
        else:
            outcome = runner.resume(plan, resume_id)
    except LeaseLostError:
        raise  # another process drives the run now
    except BaseException:
        if seen["run_id"]:
            announce_end(session, seen["run_id"], plan.graph)  # the driver failed: INTERRUPTED
        raise
    if outcome.created:  # not a run_key that already existed, nor a run that had ended
        announce_end(session, outcome.run_id, plan.graph)
    return outcome.run_id


def admit(
    session: Session,
    planned: PlannedRun,
    *,
    overlap: str,
    launcher: Any,
    skip_takes_key: bool = True,
    wait: bool = True,
    raise_own: bool = True,
    on_event: Any = None,
    poll_interval: float = 1.0,
) -> Admitted:
    """Reserve ``planned`` under ``overlap`` and start what this call must start.

    - ``start``: the run starts here (with ``planned.plan``) and this waits for its end.
    - ``queued``: the run waits in the flow's queue (one waiting run at most, else it is
      skipped); as the slot frees, ``launcher`` starts the queued runs ahead of it, then this
      starts its own. If another process started it meanwhile, this waits for its end.
    - ``skipped``: nothing runs (the record's ``error`` names the run holding the slot).
    - ``exists``: a run with ``run_key`` exists; nothing runs.

    ``wait=False`` hands the runs to start to ``launcher`` (a ``ProcessLauncher``) and returns.
    ``raise_own``: an own run that cannot start raises (else it is logged; it ends FAILED).
    A run reserved here that could not start is marked FAILED (CANCELLED on Ctrl-C), which
    frees the flow's slot; ``skip_takes_key=False`` leaves ``run_key`` free after a skip.
    """
    slots = FlowSlots(session.runs, session.settings.lease_ttl)
    got = reserve(slots, planned, overlap=overlap, skip_takes_key=skip_takes_key)
    flow = planned.new.flow_name
    log.debug("run of flow '%s': %s%s", flow, got.action, f" run {got.run_id}" if got.run_id else "")
    own = got.run_id if got.action in ("start", "queued") else None
    mine = got.action == "start"
    try:
        if not wait:
            for run_id in got.to_start:
                launcher.start(run_id)
            return Admitted(got, got.run_id)
        if got.promoted:  # older queued work that this reservation moved into the free slot
            log.info("starting queued run %s of flow '%s' first", got.promoted, flow)
            launcher.start(got.promoted)
        if got.action == "queued" and own:
            mine = wait_for_turn(slots, own, flow, launcher, poll_interval)
        if mine and own:
            launcher.start(own, plan=planned.plan, on_event=on_event, raise_errors=raise_own)
    except BaseException as exc:
        if own:
            unreserve(session.runs, own, exc)  # only if it is still PENDING
        raise
    if got.action == "skipped":
        log.warning("run %s of flow '%s' skipped: %s", got.run_id, flow, got.reason)
    elif got.action == "queued" and not mine and own:
        wait_until_ended(session.runs, own, session.settings.lease_ttl, poll_interval)
    return Admitted(got, got.run_id)


def reserve(slots: FlowSlots, planned: PlannedRun, *, overlap: str, **options: Any) -> Reservation:
    """Reserve ``planned`` in its flow's slot under ``overlap`` (``FlowSlots.reserve``: one
    transaction decides start, queued, skipped or exists). ``options``: ``backlog``,
    ``record_skip``, ``skip_takes_key``, ``queue_limit``, as a trigger's fire asks."""
    return slots.reserve(planned.new, overlap=choose_overlap(overlap, "skip"), **options)


def wait_for_turn(slots: FlowSlots, run_id: str, flow: str, launcher: Any, poll_interval: float) -> bool:
    """Wait for the queued ``run_id``'s turn, starting (with ``launcher``) the queued runs ahead
    of it as the slot frees: True when this process now holds the slot for ``run_id`` (and must
    start it), False when another process started it (or it ended)."""
    log.info("run %s of flow '%s' is queued; waiting for the flow's slot", run_id, flow)
    while slots.store.get_run(run_id).status == RunStatus.PENDING:
        nxt = slots.claim_next(flow)
        if nxt == run_id:
            return True
        if nxt is None:
            time.sleep(poll_interval)  # the slot is busy (maybe with ours, claimed elsewhere)
            continue
        launcher.start(nxt)  # an older queued run: ours waits behind it
    return False


def wait_until_ended(store: Any, run_id: str, lease_ttl: float, poll_interval: float) -> None:
    """Wait for a run that another process runs (an INTERRUPTED one if that process died)."""
    while True:
        store.mark_interrupted_if_stale(run_id, lease_ttl)
        if store.get_run(run_id).status.terminal:
            return
        time.sleep(poll_interval)


def start_reserved(session: Session, run_id: str, *, plan: Plan | None = None, on_event: Any = None) -> None:
    """Start the reserved PENDING run ``run_id`` here and wait for it. ``plan``: the run's
    compiled plan when this process planned it; else its flow is loaded from the recorded source
    and compiled (once).

    If the run cannot even start (its flow file no longer loads or compiles, the cluster cannot
    satisfy it), it is marked FAILED with the reason, which frees the flow's slot.

    Raises:
        StoreError: the run does not hold its flow's slot (it stays queued), or is not PENDING.
    """
    slots = FlowSlots(session.runs, session.settings.lease_ttl)
    with cancel_on_signals() as signals:
        try:
            with KeepReserved(slots, run_id, session.settings.heartbeat_interval):
                if plan is None:
                    record = session.runs.get_run(run_id)
                    plan = session.compile(load_flow(record.source or ""), record.params)
                ex = session.executor()
                signals.arm()  # again: ray.init sets a SIGTERM handler of its own
                session.check_cluster(plan, ex)
        except BaseException as exc:
            unreserve(session.runs, run_id, exc)
            raise
        drive(session, plan, ex, on_event=on_event, resume_id=run_id, slot="start")  # it ends the run


def resume_run(session: Session, run_id: str, *, on_event: Any = None) -> tuple[str, Graph]:
    """Resume ``run_id`` (or a unique prefix) here: load its flow once from the recorded source,
    compile once with the recorded params, take the run (and its flow's slot) back, run what did
    not succeed. Returns the run id and the graph.

    Raises:
        UsageError: the run records no source.
        FlowBusyError: another run of the flow holds its slot; nothing was changed.
        RunBusyError: another process drives the run now; nothing was changed.
    """
    record = session.find_run(run_id)
    if not record.source:
        raise UsageError(f"run {record.run_id} has no recorded source to load the flow from")
    graph = load_flow(record.source)
    plan = session.compile(graph, record.params)
    with cancel_on_signals() as signals:
        ex = session.executor()
        signals.arm()  # again: ray.init sets a SIGTERM handler of its own
        session.check_cluster(plan, ex)
        drive(session, plan, ex, on_event=on_event, resume_id=record.run_id, slot="resume")
    return record.run_id, graph


def unreserve(store: Any, run_id: str, exc: BaseException) -> None:
    """End a reserved run that never started (FAILED, or CANCELLED on Ctrl-C): that frees the
    flow's slot, or drops the run from the flow's queue."""
    if store.get_run(run_id).status != RunStatus.PENDING:
        return
    if isinstance(exc, KeyboardInterrupt):
        signame = exc.args[0] if exc.args else "SIGINT"
        store.set_run_status(run_id, RunStatus.CANCELLED, error=f"cancelled ({signame}) before it started")
    else:
        store.set_run_status(run_id, RunStatus.FAILED, error=f"could not start the run: {type(exc).__name__}: {exc}")


class KeepReserved(BeatThread):
    """Heartbeats a reserved PENDING run while its starter imports the flow and starts Ray, so
    a slow start is not mistaken for a dead starter."""

    def __init__(self, slots: FlowSlots, run_id: str, interval: float) -> None:
        self._slots, self._run_id, self._interval = slots, run_id, interval
        super().__init__(f"rayline-reserved-{run_id}")

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._slots.touch(self._run_id)
            except Exception as exc:  # a transient store error: the next beat may work
                log.warning("could not refresh reserved run %s: %s", self._run_id, exc)
