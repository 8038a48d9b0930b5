"""The run store's records: frozen values in, frozen values out, UTC-aware timestamps.

``RunStore`` (``runs.py``) returns ``RunRecord``, ``TaskRecord`` and ``AttemptRecord`` and takes
``TaskUpdate``/``AttemptUpdate`` batches. The conversions to and from database rows live here too:
timestamps are stored as float epoch seconds, dicts as JSON text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rayline.store.states import RunStatus, TaskStatus

if TYPE_CHECKING:
    from sqlalchemy import Row


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as stored. Timestamps are timezone-aware UTC."""

    run_id: str
    flow_name: str
    source: str | None
    status: RunStatus
    params: dict[str, Any]
    plan_hash: str
    run_key: str | None
    trigger: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    owner_pid: int | None
    owner_host: str | None
    heartbeat_at: datetime | None
    generation: int
    error: str | None
    counters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """The current state of one node of a run; ``attempts`` is the highest attempt recorded."""

    run_id: str
    node_id: str
    status: TaskStatus
    attempts: int
    digest: str | None
    size: int | None
    fmt: str | None
    started_at: datetime | None
    ended_at: datetime | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    cache_key: str | None


@dataclass(frozen=True, slots=True)
class AttemptUpdate:
    """An attempt to insert or replace, keyed by (run, node, ``attempt``)."""

    attempt: int
    status: TaskStatus
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    worker_pid: int | None = None
    node_ip: str | None = None
    cpus: float | None = None  # what the attempt held (its planned Ray options)
    gpus: float | None = None
    memory_bytes: int | None = None
    cpu_seconds: float | None = None  # held x how long it ran
    gpu_seconds: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord(AttemptUpdate):
    """One attempt (one execution) of one node, as stored: an ``AttemptUpdate`` with the run
    and node it belongs to."""

    run_id: str
    node_id: str


@dataclass(frozen=True, slots=True)
class TaskUpdate:
    """A change to one node's state, the input of ``RunStore.record_tasks``.

    An update to PENDING or RUNNING starts the node afresh: it replaces every field (None clears
    it), except ``cache_key``. Any other update merges: None keeps the stored value.

    ``attempts`` (``AttemptUpdate``; an ``AttemptRecord``'s run and node are ignored) are
    upserted by attempt number: a new one is inserted, a known one merged (its status replaced,
    None keeping the other stored values). ``TaskRecord.attempts`` becomes the highest number.
    """

    node_id: str
    status: TaskStatus
    attempts: tuple[AttemptUpdate, ...] = ()
    digest: str | None = None
    size: int | None = None
    fmt: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    cache_key: str | None = None


TIME_FIELDS = frozenset({"started_at", "ended_at"})


def to_ts(value: datetime | None) -> float | None:
    """Epoch seconds of ``value``; a naive datetime is taken to be UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def from_ts(value: float | None) -> datetime | None:
    """The aware UTC datetime of epoch seconds ``value``."""
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def run_from_row(row: Row[Any]) -> RunRecord:
    """A ``RunRecord`` from a row of ``runs``."""
    m = row._mapping
    return RunRecord(
        run_id=m["run_id"], flow_name=m["flow_name"], source=m["source"],
        status=RunStatus(m["status"]), params=json.loads(m["params_json"]),
        plan_hash=m["plan_hash"], run_key=m["run_key"],
        trigger=None if m["trigger_json"] is None else json.loads(m["trigger_json"]),
        created_at=datetime.fromtimestamp(m["created_at"], tz=UTC),
        started_at=from_ts(m["started_at"]), ended_at=from_ts(m["ended_at"]),
        owner_pid=m["owner_pid"], owner_host=m["owner_host"],
        heartbeat_at=from_ts(m["heartbeat_at"]), generation=m["generation"], error=m["error"],
        counters=json.loads(m["counters_json"]),
    )  # fmt: skip


def task_from_row(row: Row[Any]) -> TaskRecord:
    """A ``TaskRecord`` from a row of ``tasks``."""
    m = dict(row._mapping)
    m.pop("seq")
    m["status"] = TaskStatus(m["status"])
    for f in TIME_FIELDS:
        m[f] = from_ts(m[f])
    return TaskRecord(**m)


def attempt_from_row(row: Row[Any]) -> AttemptRecord:
    """An ``AttemptRecord`` from a row of ``task_attempts``."""
    m = dict(row._mapping)
    m["status"] = TaskStatus(m["status"])
    for f in TIME_FIELDS:
        m[f] = from_ts(m[f])
    return AttemptRecord(**m)
