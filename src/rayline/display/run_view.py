"""The read model of a run: one frozen ``RunView``, read from the run store by one function.

Every place that shows a run renders this one value: ``rayline run`` and ``rayline runs
show|list`` (human and ``--json``), the notebook HTML, the ``Run`` handle, and the web UI. Its
JSON document (``RunView.to_json``) is what ``rayline runs show --json`` prints; the other JSON
outputs are projections of it (``RunView.row`` for ``runs list``, ``RunView.outcome`` for
``rayline run``), so no two of them disagree.
Errors are kept whole (every line the store holds), with each attempt's traceback; given the
run's ``TaskLogs``, each attempt names where its log is and each failed task carries the last
lines of its log.

Example::

    view = read_run_view(store, "1a2b3c…")
    view.status, view.duration_s, [t.error for t in view.failed_tasks]
    json.dumps(view.to_json())
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rayline.store.run_records import AttemptRecord, RunRecord, TaskRecord
from rayline.store.states import RunStatus, TaskStatus

if TYPE_CHECKING:
    from rayline.store.runs import RunStore
    from rayline.store.task_logs import TaskLogs

LOG_TAIL_LINES = 20


_OWN_FAILURE = (TaskStatus.FAILED, TaskStatus.INTERRUPTED, TaskStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class Usage:
    """Resources held: CPU- and GPU-seconds, and the most memory (bytes) any attempt held."""

    cpu_seconds: float = 0.0
    gpu_seconds: float = 0.0
    memory_bytes: int | None = None

    @staticmethod
    def total(parts: Sequence[Usage | None]) -> Usage:
        have = [u for u in parts if u is not None]
        memory = [u.memory_bytes for u in have if u.memory_bytes]
        return Usage(round(sum(u.cpu_seconds for u in have), 3),
                     round(sum(u.gpu_seconds for u in have), 3), max(memory, default=None))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"cpu_seconds": self.cpu_seconds, "gpu_seconds": self.gpu_seconds,
                "memory_bytes": self.memory_bytes}  # fmt: skip


@dataclass(frozen=True, slots=True)
class AttemptView:
    """One execution of one task: its state, times, whole error and traceback, where it ran."""

    attempt: int
    status: TaskStatus
    started_at: datetime | None
    ended_at: datetime | None
    error_type: str | None
    error: str | None
    traceback: str | None
    worker_pid: int | None
    node_ip: str | None
    usage: Usage | None = None  # what it held and for how long (None: not recorded)
    log: str | None = None  # where this attempt's log is (``rayline logs RUN NODE --attempt N``)

    @property
    def duration_s(self) -> float | None:
        return seconds_between(self.started_at, self.ended_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt, "status": self.status.value, "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at), "duration_s": self.duration_s, "error_type": self.error_type,
            "error": self.error, "traceback": self.traceback, "worker_pid": self.worker_pid,
            "node_ip": self.node_ip, "log": self.log, **(self.usage or Usage()).to_json(),
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class OutputView:
    """Where a task's output is stored: its content digest in the artifact store, size, format."""

    digest: str
    size: int | None
    fmt: str | None

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "size": self.size, "format": self.fmt}


