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
    if context.preempted():            # higher-priority work needs this task's resources:
        save_state(); raise TaskPreempted()   # it is queued again and resumes later

The context is one ``ContextVar``; the engine sets it around each attempt. What the driver knows
of the run (``TaskContext.lineage``, the registry's rows) travels with the task, and what the
task reports travels back with its result: a task never opens the run store or the registry.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

_CURRENT: ContextVar[TaskContext | None] = ContextVar("rayline_task_context", default=None)
#: the Ray placement group that holds this task's gang (``@task(gang=...)``), while it holds it
_GANG: ContextVar[Any] = ContextVar("rayline_task_gang", default=None)


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


def placement_group() -> Any:
    """The Ray placement group rayline reserved for this task's gang (``@task(gang=...)``: its
    workers' bundles, all ready before the task started), or None. Schedule the workers into it
    (``PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)``); it is removed
    when the task ends."""
    return _GANG.get()


def release_placement_group() -> None:
    """Give the gang's placement group back now: for a task that hands its workers to a library
    that reserves its own (Ray Train's worker group asks for the same bundles at once)."""
    pg = _GANG.get()
    if pg is not None:
        from ray.util import remove_placement_group

        _GANG.set(None)
        remove_placement_group(pg)


def _hold_gang(pg: Any) -> Any:
    return _GANG.set(pg)


def _drop_gang(token: Any) -> None:
    pg = _GANG.get()
    _GANG.reset(token)
    if pg is not None:
        from ray.util import remove_placement_group

        try:
            remove_placement_group(pg)
        except Exception:  # removed already (the driver cancelled the task): nothing held
            pass


#: Ray's key-value store (in its GCS, reachable from every worker) holds preemption requests.
PREEMPT_NAMESPACE = "rayline-preempt"


def preempt_key(run_id: str, node_id: str) -> bytes:
    return f"{run_id}/{node_id}".encode()


def preempted() -> bool:
    """True once rayline asked this task to give its resources to higher-priority work (a
    preemptible queue; ``launch/preemption.py``), or once Ray drains the node it runs on. Save what must not be lost, then raise
    ``rayline.errors.TaskPreempted`` (or carry on: the task is cancelled after the queue's grace
    period either way); the attempt ends PREEMPTED and the task runs again once admitted, so
    it should resume from what it saved. False outside a run or outside Ray.

    Example::

        for step in range(start, 1000):
            train_step()
            if context.preempted():
                save_checkpoint(step)
                raise TaskPreempted(f"stopped at step {step}")
    """
    ctx = _CURRENT.get()
    return ctx is not None and (preemption_requested(ctx.run_id, ctx.node_id) or node_draining())


def task_key() -> tuple[str, str] | None:
    """``(run_id, node_id)`` of the running task, for processes it starts (Ray Train workers) to
    ask ``preemption_requested`` on its behalf; None outside a run."""
    ctx = _CURRENT.get()
    return None if ctx is None else (ctx.run_id, ctx.node_id)


def preemption_requested(run_id: str, node_id: str) -> bool:
    """Whether node ``node_id`` of run ``run_id`` is asked to stop (any process of the cluster,
    e.g. a Ray Train worker, may ask)."""
    try:
        from ray.experimental import internal_kv as kv
    except ImportError:
        return False
    if not kv._internal_kv_initialized():
        return False
    return kv._internal_kv_exists(preempt_key(run_id, node_id), namespace=PREEMPT_NAMESPACE)


def node_draining() -> bool:
    """Whether Ray is draining the node this process runs on (a spot instance about to go, an
    idle node being removed: Ray's drain API), so that work on it should save and stop."""
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    try:
        from ray._private.state import state

        return ray.get_runtime_context().get_node_id() in state.get_draining_nodes()
    except Exception:  # a Ray without the drain API, or its GCS is gone: nothing to say
        return False


def _activate(ctx: TaskContext) -> Any:
    return _CURRENT.set(ctx)


def _deactivate(token: Any) -> None:
    _CURRENT.reset(token)
