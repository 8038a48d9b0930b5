"""The registry a task sees on its worker: a private copy of the driver's rows.

A task declared ``@task(registry=True)`` (``register_model``, ``gate_and_promote``,
``rollout_if_promoted``) receives the registry's rows from the driver with its call
(``TaskContext.registry_rows``). ``open_registry()`` inside it returns a ``ModelRegistry`` over a
scratch SQLite copy of those rows in a temporary folder of the worker, so registering, promoting,
rolling back and serving's deployment records behave exactly as on the real database. At the end
of the attempt the engine asks the copy what changed (``writes``) and sends that back with the
result; the driver commits it with the task's success (``rayline.store.model_writes``). The
model's bytes go to the artifact store (the run's, under ``RAYLINE_ARTIFACTS_URL``) before the
task returns. The run store's database is never opened on the worker.

Example::

    view = TaskRegistryView(ctx.registry_rows, settings, ctx.store)
    view.registry.register("churn", model)
    view.writes()    # [{"op": "version", "row": {...}}]
    view.close()
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from rayline import context
from rayline.config import Settings
from rayline.models.registry.sql import ModelRegistry
from rayline.store import schema
from rayline.store.model_schema import MODEL_TABLES
from rayline.store.model_writes import diff_model_rows, model_rows
from rayline.store.runs import RunStore
from rayline.store.sql import sqlite_url

__all__ = ["TaskRegistryView", "task_registry"]


class TaskRegistryView:
    """A scratch copy of the registry's ``rows`` and a ``ModelRegistry`` (``registry``) on it."""

    def __init__(self, rows: dict[str, Any], settings: Settings, store: Any) -> None:
        self._rows = rows
        self._dir = Path(tempfile.mkdtemp(prefix="rayline-registry-"))
        try:
            self._runs = RunStore(sqlite_url(self._dir / "copy.db"), task_copy=True)
            with self._runs.transaction() as conn:
                for name in MODEL_TABLES:
                    if rows.get(name):
                        conn.execute(insert(schema.metadata.tables[name]), list(rows[name]))
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self.registry = ModelRegistry(settings, runs=self._runs, store=store)

    def writes(self) -> list[dict[str, Any]]:
        """What the task changed, as ``model_writes`` the driver applies."""
        with self._runs.transaction(read=True) as conn:
            return diff_model_rows(self._rows, model_rows(conn))

    def close(self) -> None:
        """Drop the copy."""
        self._runs.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def task_registry(home_of_ctx: Any = None) -> ModelRegistry | None:
    """The running task's registry copy (made on first use in the attempt), or None when no task
    runs or it was not declared ``@task(registry=True)``."""
    ctx = context.current()
    if ctx is None or ctx.registry_rows is None:
        return None
    if ctx.registry_view is None:
        settings = Settings(home=home_of_ctx) if home_of_ctx is not None else Settings()
        ctx.registry_view = TaskRegistryView(ctx.registry_rows, settings, ctx.store)
    return ctx.registry_view.registry