@dataclass(frozen=True, slots=True)
class TaskView:
    """One node of a run: its current state, whole error, output and every attempt."""

    node_id: str
    status: TaskStatus
    attempts: int
    started_at: datetime | None
    ended_at: datetime | None
    error_type: str | None
    error: str | None
    traceback: str | None
    output: OutputView | None
    attempt_log: tuple[AttemptView, ...] = ()
    log_tail: str | None = None  # a failed task's last log lines (of its last attempt)

    @property
    def duration_s(self) -> float | None:
        return seconds_between(self.started_at, self.ended_at)

    @property
    def usage(self) -> Usage:
        """The sum over every attempt."""
        return Usage.total([a.usage for a in self.attempt_log])

    @property
    def error_kind(self) -> str:
        """The error's class name without its module: ``ValueError``."""
        return (self.error_type or "").rsplit(".", 1)[-1]

    @property
    def error_text(self) -> str:
        """``Kind: the whole message`` (every line), or '' when the task has no error."""
        message = (self.error or "").strip()
        kind = self.error_kind
        return f"{kind}: {message}" if kind and message else message or kind

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id, "status": self.status.value, "attempts": self.attempts,
            "started_at": iso(self.started_at), "ended_at": iso(self.ended_at),
            "duration_s": self.duration_s, "error_type": self.error_type, "error": self.error,
            "traceback": self.traceback, "digest": self.output.digest if self.output else None,
            "output": self.output.to_json() if self.output else None,
            "attempt_log": [a.to_json() for a in self.attempt_log], "log_tail": self.log_tail,
            **self.usage.to_json(),
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class RunView:
    """A run as people see it: status, flow, parameters, trigger, times, tasks with their
    attempts, whole errors, counters, warnings, and where outputs are stored."""

    run_id: str
    flow: str
    status: RunStatus
    error: str | None
    source: str | None
    params: dict[str, Any]
    run_key: str | None
    trigger: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    owner_pid: int | None
    owner_host: str | None
    warnings: tuple[str, ...]
    counters: dict[str, float]
    tasks: tuple[TaskView, ...]
    artifact_root: str | None = None  # the artifact store holding the outputs, when known
    events: tuple[dict[str, Any], ...] = ()  # the run's history besides task states (lost outputs)

    @property
    def duration_s(self) -> float | None:
        return seconds_between(self.started_at or self.created_at, self.ended_at)

    @property
    def usage(self) -> Usage:
        """The sum over every task's attempts."""
        return Usage.total([t.usage for t in self.tasks])

    @property
    def counts(self) -> dict[str, int]:
        """How many tasks are in each state: ``{"SUCCEEDED": 3, "FAILED": 1}``."""
        out: dict[str, int] = {}
        for t in self.tasks:
            out[t.status.value] = out.get(t.status.value, 0) + 1
        return out

    @property
    def failed_tasks(self) -> tuple[TaskView, ...]:
        """The tasks that failed with an error of their own (not those failed upstream)."""
        return tuple(t for t in self.tasks if t.status in _OWN_FAILURE)

    def task(self, node_id: str) -> TaskView:
        return next(t for t in self.tasks if t.node_id == node_id)

    def row(self) -> dict[str, Any]:
        """The run without its tasks: a line of ``rayline runs list --json``."""
        return {
            "run_id": self.run_id, "flow": self.flow, "status": self.status.value,
            "created_at": iso(self.created_at), "ended_at": iso(self.ended_at),
            "duration_s": self.duration_s, "error": self.error, "run_key": self.run_key,
            "counts": self.counts,
        }  # fmt: skip

    def outcome(self) -> dict[str, Any]:
        """How the run ended, each task's state and attempts: ``rayline run --json``."""
        return {
            "run_id": self.run_id, "status": self.status.value, "flow": self.flow, "error": self.error,
            "tasks": [{"node_id": t.node_id, "status": t.status.value, "attempts": t.attempts}
                      for t in self.tasks],
        }  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The whole run as JSON-ready data (``rayline runs show --json``)."""
        return {
            **self.row(), "source": self.source, "params": self.params, "trigger": self.trigger,
            "started_at": iso(self.started_at), "owner_pid": self.owner_pid,
            "owner_host": self.owner_host, "warnings": list(self.warnings),
            "counters": dict(self.counters), "artifact_root": self.artifact_root,
            "tasks": [t.to_json() for t in self.tasks], **self.usage.to_json(),
            "events": list(self.events),
        }  # fmt: skip


def run_view(
    record: RunRecord,
    tasks: Sequence[TaskRecord],
    attempts: Sequence[AttemptRecord] = (),
    *,
    artifact_root: str | None = None,
    logs: TaskLogs | None = None,
    events: Sequence[Any] = (),
) -> RunView:
    """The ``RunView`` of a run's records (as ``RunStore`` returns them); with the run's
    ``logs``, attempts name their log and failed tasks carry its last lines; ``events`` are its
    ``RunEvent`` records."""
    by_node: dict[str, list[AttemptView]] = {}
    for a in attempts:
        by_node.setdefault(a.node_id, []).append(AttemptView(
            attempt=a.attempt, status=a.status, started_at=a.started_at, ended_at=a.ended_at,
            error_type=a.error_type, error=a.error_message, traceback=a.traceback,
            worker_pid=a.worker_pid, node_ip=a.node_ip, usage=_attempt_usage(a),
            log=logs.location(record.run_id, a.node_id, a.attempt) if logs is not None else None,
        ))  # fmt: skip
    return RunView(
        run_id=record.run_id, flow=record.flow_name, status=record.status, error=record.error,
        source=record.source, params=dict(record.params), run_key=record.run_key,
        trigger=record.trigger, created_at=record.created_at, started_at=record.started_at,
        ended_at=record.ended_at, owner_pid=record.owner_pid, owner_host=record.owner_host,
        warnings=tuple(str(w) for w in record.counters.get("warnings", [])),
        counters=dict(record.counters.get("counters", {})),
        tasks=tuple(_task_view(t, by_node.get(t.node_id, ()), _tail(logs, record.run_id, t)) for t in tasks),
        artifact_root=artifact_root,
        events=tuple({"at": iso(e.at), "kind": e.kind, "node_id": e.node_id, "digest": e.digest,
                      "message": e.message} for e in events),
    )  # fmt: skip


def read_run_view(
    runs: RunStore, run_id: str, *, attempts: bool = True, artifact_root: str | None = None,
    logs: TaskLogs | None = None,
) -> RunView:
    """Read run ``run_id`` (the full id) from the run store; ``attempts=False`` leaves out the
    attempt log (a list of many runs needs only the counts)."""
    record = runs.get_run(run_id)
    return run_view(record, runs.get_tasks(run_id), runs.get_attempts(run_id) if attempts else (),
                    artifact_root=artifact_root, logs=logs,
                    events=runs.get_events(run_id) if attempts else ())  # fmt: skip


def _tail(logs: TaskLogs | None, run_id: str, t: TaskRecord) -> str | None:
    """The last lines of a failed task's log (None for other tasks, or without logs)."""
    if logs is None or t.status not in _OWN_FAILURE:
        return None
    return logs.tail(run_id, t.node_id, LOG_TAIL_LINES)


def _task_view(t: TaskRecord, attempts: Sequence[AttemptView], log_tail: str | None = None) -> TaskView:
    output = OutputView(t.digest, t.size, t.fmt) if t.digest else None
    return TaskView(
        node_id=t.node_id, status=t.status, attempts=t.attempts, started_at=t.started_at,
        ended_at=t.ended_at, error_type=t.error_type, error=t.error_message, traceback=t.traceback,
        output=output, attempt_log=tuple(attempts), log_tail=log_tail,
    )  # fmt: skip


def _attempt_usage(a: AttemptRecord) -> Usage | None:
    if a.cpus is None and a.gpus is None:
        return None
    return Usage(a.cpu_seconds or 0.0, a.gpu_seconds or 0.0, a.memory_bytes)


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 text of a timestamp, or None."""
    return dt.isoformat() if dt else None


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    """Seconds from ``start`` to ``end`` (milliseconds kept), or None when either is unknown."""
    return round((end - start).total_seconds(), 3) if start and end else None
