"""What the runs list and a run's page read: ``RunView``s (``rayline.display.run_view``), the
stored plan (graph, resources, call sites) and a timeline of attempts. Reads only: a run whose
driver died is *shown* as having a stale lease, never marked (that is the driver's or the CLI's
write), so the UI never holds a write lock a driver waits on.

Example::

    rows = runs_list(store, settings, RunFilter(flow="hello", status="FAILED"))
    page = run_page(store, settings, "1a2b3c")
    page.view.to_json() == json.loads(`rayline runs show 1a2b3c --json`) minus exit_code
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rayline.config import Settings
from rayline.display.run_view import RunView, read_run_view, run_view
from rayline.store.artifact_location import artifact_options, files_for
from rayline.store.runs import RunStore
from rayline.store.states import RunStatus
from rayline.store.task_logs import LogPart, TaskLogs
from rayline.ui.graph_svg import Drawing, layout, plan_nodes

STATUSES = tuple(s.value for s in RunStatus)
SINCE = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7),
         "30d": timedelta(days=30)}  # fmt: skip
_RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory", "resources", "accelerator_type")
LOG_TASKS = 50  # a run's page shows the logs of this many tasks (all: `rayline logs RUN`)
LOG_SHOWN = 64 * 1024  # and the last this many characters of each attempt's log


@dataclass(frozen=True, slots=True)
class RunFilter:
    """The runs list's filters: flow name, status, and how far back (a key of ``SINCE``)."""

    flow: str | None = None
    status: str | None = None
    since: str | None = None
    limit: int = 100

    @classmethod
    def from_query(cls, query: Any) -> RunFilter:
        status = (query.get("status") or "").upper() or None
        since = query.get("since") or None
        return cls(flow=query.get("flow") or None, status=status if status in STATUSES else None,
                   since=since if since in SINCE else None)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RunRow:
    """One line of the runs list."""

    view: RunView
    stale: bool  # RUNNING, but its driver stopped renewing its lease

    @property
    def trigger_text(self) -> str:
        return trigger_text(self.view.trigger)


def runs_list(runs: RunStore, settings: Settings, f: RunFilter) -> list[RunRow]:
    """Runs matching ``f``, newest first, each with its task counts."""
    status = RunStatus(f.status) if f.status else None
    records = runs.list_runs(limit=f.limit * (5 if f.since else 1), flow_name=f.flow, status=status)
    if f.since:
        cutoff = datetime.now(UTC) - SINCE[f.since]
        records = [r for r in records if r.created_at >= cutoff][: f.limit]
    return [RunRow(run_view(r, runs.get_tasks(r.run_id)), _stale(runs, settings, r)) for r in records]


def flow_names(runs: RunStore, limit: int = 500) -> list[str]:
    """The flows of the latest ``limit`` runs, sorted (the runs list's flow filter)."""
    return sorted({r.flow_name for r in runs.list_runs(limit=limit)})


@dataclass(frozen=True, slots=True)
class Bar:
    """One attempt on the timeline: where its bar starts and how wide it is, in % of the run."""

    node_id: str
    attempt: int
    status: str
    left: float
    width: float
    duration_s: float | None
    started_at: datetime | None


@dataclass(frozen=True, slots=True)
class RunPage:
    """Everything a run's page shows."""

    view: RunView
    stale: bool
    drawing: Drawing
    timeline: tuple[Bar, ...]
    plan: dict[str, dict[str, Any]]  # node id -> its planned node (resources, location, ...)
    store_url: str
    generation: int  # of the run's lease: a resume that takes the run over raises it
    logs: tuple[LogPart, ...] = ()  # each attempt's log (its last LOG_SHOWN characters)
    logs_cut: bool = False  # more tasks have logs than the page shows

    @property
    def terminal(self) -> bool:
        return self.view.status.terminal and not self.stale

    @property
    def resumable(self) -> bool:
        return self.view.status.value in ("FAILED", "CANCELLED", "INTERRUPTED") or self.stale

    @property
    def cancellable(self) -> bool:
        return not self.view.status.terminal

    def resources(self, node_id: str) -> str:
        """The resources a node asked Ray for: ``num_cpus=1, num_gpus=0.5``."""
        options = (self.plan.get(node_id) or {}).get("ray_options") or {}
        return ", ".join(f"{k}={options[k]}" for k in _RESOURCE_KEYS if options.get(k) is not None)

    def location(self, node_id: str) -> str:
        """Where the node is called in the flow file (``flows/x.py:12``)."""
        return str((self.plan.get(node_id) or {}).get("location") or "")


