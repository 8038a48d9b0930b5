"""How a batch of ``TaskUpdate``s becomes a few executemany statements on the run store.

The driver flushes task changes in batches; ``task_writes`` folds a batch into one effective
update per node and per attempt (in order), and ``apply_task_writes`` runs it inside the caller's
transaction: one UPDATE per kind of update and at most one INSERT, whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable

from rayline.errors import StoreError
from rayline.store.run_records import TIME_FIELDS, AttemptUpdate, TaskUpdate, to_ts
from rayline.store.schema import task_attempts, tasks
from rayline.store.states import TaskStatus

_TASK_FIELDS = (
    "digest", "size", "fmt", "started_at", "ended_at",
    "error_type", "error_message", "traceback", "cache_key",
)  # fmt: skip
_FRESH = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING})


def _task_statement(fresh: bool) -> Any:
    """UPDATE tasks for executemany: fresh updates replace fields, the others coalesce."""
    highest = (
        select(func.max(task_attempts.c.attempt))
        .where(task_attempts.c.run_id == tasks.c.run_id)
        .where(task_attempts.c.node_id == tasks.c.node_id)
        .scalar_subquery()
    )
    values: dict[str, Any] = {
        "status": bindparam("v_status"),
        "attempts": func.coalesce(highest, tasks.c.attempts),
    }
    for f in _TASK_FIELDS:
        param = bindparam(f"v_{f}", type_=tasks.c[f].type)
        keep = f == "cache_key" or not fresh
        values[f] = func.coalesce(param, tasks.c[f]) if keep else param
    return (
        update(tasks)
        .where(tasks.c.run_id == bindparam("k_run_id"))
        .where(tasks.c.node_id == bindparam("k_node_id"))
        .values(**values)
    )


UPDATE_TASK_FRESH = _task_statement(fresh=True)
UPDATE_TASK_MERGE = _task_statement(fresh=False)
_ATTEMPT_FIELDS = (
    "started_at", "ended_at", "error_type", "error_message", "traceback", "worker_pid", "node_ip",
    "cpus", "gpus", "memory_bytes", "cpu_seconds", "gpu_seconds",
)  # fmt: skip
UPDATE_ATTEMPT = (
    update(task_attempts)
    .where(task_attempts.c.run_id == bindparam("k_run_id"))
    .where(task_attempts.c.node_id == bindparam("k_node_id"))
    .where(task_attempts.c.attempt == bindparam("k_attempt"))
    .values(
        status=bindparam("v_status"),
        **{
            f: func.coalesce(bindparam(f"v_{f}", type_=task_attempts.c[f].type), task_attempts.c[f])
            for f in _ATTEMPT_FIELDS
        },
    )
)


@dataclass
class TaskWrites:
    """A batch of ``TaskUpdate``s as executemany parameters."""

    node_ids: set[str] = field(default_factory=set)
    fresh: list[dict[str, Any]] = field(default_factory=list)
    merge: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)

    def attempt_params(self, run_id: str, key: tuple[str, int]) -> dict[str, Any]:
        """Parameters of ``UPDATE_ATTEMPT`` for one attempt."""
        row = {f"v_{k}": v for k, v in self.attempts[key].items()}
        return {**row, "k_run_id": run_id, "k_node_id": key[0], "k_attempt": key[1]}


def _attempt_values(a: AttemptUpdate) -> dict[str, Any]:
    return {
        "status": str(a.status), "started_at": to_ts(a.started_at), "ended_at": to_ts(a.ended_at),
        "error_type": a.error_type, "error_message": a.error_message, "traceback": a.traceback,
        "worker_pid": a.worker_pid, "node_ip": a.node_ip, "cpus": a.cpus, "gpus": a.gpus,
        "memory_bytes": a.memory_bytes, "cpu_seconds": a.cpu_seconds, "gpu_seconds": a.gpu_seconds,
    }  # fmt: skip


def task_writes(run_id: str, updates: Sequence[TaskUpdate]) -> TaskWrites:
    """Fold a batch into one effective update per node, and per attempt, applied in order."""
    folded: dict[str, tuple[bool, dict[str, Any]]] = {}
    attempts: dict[tuple[str, int], dict[str, Any]] = {}
    for u in updates:
        given = {f: getattr(u, f) for f in _TASK_FIELDS}
        fresh, values = folded.get(u.node_id, (False, {}))
        if u.status in _FRESH:
            keep_key = given["cache_key"] or values.get("cache_key")
            fresh, values = True, {**given, "cache_key": keep_key}
        else:
            values = {**values, **{k: v for k, v in given.items() if v is not None}}
        values["status"] = str(u.status)
        folded[u.node_id] = (fresh, values)
        for a in u.attempts:
            key, values = (u.node_id, int(a.attempt)), _attempt_values(a)
            if key in attempts:  # merge like the stored row would: None keeps the value
                values = {**attempts[key], **{k: v for k, v in values.items() if v is not None}}
            attempts[key] = values
    out = TaskWrites(node_ids=set(folded))
    for node_id, (fresh, values) in folded.items():
        row: dict[str, Any] = {"k_run_id": run_id, "k_node_id": node_id}
        row.update({f"v_{f}": None for f in _TASK_FIELDS})
        for key, value in values.items():
            row[f"v_{key}"] = to_ts(value) if key in TIME_FIELDS else value
        (out.fresh if fresh else out.merge).append(row)
    out.attempts = attempts
    return out


_INSERT_ATTEMPT = insert(task_attempts)


@lru_cache(maxsize=32)
def _compiled(stmt: Executable, dialect: Dialect) -> tuple[str, tuple[str, ...] | None]:
    compiled = stmt.compile(dialect=dialect)
    return str(compiled), tuple(compiled.positiontup or ()) if compiled.positional else None


def _executemany(conn: Connection, stmt: Executable, rows: list[dict[str, Any]]) -> None:
    """``executemany`` straight to the driver: SQLAlchemy's per-row parameter processing costs
    more than SQLite's work here, and these columns (text, numbers) need no bind processing."""
    sql, order = _compiled(stmt, conn.dialect)
    if order is None:
        conn.exec_driver_sql(sql, rows)
    else:
        conn.exec_driver_sql(sql, [tuple(row[name] for name in order) for row in rows])


