"""The model registry: a small protocol (``protocol.Registry``) and its SQL backend (``sql``).

``open_registry`` is how rayline gets a registry; code that takes one types it as ``Registry``,
so another backend (MLflow) is one new module and one line here. The records it returns
(``ModelVersion``, ``AliasEvent``, ``ModelSummary``) are in ``records``. Importing this package
opens nothing.

Example::

    from rayline.models.registry import open_registry

    with open_registry() as reg:                       # RAYLINE_HOME's registry
        mv = reg.get("churn", alias="production")
        model = reg.load(mv)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayline.models.registry.records import (
    AliasEvent,
    ModelNotFoundError,
    ModelSummary,
    ModelVersion,
    parse_ref,
)

if TYPE_CHECKING:
    from rayline.models.registry.sql import ModelRegistry

__all__ = [
    "AliasEvent",
    "ModelNotFoundError",
    "ModelSummary",
    "ModelVersion",
    "home_from_context",
    "open_registry",
    "parse_ref",
]


def open_registry(settings_or_home: Any = None, *, connect: bool = True, store: Any = None) -> ModelRegistry:
    """The registry of ``settings_or_home`` (a ``Settings``, a path, or None for RAYLINE_HOME).

    A registry given instead is returned as it is, so that callers can pass either. Inside a task
    declared ``@task(registry=True)``, None gives the task's copy of the registry, whose changes
    the driver commits with the task's success (``task_view``): a Ray worker never opens the
    database. With
    ``connect=False`` its database is opened on first use: a process that only ``load``s a
    ``ModelVersion`` it was given (a serving replica) never opens it. ``store``: the artifact
    store of the models' bytes (a running task passes its run's store, which names the artifact
    URL); by default the settings' ``RAYLINE_ARTIFACTS_URL``.
    """
    from rayline.models.registry.protocol import Registry
    from rayline.models.registry.sql import ModelRegistry

    if isinstance(settings_or_home, Registry):
        return settings_or_home  # type: ignore[return-value]
    if settings_or_home is None:  # inside a task declared @task(registry=True): its copy
        from rayline import context
        from rayline.models.registry.task_view import task_registry

        copy = task_registry(home_from_context(context.current()))
        if copy is not None:
            return copy
    return ModelRegistry(settings_or_home, connect=connect, store=store)


def home_from_context(ctx: Any) -> Path | None:
    """The running task's RAYLINE_HOME (its artifact store's parent), or None."""
    root = getattr(getattr(ctx, "store", None), "root", None)
    if root is not None and Path(root).name == "artifacts":
        return Path(root).parent  # the run's own RAYLINE_HOME, also on a Ray worker
    return None
