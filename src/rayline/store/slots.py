"""Flow slots: under the ``skip`` and ``queue`` overlap policies a flow has one execution slot,
and only the run holding it may start.

A trigger does not call ``create_run``; it *reserves* a run with ``FlowSlots.reserve``, which in
one write transaction (``BEGIN IMMEDIATE`` on SQLite, a row lock elsewhere) checks the run key,
looks at the flow's slot, and inserts the new run as PENDING (its to start), PENDING in
``run_queue`` (it waits), or SKIPPED (with the reason). The run then starts through
``SlotGuardedStore``, whose ``take_over`` moves it to RUNNING only if it still holds the slot. So
the guarantee "never two RUNNING runs of one flow" comes from the database: the slot is one row
per flow (a primary key), and it passes to another run only when its holder has ended, or its
lease went stale (the holder is then marked INTERRUPTED in the same transaction).

A resume (``FlowSlots.resume``) of a run that was started under the slot takes the slot back
in the same transaction as the take-over, only while it is free or still the run's own; else it
raises ``FlowBusyError`` and changes nothing.

The slot is released by the holder's run ending, so a crash cannot lock it for longer than the
lease (run store's clock). A reserved run whose starter died goes back to the head of the queue
(a trigger's) or becomes INTERRUPTED (``rayline run``'s: only a resume runs it).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from uuid import uuid4

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from rayline.errors import FlowBusyError, StoreError
from rayline.store import leases
from rayline.store.run_records import RunRecord, run_from_row
from rayline.store.runs import RunStore
from rayline.store.schema import flow_slots, insert_run_rows, run_queue, runs
from rayline.store.sql import to_json
from rayline.store.states import RunStatus

Overlap = Literal["skip", "queue", "allow"]
Action = Literal["start", "queued", "skipped", "exists"]
OVERLAPS: tuple[str, ...] = ("skip", "queue", "allow")

__all__ = ["OVERLAPS", "FlowSlots", "NewRun", "Reservation", "SlotGuardedStore"]


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run a trigger asks for: what ``create_run`` takes, plus the key that orders the queue."""

    flow_name: str
    source: str | None
    params: dict[str, Any]
    plan_hash: str
    plan_json: str
    node_ids: Sequence[str]
    run_key: str | None = None
    trigger: dict[str, Any] = field(default_factory=dict)
    sort_key: float | None = None  # logical time (epoch s) for queue order; default: now


@dataclass(frozen=True, slots=True)
class Reservation:
    """What ``reserve`` did.

    ``action``: ``start`` (the caller owns ``run_id``, PENDING, and must start it), ``queued``
    (``run_id`` waits for the slot), ``skipped`` (``run_id`` is the SKIPPED record, whose
    trigger names the slot's holder as ``held_by``, or None when no record was asked for) or
    ``exists`` (a run with the key exists: ``run_id``). ``promoted``: a queued run that this call
    moved into the free slot; the caller owns it and must start it.
    """

    action: Action
    run_id: str | None
    reason: str = ""
    promoted: str | None = None

    @property
    def to_start(self) -> list[str]:
        """The runs this caller must start now, oldest first."""
        out = [self.promoted] if self.promoted else []
        if self.action == "start" and self.run_id:
            out.append(self.run_id)
        return out


