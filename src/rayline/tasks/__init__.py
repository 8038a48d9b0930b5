"""rayline's built-in tasks. Loaded lazily: ``import rayline.tasks`` imports neither Ray nor
pyarrow; ``from rayline.tasks import read_parquet`` imports only the module that defines it.

Example::

    from rayline import flow
    from rayline.tasks import read_parquet

    @flow
    def churn(path: str = "data/churn/"):
        return read_parquet(path, columns=["age", "plan", "churned"])
"""

from __future__ import annotations

from rayline._lazy import lazy_exports

# Public task name -> the module that defines it (extend this table when adding a task module).
_TASKS: dict[str, str] = {
    "read_parquet": "rayline.tasks.ingest",
    "fit_features": "rayline.tasks.features",
    "apply_features": "rayline.tasks.features",
    "split": "rayline.tasks.evaluation",
    "evaluate": "rayline.tasks.evaluation",
    "train_torch": "rayline.tasks.train",
    "train_sklearn": "rayline.tasks.train",
    "tune": "rayline.tasks.tuning",
    "register_model": "rayline.tasks.registry",
    "gate_and_promote": "rayline.tasks.gate",
    "rollout_if_promoted": "rayline.tasks.gate",
}


__getattr__, __dir__ = lazy_exports(__name__, _TASKS, noun="task")
__all__ = sorted(_TASKS)
