"""Resource usage summed from the accounting columns of ``task_attempts``.

Each attempt records the CPUs, GPUs and memory it held and its ``cpu_seconds``/``gpu_seconds``
(schema version 3); this module sums them per run in one grouped query, then per queue, flow or
day (UTC) in Python, for ``rayline usage``.

Example::

    for row in usage_report(runs, by="flow", since=datetime(2026, 12, 1, tzinfo=UTC)):
        print(row.key, row.cpu_seconds, row.gpu_seconds)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import func, select

from rayline.store.schema import runs, task_attempts

if TYPE_CHECKING:
    from rayline.store.runs import RunStore

UsageBy = Literal["queue", "flow", "day"]
#: The queue of runs admitted without a queue (no ``configs/queues.yaml``, or none named).
DEFAULT_QUEUE = "default"


@dataclass(frozen=True, slots=True)
class UsageRow:
    """What the runs of one queue, flow or day used: CPU- and GPU-seconds, and the most memory
    (bytes) one attempt held."""

    key: str
    runs: int
    attempts: int
    cpu_seconds: float
    gpu_seconds: float
    max_memory_bytes: int | None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "runs": self.runs, "attempts": self.attempts,
                "cpu_seconds": round(self.cpu_seconds, 3), "gpu_seconds": round(self.gpu_seconds, 3),
                "max_memory_bytes": self.max_memory_bytes}  # fmt: skip


def usage_report(store: RunStore, *, by: UsageBy = "flow", since: datetime | None = None) -> list[UsageRow]:
    """Usage of the runs created at or after ``since`` (all runs when None), grouped ``by``
    queue, flow or UTC day; the largest GPU- then CPU-seconds first (days in date order)."""
    a = task_attempts
    stmt = (
        select(runs.c.flow_name, runs.c.queue, runs.c.created_at, func.count(a.c.attempt),
               func.coalesce(func.sum(a.c.cpu_seconds), 0.0), func.coalesce(func.sum(a.c.gpu_seconds), 0.0),
               func.max(a.c.memory_bytes))
        .select_from(runs.join(a, a.c.run_id == runs.c.run_id))
        .group_by(runs.c.run_id, runs.c.flow_name, runs.c.queue, runs.c.created_at)
    )  # fmt: skip
    if since is not None:
        stmt = stmt.where(runs.c.created_at >= since.timestamp())
    groups: dict[str, list[Any]] = {}
    with store.transaction(read=True) as conn:
        for flow, queue, created, n, cpu, gpu, memory in conn.execute(stmt):
            key = _key(by, flow, queue, created)
            g = groups.setdefault(key, [0, 0, 0.0, 0.0, None])
            g[0] += 1
            g[1] += n
            g[2] += float(cpu)
            g[3] += float(gpu)
            if memory:
                g[4] = max(g[4] or 0, int(memory))
    rows = [UsageRow(k, *g) for k, g in groups.items()]
    if by == "day":
        return sorted(rows, key=lambda r: r.key)
    return sorted(rows, key=lambda r: (-r.gpu_seconds, -r.cpu_seconds, r.key))


def _key(by: UsageBy, flow: str, queue: str | None, created: float) -> str:
    if by == "queue":
        return queue or DEFAULT_QUEUE
    if by == "day":
        return datetime.fromtimestamp(created, tz=UTC).strftime("%Y-%m-%d")
    return flow
