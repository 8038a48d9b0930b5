"""Admission's table, inside the caller's transaction: which tasks of which runs wait for, or
hold, their share of the cluster.

One row per task that asked admission (``admission_reservations``, schema version 3): its run,
queue, priority, the run's arrival time, the task's plan order, its demand (CPUs, GPUs, memory
bytes) and whether it was admitted (``held``: 0 waiting, 1 held, 2 held and asked to give its
resources back to higher-priority work, ``launch/preemption.py``). A reservation lives as long as its run's lease
(``leases.py``): rows of a run that is no longer RUNNING, or whose heartbeat is older than
``lease_ttl``, are deleted by the next driver that looks, so a dead driver's reservations free
themselves. The decisions are made in ``rayline.launch.admission_queue``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from rayline.store.schema import admission_reservations as res
from rayline.store.schema import runs
from rayline.store.states import RunStatus

#: ``held`` of a reservation asked to give its resources back
PREEMPT = 2


@dataclass(frozen=True, slots=True)
class Reservation:
    """One task's place in admission."""

    run_id: str
    node_id: str
    queue: str
    priority: int
    arrival: float
    seq: int
    cpus: float
    gpus: float
    memory_bytes: int
    held: bool
    preempt: bool = False  # held, and asked to give its resources back (preemption)


def sweep_stale(conn: Connection, *, now: float, lease_ttl: float) -> int:
    """Delete the reservations of runs that ended or whose driver's lease expired."""
    live = select(runs.c.run_id).where(runs.c.status == str(RunStatus.RUNNING))
    live = live.where(runs.c.heartbeat_at >= now - lease_ttl)
    return conn.execute(delete(res).where(res.c.run_id.not_in(live))).rowcount or 0


def change_reservations(conn: Connection, run_id: str, *, add: Sequence[dict[str, Any]] = (),
                        drop: Sequence[str] = ()) -> None:
    """Insert ``add`` (rows of the table's columns, ``held`` 0) and delete ``drop`` (node ids)
    of ``run_id``."""  # fmt: skip
    if drop:
        conn.execute(delete(res).where(res.c.run_id == run_id, res.c.node_id.in_(list(drop))))
    if add:
        conn.execute(insert(res), [{**row, "run_id": run_id, "held": 0} for row in add])


def reservations_in_order(conn: Connection) -> list[Reservation]:
    """Every reservation: held first, then by priority (highest first), arrival and plan order."""
    stmt = select(res).order_by(res.c.held.desc(), res.c.priority.desc(), res.c.arrival, res.c.run_id,
                                res.c.seq)  # fmt: skip
    return [Reservation(**{**row._mapping, "held": bool(row.held), "preempt": row.held == PREEMPT})
            for row in conn.execute(stmt)]  # fmt: skip


def mark_held(conn: Connection, run_id: str, node_ids: Sequence[str]) -> None:
    """Record ``node_ids`` of ``run_id`` admitted."""
    if node_ids:
        stmt = update(res).where(res.c.run_id == run_id, res.c.node_id.in_(list(node_ids)))
        conn.execute(stmt.values(held=1))


def request_preemption(conn: Connection, victims: Sequence[tuple[str, str]]) -> None:
    """Ask the drivers of these held (run id, node id) reservations to give them back."""
    for run_id, node_id in victims:
        stmt = update(res).where(res.c.run_id == run_id, res.c.node_id == node_id, res.c.held == 1)
        conn.execute(stmt.values(held=PREEMPT))


def requeue(conn: Connection, run_id: str, node_ids: Sequence[str]) -> None:
    """``node_ids`` of ``run_id`` gave their resources back: waiting again, in their old place."""
    if node_ids:
        stmt = update(res).where(res.c.run_id == run_id, res.c.node_id.in_(list(node_ids)))
        conn.execute(stmt.values(held=0))


def label_run(conn: Connection, run_id: str, queue: str, priority: int) -> None:
    """Record the queue and priority ``run_id`` is admitted under (``rayline usage --by queue``)."""
    conn.execute(update(runs).where(runs.c.run_id == run_id).values(queue=queue, priority=priority))


def drop_run(conn: Connection, run_id: str) -> None:
    """Delete every reservation of ``run_id`` (its driver's loop ended)."""
    conn.execute(delete(res).where(res.c.run_id == run_id))
