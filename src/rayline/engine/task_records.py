"""What the runner records about a finished task: attempt records from a worker's meta, the
run's report (warnings, counters, watermarks), timeout and error lines, old plans' code hashes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rayline.engine.compiler import PlannedNode
from rayline.store.runs import AttemptRecord, TaskUpdate
from rayline.store.states import TaskStatus


class Report:
    """Warnings, counters and watermarks reported by tasks, summed into the run's counters."""

    def __init__(self, existing: dict[str, Any] | None):
        existing = existing or {}
        self.warnings: list[str] = list(existing.get("warnings", []))
        self.counters: dict[str, float] = dict(existing.get("counters", {}))
        self.watermarks: dict[str, Any] = dict(existing.get("watermarks", {}))

    def add(self, node_id: str, meta: dict[str, Any]) -> None:
        self.warnings += [f"{node_id}: {w}" for w in meta.get("warnings", ())]
        for k, v in meta.get("counters", {}).items():
            self.counters[k] = self.counters.get(k, 0) + v
        self.watermarks.update(meta.get("watermarks", {}))

    def as_dict(self, ok: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.warnings:
            out["warnings"] = self.warnings[-200:]
        if self.counters:
            out["counters"] = self.counters
        if self.watermarks and ok:
            out["watermarks"] = self.watermarks
        return out


def update_from_meta(node_id: str, status: TaskStatus, meta: dict[str, Any]) -> TaskUpdate:
    base = max(int(meta.get("ray_attempt", 1)) - 1, 0)
    attempts: list[AttemptRecord] = []
    for k in range(1, base + 1):
        attempts.append(
            _attempt_record(node_id, {"attempt": k, "status": "FAILED", "error_type": "WorkerDied",
                                      "error_message": "the worker running this attempt died; Ray retried the task"}, {})
        )
    for a in meta.get("attempts", ()):
        attempts.append(_attempt_record(node_id, {**a, "attempt": base + a["attempt"]}, meta))
    last = attempts[-1] if attempts else None
    failed = next((a for a in reversed(attempts) if a.status == TaskStatus.FAILED), None) if not status.ok else None
    return TaskUpdate(
        node_id=node_id,
        status=status,
        attempts=tuple(attempts),
        digest=meta.get("digest"),
        size=meta.get("size"),
        fmt=meta.get("fmt"),
        started_at=attempts[0].started_at if attempts else None,
        ended_at=(last.ended_at if last and last.ended_at else datetime.now(UTC)),
        error_type=failed.error_type if failed else None,
        error_message=failed.error_message if failed else None,
        traceback=failed.traceback if failed else None,
        cache_key=meta.get("cache_key"),
    )


def _attempt_record(node_id: str, a: dict[str, Any], meta: dict[str, Any]) -> AttemptRecord:
    def ts(x: float | None) -> datetime | None:
        return datetime.fromtimestamp(x, UTC) if x else None

    return AttemptRecord(
        run_id="",
        node_id=node_id,
        attempt=int(a["attempt"]),
        status=TaskStatus(a.get("status", "FAILED")),
        started_at=ts(a.get("started")),
        ended_at=ts(a.get("ended")),
        error_type=a.get("error_type"),
        error_message=a.get("error_message"),
        traceback=a.get("traceback"),
        worker_pid=meta.get("pid"),
        node_ip=meta.get("node_ip"),
    )


def timeout_meta(node: PlannedNode, meta: dict[str, Any]) -> dict[str, Any]:
    msg = f"task '{node.id}' ran past its timeout of {node.spec.timeout:g} s and was cancelled"
    return {**meta, "status": "FAILED", "attempts": [*meta.get("attempts", []),
            {"attempt": len(meta.get("attempts", [])) + 1, "status": "FAILED",
             "error_type": "rayline.errors.TaskTimeoutError", "error_message": msg}]}


def refused_meta(meta: dict[str, Any], message: str) -> dict[str, Any]:
    """``meta`` of a task whose registry writes the database refused: its last attempt FAILED."""
    attempts = list(meta.get("attempts") or [{"attempt": 1}])
    last = {**attempts[-1], "status": "FAILED", "error_type": "rayline.store.model_writes.ModelWriteConflict",
            "error_message": message}  # fmt: skip
    return {**meta, "status": "FAILED", "attempts": [*attempts[:-1], last]}


def error_line(node_id: str, meta: dict[str, Any]) -> str:
    attempts = meta.get("attempts") or []
    last = attempts[-1] if attempts else {}
    return f"task '{node_id}' failed: {last.get('error_type', 'error')}: {last.get('error_message', '')}".strip()


def old_code_hashes(plan_json: str | None) -> dict[str, str]:
    import json

    if not plan_json:
        return {}
    try:
        return {n["id"]: n["code_hash"] for n in json.loads(plan_json)["nodes"]}
    except (ValueError, KeyError, TypeError):
        return {}