def apply_task_writes(conn: Connection, run_id: str, writes: TaskWrites) -> None:
    """Run ``writes`` on ``conn`` (inside the caller's transaction).

    Raises:
        StoreError: a node is not one of the run's tasks; the caller's transaction rolls back.
    """
    if not writes.node_ids:
        return
    have = select(tasks.c.node_id).where(tasks.c.run_id == run_id)
    unknown = writes.node_ids - set(conn.execute(have).scalars())
    if unknown:
        raise StoreError(
            f"run {run_id} has no task(s) {sorted(unknown)[:10]}; the plan's node ids "
            "are fixed when the run is created"
        )
    if writes.attempts:
        stored = select(task_attempts.c.node_id, task_attempts.c.attempt)
        stored = stored.where(task_attempts.c.run_id == run_id)
        old = {(n, a) for n, a in conn.execute(stored)} & writes.attempts.keys()
        if old:
            _executemany(conn, UPDATE_ATTEMPT, [writes.attempt_params(run_id, k) for k in old])
        new = [
            {"run_id": run_id, "node_id": n, "attempt": a, **values}
            for (n, a), values in writes.attempts.items()
            if (n, a) not in old
        ]
        if new:
            _executemany(conn, _INSERT_ATTEMPT, new)
    if writes.fresh:
        _executemany(conn, UPDATE_TASK_FRESH, writes.fresh)
    if writes.merge:
        _executemany(conn, UPDATE_TASK_MERGE, writes.merge)


def insert_tasks(conn: Connection, run_id: str, node_ids: Sequence[str]) -> None:
    """Add PENDING tasks ``node_ids`` to a run (those it does not have yet), after its others:
    the items of a map node, whose number is known only once the run is going."""
    if not node_ids:
        return
    rows = conn.execute(select(tasks.c.node_id, tasks.c.seq).where(tasks.c.run_id == run_id)).all()
    have = {n for n, _ in rows}
    seq = max((s for _, s in rows), default=-1) + 1
    fresh = [n for n in dict.fromkeys(node_ids) if n not in have]
    if fresh:
        conn.execute(
            insert(tasks),
            [{"run_id": run_id, "node_id": n, "seq": seq + i, "status": str(TaskStatus.PENDING), "attempts": 0}
             for i, n in enumerate(fresh)],
        )  # fmt: skip
