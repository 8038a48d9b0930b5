"""What a running task can ask of rayline: where it runs, warnings, counters, watermarks.

Inside a task (on a Ray worker or in-process)::

    from rayline import context

    ctx = context.current()           # None when the function is called outside a run
    context.warn("3 files set aside")  # the run ends SUCCEEDED_WITH_WARNINGS
    context.count("quarantined", 3)    # summed into the run's counters
    seen = context.previous_watermark("files", default=[])   # from the last successful run
    context.set_watermark("files", sorted(new_files))         # kept if this run succeeds
    context.skip("no new files")       # this task and its downstream end SKIPPED
    context.lineage()                  # run id, flow, params, plan hash … (for a model's lineage)

The context is one ``ContextVar``; the engine sets it around each attempt. What the driver knows
of the run (``TaskContext.lineage``, the registry's rows) travels with the task, and what the
task reports travels back with its result: a task never opens the run store or the registry.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

_CURRENT: ContextVar[TaskContext | None] = ContextVar("rayline_task_context", default=None)


@dataclass
class TaskContext:
    run_id: str
    node_id: str
    flow_name: str
    attempt: int
    store: Any  # the ArtifactStore
    previous: dict[str, Any] = field(default_factory=dict)  # watermarks of the last good run
    warnings: list[str] = field(default_factory=list)
    counters: dict[str, float] = field(default_factory=dict)
    watermarks: dict[str, Any] = field(default_factory=dict)
    #: From the driver: run_params, plan_hash, code_hash (of the tasks upstream), trigger.
    lineage: dict[str, Any] = field(default_factory=dict)
    #: From the driver, for a task declared ``@task(registry=True)``: the model registry's rows
    #: (``rayline.store.model_writes.model_rows``); ``registry_view`` is the attempt's private
    #: copy of them (``rayline.models.registry.task_view``), whose changes go back with the result.
    registry_rows: dict[str, Any] | None = None
    registry_view: Any = None


def current() -> TaskContext | None:
    """The running task's context, or None outside a run."""
    return _CURRENT.get()


def lineage() -> dict[str, Any]:
    """What the run says about where this task's output comes from: run id, node id and flow;
    the run's parameters and plan hash; a code hash of every task upstream of this one (None
    when there is none) and, for a run a trigger started, why (its ``trigger`` record). Empty
    outside a run.

    Example::

        registry.register("churn", model, lineage={**context.lineage(), "rows": 60})
    """
    ctx = _CURRENT.get()
    if ctx is None:
        return {}
    return {"run_id": ctx.run_id, "node_id": ctx.node_id, "flow_name": ctx.flow_name,
            **ctx.lineage}  # fmt: skip


def warn(message: str) -> None:
    ctx = _CURRENT.get()
    if ctx is not None:
        ctx.warnings.append(str(message)[:2000])


def count(name: str, n: float = 1) -> None:
    ctx = _CURRENT.get()
    if ctx is not None:
        ctx.counters[name] = ctx.counters.get(name, 0) + n


def previous_watermark(key: str, default: Any = None) -> Any:
    """The value this flow's last SUCCEEDED run stored under ``key`` (per node id)."""
    ctx = _CURRENT.get()
    if ctx is None:
        return default
    return ctx.previous.get(f"{ctx.node_id}:{key}", default)


def set_watermark(key: str, value: Any) -> None:
    """Store a JSON-able ``value`` under ``key``; visible to the next run once this one succeeds."""
    ctx = _CURRENT.get()
    if ctx is not None:
        ctx.watermarks[f"{ctx.node_id}:{key}"] = value


def skip(reason: str) -> None:
    """End this task as SKIPPED (e.g. "no new data"): downstream tasks are SKIPPED too, and the
    run ends SKIPPED unless another task failed. Raises; code after it does not run."""
    from rayline.errors import SkipRun

    raise SkipRun(reason)


def _activate(ctx: TaskContext) -> Any:
    return _CURRENT.set(ctx)


def _deactivate(token: Any) -> None:
    _CURRENT.reset(token)
