"""What the built-in tasks that wait without a CPU ask of the cluster: their ``Gang``s.

``train_torch`` starts ``num_workers`` Ray Train workers, all at once (one bundle each:
``resources_per_worker``, or one CPU plus one GPU with ``use_gpu``); ``tune`` runs up to
``max_concurrent`` trials at once, each alone able to make progress (``resources_per_trial``);
``rollout_if_promoted`` deploys ``num_replicas`` Serve replicas (``ray_actor_options`` each).
The compiler calls these with the call's arguments known at compile time
(``engine/demand.node_gang``), so that a training asking for GPUs a cluster does not have is
refused before it starts, and admission reserves the whole gang.

Example::

    train_gang({"num_workers": 2, "use_gpu": True, "resources_per_worker": None})
    # Gang(bundles=((("CPU", 1.0), ("GPU", 1.0)),) * 2, atomic=True, what="2 workers")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rayline.sdk.resources import Gang

__all__ = ["min_workers", "replica_gang", "train_gang", "trial_gang", "worker_resources"]


def worker_resources(use_gpu: bool, resources_per_worker: Mapping[str, float] | None) -> dict[str, float]:
    """One Train worker's Ray resources, as ``ScalingConfig`` reserves them."""
    per = {str(k): float(v) for k, v in (resources_per_worker or {"CPU": 1}).items()}
    if use_gpu:
        per.setdefault("GPU", 1.0)
    return per


def min_workers(num_workers: Any) -> int:
    """The workers a training needs, all at once (elastic ``(min, max)`` is not supported yet:
    refused here, at compile time, rather than when the task runs)."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"train_torch: num_workers must be an integer >= 1, got {num_workers!r}")
    return num_workers


def train_gang(args: Mapping[str, Any]) -> Gang:
    """``train_torch``'s worker group: every worker at once (a placement group, PACK)."""
    n = min_workers(args.get("num_workers", 1))
    per = worker_resources(bool(args.get("use_gpu")), args.get("resources_per_worker"))
    return Gang.of([per] * n, atomic=True, strategy="PACK", what=f"{n} worker{'s' if n != 1 else ''}")


def trial_gang(args: Mapping[str, Any]) -> Gang:
    """``tune``'s concurrent trials: up to ``min(max_concurrent, num_samples)``, each alone."""
    raw = args.get("resources_per_trial") or {"cpu": 1}
    per = {("CPU" if str(k).upper() == "CPU" else "GPU" if str(k).upper() == "GPU" else str(k)): float(v)
           for k, v in raw.items()}  # fmt: skip
    per.setdefault("CPU", 1.0)
    concurrent, samples = args.get("max_concurrent", 2), args.get("num_samples", 8)
    n = max(1, min(int(concurrent or 1), int(samples) if isinstance(samples, int) and samples > 0 else 1 << 30))
    return Gang.of([per] * n, atomic=False, what=f"{n} concurrent trial{'s' if n != 1 else ''}")


def replica_gang(args: Mapping[str, Any]) -> Gang:
    """``rollout_if_promoted``'s Serve replicas (``num_replicas``, or an autoscaling ``min``),
    each alone (``ray_actor_options``: half a CPU unless it says)."""
    serve = dict(args.get("serve_kwargs") or {})
    opts = dict(serve.get("ray_actor_options") or {})
    per = {"CPU": float(opts.get("num_cpus", 0.5)), "GPU": float(opts.get("num_gpus", 0) or 0),
           **{str(k): float(v) for k, v in (opts.get("resources") or {}).items()}}  # fmt: skip
    autoscaling = serve.get("autoscaling")
    n = int(autoscaling.get("min", 1)) if isinstance(autoscaling, Mapping) else int(serve.get("num_replicas", 1) or 1)
    return Gang.of([per] * max(n, 1), atomic=False, what=f"{n} serving replica{'s' if n != 1 else ''}")
