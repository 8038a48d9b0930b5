"""Admission by queue, priority and quota: which ready tasks of a run may go to the cluster now.

Every driver with queues configured keeps its ready tasks in ``admission_reservations``
(``store/reservations.py``) and, once per loop turn, asks ``AdmissionBook.turn`` which of them
to start, in one write transaction (so drivers on any host take turns, serialised by the
database). The decision (``decide``) walks every reservation in order:

- held ones first: they occupy the cluster and their queue's quota;
- then waiting ones by priority (highest first), the run's arrival, plan order. One whose queue
  is at its quota (CPUs, GPUs, memory, concurrent runs) waits and blocks no one else; one that
  fits the free cluster is admitted; one that does not fit keeps its demand reserved, so work
  after it (lower priority, or later) cannot take what it waits for.

A driver admits only its own tasks, but counts everyone's, so a higher-priority run of another
driver goes first. A dead driver's reservations go with its run's lease.

When this run's first waiting task does not fit and nothing waits ahead of it, held work of
lower priority in preemptible queues may be asked to give its resources back
(``preemption.choose_victims``); a driver learns in ``Decision.preempt`` which of its own
running tasks were asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rayline.launch.preemption import choose_victims
from rayline.launch.queue_config import QueueSpec
from rayline.store import reservations as rs
from rayline.store.reservations import Reservation

_KEYS = ("cpus", "gpus", "memory_bytes")


@dataclass(frozen=True, slots=True)
class Decision:
    """Which of this run's waiting tasks start now; else what the first waits behind."""

    admit: tuple[str, ...] = ()
    behind: str | None = None  # the run it waits behind (or the queue, "queue <name> at quota")
    position: int | None = None  # 1 = next
    #: this run's first waiting task, when it is next but the cluster is full (may preempt)
    wants: Reservation | None = None
    #: this run's held tasks asked to give their resources back
    preempt: tuple[str, ...] = ()


def cluster_capacity(nodes: Sequence[dict[str, float]] | None) -> dict[str, float] | None:
    """The cluster's totals (``cpus``, ``gpus``, ``memory_bytes``) from ``cluster_nodes()``."""
    if nodes is None:
        return None
    return {"cpus": sum(n.get("CPU", 0.0) for n in nodes), "gpus": sum(n.get("GPU", 0.0) for n in nodes),
            "memory_bytes": sum(n.get("memory", 0.0) for n in nodes)}  # fmt: skip


def decide(rows: Sequence[Reservation], capacity: dict[str, float] | None,
           queue_of: Callable[[str], QueueSpec], me: str) -> Decision:  # fmt: skip
    """What run ``me`` may start now, given every reservation (``reservations_in_order``)."""
    free = dict(capacity) if capacity is not None else None
    used: dict[str, dict[str, float]] = {}
    runs_in: dict[str, set[str]] = {}
    admit: list[str] = []
    ahead = 0
    behind: str | None = None
    position: int | None = None

    def take(r: Reservation) -> None:
        q = used.setdefault(r.queue, dict.fromkeys(_KEYS, 0.0))
        for k in _KEYS:
            q[k] += getattr(r, k)
            if free is not None:
                free[k] -= getattr(r, k)
        runs_in.setdefault(r.queue, set()).add(r.run_id)

    last_other: str | None = None  # the run whose work was last counted ahead of this one's
    wants: Reservation | None = None
    preempt = tuple(r.node_id for r in rows if r.run_id == me and r.preempt)
    for r in rows:
        if r.held:
            take(r)
        else:
            spec = queue_of(r.queue)
            if not _within_quota(r, spec, used.get(r.queue), runs_in.get(r.queue, set())):
                if r.run_id == me and position is None:
                    position, behind = ahead + 1, last_other or f"queue {r.queue} at its quota"
                ahead += 1
                continue
            fits = free is None or all(free[k] >= getattr(r, k) for k in _KEYS if getattr(r, k))
            take(r)  # admitted, or (if it does not fit) its demand kept for it
            if not fits:
                if r.run_id == me and position is None:
                    position, behind = ahead + 1, last_other or "the cluster being full"
                    wants = r if ahead == 0 else None
                ahead += 1
            elif r.run_id == me:
                admit.append(r.node_id)
        if r.run_id != me:
            last_other = r.run_id
    return Decision(tuple(admit), behind, position, wants, preempt)


def _within_quota(r: Reservation, spec: QueueSpec, used: dict[str, float] | None, runs: set[str]) -> bool:
    used = used or dict.fromkeys(_KEYS, 0.0)
    limits = {"cpus": spec.quota.cpus, "gpus": spec.quota.gpus, "memory_bytes": spec.quota.memory}
    for k, limit in limits.items():
        if limit is not None and used[k] + getattr(r, k) > limit + 1e-9:
            return False
    cap = spec.max_concurrent_runs
    return cap is None or r.run_id in runs or len(runs) < cap


@dataclass
class AdmissionBook:
    """One run's side of admission: the tasks it added and the turns it takes.

    ``turn`` runs one write transaction: sweep stale reservations (at most four times a lease),
    add this run's newly ready tasks and drop its finished ones, decide, mark the admitted held.
    """

    store: Any  # RunStore
    run_id: str
    queue: QueueSpec
    priority: int
    lease_ttl: float
    queue_of: Callable[[str], QueueSpec]
    capacity: dict[str, float] | None
    arrival: float = field(default_factory=time.time)
    labelled: bool = False
    swept_at: float = 0.0  # the last sweep of dead runs' reservations (a query over every run)

    def turn(self, ready: Sequence[tuple[str, int, tuple[float, float, int]]], done: Sequence[str],
             requeue: Sequence[str] = ()) -> Decision:  # fmt: skip
        """``ready``: (node id, plan order, demand) of tasks that became ready since the last
        turn; ``done``: node ids that finished (or were cancelled) since; ``requeue``: node ids
        that were preempted and wait again."""
        add = [{"node_id": n, "seq": seq, "queue": self.queue.name, "priority": self.priority,
                "arrival": self.arrival, "cpus": d[0], "gpus": d[1], "memory_bytes": d[2] or 0}
               for n, seq, d in ready]  # fmt: skip
        with self.store.transaction() as conn:
            if not self.labelled:
                rs.label_run(conn, self.run_id, self.queue.name, self.priority)
                self.labelled = True
            now = time.time()
            if now - self.swept_at >= self.lease_ttl / 4:  # a dead driver's rows go within 1.25 leases
                rs.sweep_stale(conn, now=now, lease_ttl=self.lease_ttl)
                self.swept_at = now
            rs.change_reservations(conn, self.run_id, add=add, drop=done)
            rs.requeue(conn, self.run_id, requeue)
            rows = rs.reservations_in_order(conn)
            decision = decide(rows, self.capacity, self.queue_of, self.run_id)
            rs.mark_held(conn, self.run_id, decision.admit)
            if decision.wants is not None and self.capacity is not None:
                victims = choose_victims(rows, self.capacity, self.queue_of, decision.wants)
                rs.request_preemption(conn, [(v.run_id, v.node_id) for v in victims])
        return decision

    def close(self) -> None:
        with self.store.transaction() as conn:
            rs.drop_run(conn, self.run_id)