class FlowSlots:
    """Reserve, queue and start runs so that a flow never has two RUNNING runs (see module).

    Args:
        store: the run store (its engine and clock are used).
        lease_ttl: seconds without a heartbeat after which a slot holder counts as dead.
    """

    def __init__(self, store: RunStore, lease_ttl: float = 30.0) -> None:
        self.store = store
        self.lease_ttl = lease_ttl
        self._pid, self._host = os.getpid(), socket.gethostname()

    # ---------------------------------------------------------------------------- writes
    def reserve(
        self,
        new: NewRun,
        *,
        overlap: str = "skip",
        queue_limit: int = 1,
        backlog: bool = False,
        record_skip: bool = True,
        skip_takes_key: bool = True,
    ) -> Reservation:
        """Insert ``new`` as a run to start, a queued run or a SKIPPED record, atomically.

        Args:
            overlap: ``skip`` (busy: record SKIPPED), ``queue`` (busy: queue while fewer than
                ``queue_limit`` wait, else skip) or ``allow`` (always start; no slot).
            backlog: queue behind a busy slot whatever ``overlap`` says (catch-up runs).
            record_skip: write a SKIPPED run for a skip; False writes nothing.
            skip_takes_key: the SKIPPED run gets ``new.run_key``, so the key is decided (a cron
                tick); False leaves the key free to run later (a data snapshot).
        """
        if overlap not in OVERLAPS:
            raise StoreError(f"unknown overlap policy {overlap!r}; use one of {', '.join(OVERLAPS)}")
        trigger = {**new.trigger, "overlap": overlap}
        for _ in range(3):
            try:
                with self.store.transaction() as conn:
                    return self._reserve(conn, new, trigger, overlap, queue_limit, backlog,
                                         record_skip, skip_takes_key)  # fmt: skip
            except IntegrityError:
                continue  # a run-id collision, or another backend's concurrent slot insert
        raise StoreError(f"could not reserve a run of flow '{new.flow_name}' in {self.store.url}")

    def claim_next(self, flow_name: str) -> str | None:
        """If the flow's slot is free and a run is queued, move the oldest into the slot and
        return its id (the caller must start it); else None."""
        with self.store.transaction() as conn:
            holder, live = self._holder(conn, flow_name)
            if live:
                return None
            nxt = self._pop(conn, flow_name)
            if nxt is not None:
                self._hold(conn, flow_name, nxt)
            return nxt

    def start(self, run_id: str, *, owner_pid: int, owner_host: str) -> int:
        """Move a reserved PENDING run to RUNNING if it holds its flow's slot (or was reserved
        with ``overlap=allow``); return its new lease generation. The check and the update are
        one transaction.

        Raises:
            StoreError: the run is not PENDING, is queued, or another run holds the slot.
        """
        with self.store.transaction() as conn:
            run = self._locked(conn, run_id)
            if run.status != RunStatus.PENDING:
                raise StoreError(f"run {run_id} is {run.status}, not PENDING: it was started or ended elsewhere")
            if (run.trigger or {}).get("overlap", "skip") != "allow":
                queued = conn.execute(select(run_queue.c.run_id).where(run_queue.c.run_id == run_id)).first()
                holder = self._slot_of(conn, run.flow_name)
                if queued is not None or holder != run_id:
                    raise StoreError(
                        f"run {run_id} of flow '{run.flow_name}' does not hold the flow's slot "
                        f"(held by {holder or 'nobody'}); it waits its turn"
                    )
            return leases.grant(conn, run, owner_pid=owner_pid, owner_host=owner_host, where=self.store._where)

    def resume(self, run_id: str, *, owner_pid: int, owner_host: str, lease_ttl: float) -> int:
        """Take over a run to resume it (``RunStore.take_over``), and if it was started under
        ``skip`` or ``queue``, take its flow's slot back in the same transaction: only while the
        slot is free or still its own. Runs started without a slot (``overlap=allow``, plain
        ``rayline.run``) resume as before. Returns the new lease generation.

        A reserved (PENDING) run whose starter died before it started is resumable too.

        Raises:
            FlowBusyError: another live run holds the flow's slot; nothing was changed.
            RunBusyError: the run is RUNNING under a live lease (another process drives it).
            StoreError: the run is a reserved run whose starter is alive (it starts when its
                turn comes).
        """
        with self.store.transaction() as conn:
            run = self._locked(conn, run_id)
            overlap = (run.trigger or {}).get("overlap")
            if overlap in ("skip", "queue"):
                if run.status == RunStatus.PENDING and not self._unstarted_and_abandoned(run):
                    raise StoreError(
                        f"run {run_id} of flow '{run.flow_name}' is reserved and has not started; "
                        f"it starts when it gets the flow's slot (`rayline cancel {run_id}` drops it)"
                    )
                # A reserved run whose starter died before it started is resumed like any other.
                conn.execute(delete(run_queue).where(run_queue.c.run_id == run_id))
                holder, live = self._holder(conn, run.flow_name)
                if live and holder != run_id:
                    state = conn.execute(select(runs.c.status).where(runs.c.run_id == holder)).scalar()
                    raise FlowBusyError(
                        f"cannot resume run {run_id}: flow '{run.flow_name}' is busy, run {holder} "
                        f"is {state} (overlap={overlap}); resume again when it has ended, or "
                        f"cancel it first (`rayline cancel {holder}`)",
                        held_by=holder,
                    )
                self._take_slot(conn, run.flow_name, run_id)
            return leases.take_over(conn, run_id, owner_pid=owner_pid, owner_host=owner_host,
                                    lease_ttl=lease_ttl, host=self._host, where=self.store._where)  # fmt: skip

    def touch(self, run_id: str) -> None:
        """Refresh the heartbeat of a reserved (PENDING) run while its starter gets ready."""
        with self.store.transaction() as conn:
            stmt = update(runs).where(runs.c.run_id == run_id, runs.c.status == str(RunStatus.PENDING))
            conn.execute(stmt.values(heartbeat_at=time.time()))

    # ----------------------------------------------------------------------------- reads
    def holder(self, flow_name: str) -> str | None:
        """The run holding the flow's slot (it may have ended since), or None."""
        with self.store.transaction(read=True) as conn:
            return self._slot_of(conn, flow_name)

    def queued(self, flow_name: str | None = None) -> list[str]:
        """Queued run ids (of one flow, or all), in the order they will start."""
        stmt = select(run_queue.c.run_id).order_by(run_queue.c.sort_key, run_queue.c.enqueued_at)
        if flow_name is not None:
            stmt = stmt.where(run_queue.c.flow_name == flow_name)
        with self.store.transaction(read=True) as conn:
            return [r[0] for r in conn.execute(stmt)]

    # --------------------------------------------------------------------------- internals
    def _reserve(
        self, conn: Connection, new: NewRun, trigger: dict[str, Any], overlap: str,
        queue_limit: int, backlog: bool, record_skip: bool, skip_takes_key: bool,
    ) -> Reservation:  # fmt: skip
        if new.run_key is not None:
            found = conn.execute(select(runs.c.run_id).where(runs.c.run_key == new.run_key)).scalar()
            if found is not None:
                return Reservation("exists", found, f"run {found} already has key {new.run_key}")
        run_id, now = uuid4().hex[:12], time.time()
        if overlap == "allow":
            self._insert(conn, new, run_id, now, trigger, RunStatus.PENDING)
            return Reservation("start", run_id)
        holder, live = self._holder(conn, new.flow_name)
        promoted = None
        if not live:
            promoted = self._pop(conn, new.flow_name)
            if promoted is None:
                self._insert(conn, new, run_id, now, trigger, RunStatus.PENDING)
                self._hold(conn, new.flow_name, run_id)
                return Reservation("start", run_id)
            self._hold(conn, new.flow_name, promoted)  # older work first; the new one waits
            holder = promoted
        waiting = conn.execute(
            select(func.count()).select_from(run_queue).where(run_queue.c.flow_name == new.flow_name)
        ).scalar_one()
        if backlog or (overlap == "queue" and waiting < queue_limit):
            self._insert(conn, new, run_id, now, trigger, RunStatus.PENDING)
            sort_key = new.sort_key if new.sort_key is not None else now
            conn.execute(insert(run_queue).values(
                run_id=run_id, flow_name=new.flow_name, sort_key=sort_key, enqueued_at=now))  # fmt: skip
            return Reservation("queued", run_id, f"waits for run {holder} to end", promoted)
        state = conn.execute(select(runs.c.status).where(runs.c.run_id == holder)).scalar()
        full = f", and {waiting} run(s) already queued" if overlap == "queue" else ""
        reason = (f"flow '{new.flow_name}' is busy: run {holder} is {state}{full} "
                  f"(overlap={overlap})")  # fmt: skip
        if not record_skip:
            return Reservation("skipped", None, reason, promoted)
        record = new if skip_takes_key else replace(new, run_key=None)
        skipped = {**trigger, "skipped": reason, "held_by": holder}
        self._insert(conn, record, run_id, now, skipped, RunStatus.SKIPPED, reason)
        return Reservation("skipped", run_id, reason, promoted)

    def _insert(
        self, conn: Connection, new: NewRun, run_id: str, now: float, trigger: dict[str, Any],
        status: RunStatus, error: str | None = None,
    ) -> None:  # fmt: skip
        insert_run_rows(
            conn, run_id=run_id, now=now, flow_name=new.flow_name, source=new.source,
            params_json=to_json(new.params, f"params of flow '{new.flow_name}'"),
            plan_hash=new.plan_hash, plan_json=new.plan_json,
            node_ids=list(new.node_ids) if status != RunStatus.SKIPPED else [],
            run_key=new.run_key, trigger_json=to_json(trigger, "the trigger"),
            owner_pid=self._pid, owner_host=self._host, status=status, error=error,
        )  # fmt: skip

    def _locked(self, conn: Connection, run_id: str) -> RunRecord:
        row = conn.execute(select(runs).where(runs.c.run_id == run_id).with_for_update()).first()
        if row is None:
            raise self.store._missing(run_id)
        return run_from_row(row)

    def _slot_of(self, conn: Connection, flow_name: str) -> str | None:
        stmt = select(flow_slots.c.run_id).where(flow_slots.c.flow_name == flow_name)
        return conn.execute(stmt.with_for_update()).scalar()

    def _take_slot(self, conn: Connection, flow_name: str, run_id: str) -> float:
        now = time.time()
        stmt = update(flow_slots).where(flow_slots.c.flow_name == flow_name)
        if conn.execute(stmt.values(run_id=run_id, updated_at=now)).rowcount == 0:
            conn.execute(insert(flow_slots).values(flow_name=flow_name, run_id=run_id, updated_at=now))
        return now

    def _hold(self, conn: Connection, flow_name: str, run_id: str) -> None:
        now = self._take_slot(conn, flow_name, run_id)
        owned = {"owner_pid": self._pid, "owner_host": self._host, "heartbeat_at": now}
        stmt = update(runs).where(runs.c.run_id == run_id, runs.c.status == str(RunStatus.PENDING))
        conn.execute(stmt.values(**owned))

    def _pop(self, conn: Connection, flow_name: str) -> str | None:
        """Take the oldest queued run that is still PENDING (a cancelled one is dropped)."""
        stmt = (
            select(run_queue.c.run_id, runs.c.status)
            .join(runs, runs.c.run_id == run_queue.c.run_id)
            .where(run_queue.c.flow_name == flow_name)
            .order_by(run_queue.c.sort_key, run_queue.c.enqueued_at)
        )
        for run_id, status in conn.execute(stmt).all():
            conn.execute(delete(run_queue).where(run_queue.c.run_id == run_id))
            if status != str(RunStatus.PENDING):
                continue
            run = self._locked(conn, run_id)
            if _started_by_hand(run) and self._unstarted_and_abandoned(run):
                self._abandon(conn, run)  # its `rayline run` died while it waited
                continue
            return run_id
        return None

    def _holder(self, conn: Connection, flow_name: str) -> tuple[str | None, bool]:
        """The slot's run and whether it is live; a dead holder is cleaned up here."""
        holder = self._slot_of(conn, flow_name)
        if holder is None:
            return None, False
        row = conn.execute(select(runs).where(runs.c.run_id == holder)).first()
        if row is None:
            return holder, False
        run = run_from_row(row)
        if run.status == RunStatus.RUNNING:
            if self.store.is_stale(run, self.lease_ttl):
                self._interrupt(conn, run)
                return holder, False
            return holder, True
        if run.status == RunStatus.PENDING:
            if not self._unstarted_and_abandoned(run):
                return holder, True
            if _started_by_hand(run):
                self._abandon(conn, run)  # never run by someone else: its owner resumes it
            else:
                # A trigger's run whose starter died before starting it: it goes back to the
                # head of the queue, and the scheduler starts it.
                conn.execute(insert(run_queue).values(
                    run_id=holder, flow_name=flow_name, sort_key=0.0, enqueued_at=time.time()))  # fmt: skip
            return holder, False
        return holder, False

    def _unstarted_and_abandoned(self, run: RunRecord) -> bool:
        if run.owner_host == self._host and run.owner_pid is not None and not leases.pid_alive(run.owner_pid):
            return True
        beat = run.heartbeat_at or run.created_at
        return time.time() - beat.timestamp() > self.lease_ttl

    def _abandon(self, conn: Connection, run: RunRecord) -> None:
        """Mark a reserved run whose starter died before it started INTERRUPTED (resumable)."""
        why = (f"its starter (pid {run.owner_pid} on {run.owner_host}) stopped before the run started; "
               f"`rayline resume {run.run_id}` runs it")  # fmt: skip
        values = {"status": str(RunStatus.INTERRUPTED), "ended_at": time.time(), "error": why}
        leases.fence(conn, run.run_id, run.generation, {**values, "generation": run.generation + 1},
                     where=self.store._where)  # fmt: skip

    def _interrupt(self, conn: Connection, run: RunRecord) -> None:
        leases.interrupt(conn, run, self.lease_ttl, where=self.store._where, found_by="the scheduler")


def _started_by_hand(run: RunRecord) -> bool:
    """A run reserved by ``rayline run`` / ``rayline.run`` (no trigger kind): only its own
    caller, or a resume, may run it."""
    return "kind" not in (run.trigger or {})


class SlotGuardedStore:
    """The run store as a ``Runner`` sees it when it starts a reserved run (``resuming=False``:
    ``take_over`` is ``FlowSlots.start``, PENDING -> RUNNING only for the slot's holder) or
    resumes one (``FlowSlots.resume``: the slot comes back with the run, or the resume is
    refused while another run holds it); everything else is the store itself.

    Example::

        Runner(SlotGuardedStore(store, slots), artifacts, executor).resume(plan, run_id)
    """

    def __init__(self, store: RunStore, slots: FlowSlots, *, resuming: bool = False) -> None:
        self._store = store
        self._slots = slots
        self._resuming = resuming

    def take_over(self, run_id: str, *, owner_pid: int, owner_host: str, lease_ttl: float) -> int:
        if self._resuming:
            return self._slots.resume(run_id, owner_pid=owner_pid, owner_host=owner_host, lease_ttl=lease_ttl)
        return self._slots.start(run_id, owner_pid=owner_pid, owner_host=owner_host)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