def run_page(runs: RunStore, settings: Settings, run_id: str) -> RunPage:
    """The page of run ``run_id`` (a unique prefix is enough).

    Raises:
        StoreError: no such run, or the prefix is ambiguous.
    """
    record = runs.find_run(run_id)
    task_logs = TaskLogs(files_for(settings.artifacts_url or settings.artifact_root,
                                   artifact_options(settings)))  # reads only: no key, no sweep
    view = read_run_view(runs, record.run_id, artifact_root=settings.artifacts_url or str(settings.artifact_root),
                         logs=task_logs)  # fmt: skip
    text = runs.get_plan(record.plan_hash)
    plan = json.loads(text) if text else {}
    states = {t.node_id: t.status.value for t in view.tasks}
    drawing = layout(plan_nodes(plan, [t.node_id for t in view.tasks]), states)
    return RunPage(
        view=view, stale=_stale(runs, settings, record), drawing=drawing, timeline=timeline(view),
        plan={n["id"]: n for n in plan.get("nodes", [])}, store_url=runs.url,
        generation=record.generation, **_logs(task_logs, view),
    )  # fmt: skip


def _logs(task_logs: TaskLogs, view: RunView) -> dict[str, Any]:
    """The logs a run's page shows: those of the first ``LOG_TASKS`` tasks that have any."""
    have = set(task_logs.nodes(view.run_id))
    nodes = [t.node_id for t in view.tasks if t.node_id in have]
    parts = task_logs.parts(view.run_id, nodes[:LOG_TASKS])
    shown = tuple(LogPart(p.node_id, p.attempt, p.text[-LOG_SHOWN:]) for p in parts)
    return {"logs": shown, "logs_cut": len(nodes) > LOG_TASKS}


def timeline(view: RunView) -> tuple[Bar, ...]:
    """Every attempt of every task as a bar across the run's time span."""
    attempts = [(t.node_id, a) for t in view.tasks for a in t.attempt_log if a.started_at]
    if not attempts:
        return ()
    now = datetime.now(UTC)
    start = min(a.started_at for _, a in attempts)  # type: ignore[type-var]
    end = max(max((a.ended_at or now) for _, a in attempts), view.ended_at or start)
    span = max((end - start).total_seconds(), 1e-3)
    bars = []
    for node_id, a in sorted(attempts, key=lambda x: (x[1].started_at, x[0])):
        left = (a.started_at - start).total_seconds() / span * 100  # type: ignore[operator]
        width = ((a.ended_at or now) - a.started_at).total_seconds() / span * 100  # type: ignore[operator]
        bars.append(Bar(node_id, a.attempt, a.status.value, round(left, 2), round(max(width, 0.5), 2),
                        a.duration_s, a.started_at))  # fmt: skip
    return tuple(bars)


def trigger_text(trigger: dict[str, Any] | None) -> str:
    """``cron: schedule 0 3 * * *`` for a run's trigger, ``manual`` when started by hand."""
    if not trigger:
        return "manual"
    kind = trigger.get("kind") or "manual"
    reason = trigger.get("reason")
    return f"{kind}: {reason}" if reason else str(kind)


def _stale(runs: RunStore, settings: Settings, record: Any) -> bool:
    return record.status == RunStatus.RUNNING and runs.is_stale(record, settings.lease_ttl)
