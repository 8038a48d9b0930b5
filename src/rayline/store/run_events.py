"""A run's history of events besides its task states: today, outputs found lost.

A task's output is *lost* when its artifact fails verification (a flipped byte, a truncated copy,
a missing file). ``mark_output_lost`` records that as an event, and — unless a live driver owns
the run — makes the task and every task downstream of it PENDING again and the run INTERRUPTED,
so that ``rayline resume`` recomputes exactly them. ``rayline runs show`` lists the events.

The ``run_events`` table is declared and migrated with the run store's other tables
(``schema.py``, version 5).

Example::

    with store.transaction() as conn:
        mark_output_lost(conn, run_id, "train", digest, "checksum mismatch", lease_ttl=30,
                         host=socket.gethostname(), where=store.url, found_by="Run.output")
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from rayline.store import leases
from rayline.store.run_records import run_from_row
from rayline.store.schema import plans, run_events, runs, tasks, trigger_state
from rayline.store.states import RunStatus, TaskStatus

OUTPUT_LOST = "output_lost"
_DIGEST = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
LOST_ERROR_TYPE = "rayline.errors.ArtifactIntegrityError"


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One event in a run's history."""

    run_id: str
    at: datetime
    kind: str
    node_id: str | None
    digest: str | None
    message: str | None


def record_event(
    conn: Connection, run_id: str, kind: str, *, node_id: str | None = None,
    digest: str | None = None, message: str | None = None,
) -> None:  # fmt: skip
    """Append an event to the run's history (inside the caller's transaction)."""
    conn.execute(insert(run_events).values(run_id=run_id, at=time.time(), kind=kind,
                                           node_id=node_id, digest=digest, message=message))  # fmt: skip


def list_events(conn: Connection, run_id: str) -> list[RunEvent]:
    """The run's events, oldest first."""
    stmt = select(run_events).where(run_events.c.run_id == run_id).order_by(run_events.c.event_id)
    return [
        RunEvent(r.run_id, datetime.fromtimestamp(r.at, UTC), r.kind, r.node_id, r.digest, r.message)
        for r in conn.execute(stmt)
    ]


def _downstream(plan_json: str | None, node_id: str) -> set[str]:
    """Every node that depends on ``node_id`` in the stored plan (empty if unreadable)."""
    try:
        nodes = json.loads(plan_json or "{}")["nodes"]
        children: dict[str, list[str]] = {}
        for n in nodes:
            for u in n.get("inputs", ()):
                children.setdefault(u, []).append(n["id"])
    except (ValueError, KeyError, TypeError):
        return set()
    out, stack = set(), [node_id]
    while stack:
        for d in children.get(stack.pop(), ()):
            if d not in out:
                out.add(d)
                stack.append(d)
    return out


def mark_output_lost(
    conn: Connection, run_id: str, node_id: str, digest: str, reason: str, *,
    lease_ttl: float, host: str, where: str, found_by: str,
) -> bool:  # fmt: skip
    """Record that the output ``digest`` of ``node_id`` in ``run_id`` is lost.

    The event is always recorded. Unless a live driver owns the run (it recomputes what it
    needs itself), the task and its downstream tasks that had succeeded become PENDING, and a
    finished run becomes INTERRUPTED (its lease revoked), so ``rayline resume`` recomputes them.

    Returns:
        True if task states changed; False if only the event was recorded.
    """
    row = conn.execute(select(runs).where(runs.c.run_id == run_id).with_for_update()).first()
    if row is None:
        raise leases.missing_run(run_id, where)
    run = run_from_row(row)
    message = f"output of task '{node_id}' lost: {reason} (found by {found_by})"
    record_event(conn, run_id, OUTPUT_LOST, node_id=node_id, digest=digest, message=message)
    if run.status == RunStatus.RUNNING and not leases.is_stale(run, lease_ttl, host=host):
        return False
    plan = conn.execute(select(plans.c.plan_json).where(plans.c.plan_hash == run.plan_hash)).scalar()
    affected = {node_id} | _downstream(plan, node_id)
    ok = [str(TaskStatus.SUCCEEDED), str(TaskStatus.CACHED)]
    why = f"{message}; `rayline resume {run_id}` recomputes it"
    changed = conn.execute(
        update(tasks)
        .where(tasks.c.run_id == run_id, tasks.c.node_id.in_(sorted(affected)), tasks.c.status.in_(ok))
        .values(status=str(TaskStatus.PENDING), error_type=LOST_ERROR_TYPE, error_message=why)
    ).rowcount
    if not changed:
        return False
    revoked = {"status": str(RunStatus.INTERRUPTED), "error": why, "generation": run.generation + 1,
               "ended_at": time.time() if run.ended_at is None else run.ended_at.timestamp()}  # fmt: skip
    leases.fence(conn, run_id, run.generation, revoked, where=where)
    return True


def find_lost_outputs(runs: Any, artifacts: Any, run_id: str, tasks: Iterable[Any]) -> set[str]:
    """The succeeded ``tasks`` whose stored output fails verification in ``artifacts``; each
    loss is recorded in the run's history (``runs.record_event``). What resume must recompute."""
    lost: set[str] = set()
    for t in tasks:
        if t.status.ok and t.digest and not artifacts.verify(t.digest):
            lost.add(t.node_id)
            runs.record_event(run_id, OUTPUT_LOST, node_id=t.node_id, digest=t.digest,
                              message=f"output of task '{t.node_id}' lost: artifact {t.digest} is missing "
                                      "or fails its checksum; resume recomputes it and what depends on it")
    return lost


def tasks_with_digests(conn: Connection, digests: Iterable[str]) -> list[tuple[str, str, str]]:
    """``(run_id, node_id, digest)`` of every succeeded task whose output is one of ``digests``."""
    wanted = sorted(set(digests))
    out: list[tuple[str, str, str]] = []
    ok = [str(TaskStatus.SUCCEEDED), str(TaskStatus.CACHED)]
    for i in range(0, len(wanted), 500):
        stmt = select(tasks.c.run_id, tasks.c.node_id, tasks.c.digest).where(
            tasks.c.digest.in_(wanted[i : i + 500]), tasks.c.status.in_(ok)
        )
        out += [(r.run_id, r.node_id, r.digest) for r in conn.execute(stmt)]
    return out


def referenced_digests(conn: Connection) -> set[str]:
    """Every artifact digest a task of any run records (whatever the task's state), and every
    digest written in a run's trigger or a trigger's state (e.g. the drift report that fired)."""
    stmt = select(tasks.c.digest).where(tasks.c.digest.is_not(None)).distinct()
    found = {d for d in conn.execute(stmt).scalars() if d}
    texts = select(runs.c.trigger_json).where(runs.c.trigger_json.is_not(None))
    for text in [*conn.execute(texts).scalars(), *conn.execute(select(trigger_state.c.state_json)).scalars()]:
        found |= set(_DIGEST.findall(text or ""))
    return found


__all__ = [
    "OUTPUT_LOST", "RunEvent", "find_lost_outputs", "list_events", "mark_output_lost",
    "record_event", "referenced_digests", "tasks_with_digests",
]  # fmt: skip
