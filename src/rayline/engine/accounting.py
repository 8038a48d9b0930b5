"""What each task attempt held and for how long: the run store's accounting columns.

An attempt holds the resources of its planned Ray options (``num_cpus``, ``num_gpus``,
``memory``), plus those of the gang it starts from inside (``train_torch``'s workers, ``tune``'s
concurrent trials: ``PlannedNode.gang``), from the moment its worker starts it until it ends; ``cpu_seconds`` and
``gpu_seconds`` are those amounts times the attempt's run time. The runner passes each finished
task's update through ``with_usage`` before it records it, so accounting costs no extra
statement. Runs, flows and queues sum these columns (``store/usage.py``).

Example::

    update = with_usage(_update_from_meta(node_id, status, meta), plan.node(node_id))
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rayline.store.run_records import TaskUpdate


def held_resources(ray_options: dict[str, Any]) -> tuple[float, float, int | None]:
    """``(cpus, gpus, memory_bytes)`` a task submitted with ``ray_options`` holds while it runs."""
    memory = ray_options.get("memory")
    return (
        float(ray_options.get("num_cpus", 1) or 0),
        float(ray_options.get("num_gpus", 0) or 0),
        int(memory) if memory else None,
    )


def node_held(node: Any) -> tuple[float, float, int | None]:
    """``(cpus, gpus, memory_bytes)`` a ``PlannedNode`` holds while it runs: its own Ray options
    plus its gang's bundles."""
    cpus, gpus, memory = held_resources(node.ray_options)
    gang = getattr(node, "gang", None)
    if gang is None:
        return cpus, gpus, memory
    totals = gang.totals()
    extra = int(totals.get("memory", 0))
    return (cpus + totals.get("CPU", 0.0), gpus + totals.get("GPU", 0.0),
            (memory or 0) + extra if (memory or extra) else None)  # fmt: skip


def with_usage(update: TaskUpdate, node: Any) -> TaskUpdate:
    """``update`` with every attempt carrying what ``node`` (a ``PlannedNode``) held and, where
    the attempt's start and end are known, its CPU- and GPU-seconds."""
    if not update.attempts:
        return update
    cpus, gpus, memory = node_held(node)
    attempts = []
    for a in update.attempts:
        ran = (a.ended_at - a.started_at).total_seconds() if a.started_at and a.ended_at else None
        attempts.append(replace(
            a, cpus=cpus, gpus=gpus, memory_bytes=memory,
            cpu_seconds=None if ran is None else round(cpus * ran, 3),
            gpu_seconds=None if ran is None else round(gpus * ran, 3),
        ))  # fmt: skip
    return replace(update, attempts=tuple(attempts))
