"""Preemption: higher-priority work that cannot fit takes the place of lower-priority work that
runs in a preemptible queue (``preemptible: true`` in ``configs/queues.yaml``).

Both sides are drivers taking admission turns (``admission_queue.AdmissionBook.turn``):

1. The driver of the waiting task (next in line, the cluster full) picks victims with
   ``choose_victims``: held reservations of lower priority in preemptible queues, lowest
   priority and latest arrival first, just enough that its task fits once they are gone; it
   marks them in the table (``held = 2``).
2. The victim's driver sees its task in ``Decision.preempt`` and asks it to stop
   (``ask_to_stop``: a key in Ray's key-value store, which ``rayline.context.preempted()``
   reads on any node). The task saves its state and raises ``TaskPreempted``, or is cancelled
   once the queue's ``preempt_grace_s`` has passed.
3. Either way the attempt is recorded PREEMPTED (``preempted_attempt``), the task's
   reservation waits again in its old place, and it runs again once admitted, resuming from
   what it saved. Outputs already committed are untouched.

Example::

    victims = choose_victims(rows, {"cpus": 2, "gpus": 0, "memory_bytes": 0}, queues.queue, waiting)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from rayline.launch.queue_config import QueueSpec
from rayline.store.reservations import Reservation

_KEYS = ("cpus", "gpus", "memory_bytes")


def choose_victims(rows: Sequence[Reservation], capacity: dict[str, float],
                   queue_of: Callable[[str], QueueSpec], wants: Reservation) -> list[Reservation]:  # fmt: skip
    """The held reservations to preempt so that ``wants`` fits; [] when it cannot fit even
    then (or fits already once the preemptions asked before end)."""
    free = dict(capacity)
    for r in rows:
        if r.held and not r.preempt:
            for k in _KEYS:
                free[k] -= getattr(r, k)
    if _fits(wants, free):
        return []  # what was asked before frees enough: wait for it
    candidates = [r for r in rows if r.held and not r.preempt and r.run_id != wants.run_id
                  and r.priority < wants.priority and queue_of(r.queue).preemptible]  # fmt: skip
    candidates.sort(key=lambda r: (r.priority, -r.arrival, -r.seq))
    chosen: list[Reservation] = []
    for r in candidates:
        if not any(getattr(r, k) > 0 and getattr(wants, k) > 0 for k in _KEYS):
            continue  # frees nothing the waiting task needs
        chosen.append(r)
        for k in _KEYS:
            free[k] += getattr(r, k)
        if _fits(wants, free):
            return chosen
    return []


def _fits(r: Reservation, free: dict[str, float]) -> bool:
    return all(free[k] >= getattr(r, k) - 1e-9 for k in _KEYS if getattr(r, k))


def ask_to_stop(run_id: str, node_id: str) -> None:
    """Make ``rayline.context.preempted()`` true for that task, wherever it runs."""
    from ray.experimental import internal_kv as kv

    from rayline.context import PREEMPT_NAMESPACE, preempt_key

    kv._internal_kv_put(preempt_key(run_id, node_id), str(time.time()).encode(), namespace=PREEMPT_NAMESPACE)


def forget(run_id: str, node_id: str) -> None:
    """The task was requeued: its next attempt is not preempted."""
    from ray.experimental import internal_kv as kv

    from rayline.context import PREEMPT_NAMESPACE, preempt_key

    if kv._internal_kv_initialized():
        kv._internal_kv_del(preempt_key(run_id, node_id), namespace=PREEMPT_NAMESPACE)


def preempted_attempt(meta: dict[str, Any] | None, submitted: float, by: str | None) -> dict[str, Any]:
    """The PREEMPTED attempt record of a task that stopped (``meta``: what its worker returned,
    None when it was cancelled) after being submitted at ``submitted``."""
    ran = [a for a in (meta or {}).get("attempts") or () if a.get("started")]
    started = ran[0]["started"] if ran else submitted
    return {"attempt": 1, "status": "PREEMPTED", "started": started, "ended": time.time(),
            "error_type": "rayline.errors.TaskPreempted",
            "error_message": f"preempted{f' by {by}' if by else ''}: gave its resources to higher-priority "
                             "work; queued again"}  # fmt: skip


def with_preempted(meta: dict[str, Any], earlier: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``meta`` with the ``earlier`` PREEMPTED attempts first, every attempt numbered after them."""
    if not earlier:
        return meta
    k = len(earlier)
    own = [{**a, "attempt": int(a.get("attempt", 1)) + k} for a in meta.get("attempts") or ()]
    return {**meta, "attempts": [{**a, "attempt": i + 1} for i, a in enumerate(earlier)] + own}
