"""rayline: a Ray-native workflow engine for machine learning.

Define flows with ``@flow``/``@task`` (or YAML), run them with ``rayline.run`` or the
``rayline`` CLI. Importing rayline does not import Ray.
"""

from __future__ import annotations

import sys
from typing import Any

from rayline.errors import (
    DefinitionError,
    RaylineError,
    RunCancelledError,
    RunFailedError,
    TracingError,
    ValidationError,
)
from rayline.sdk.conditions import when
from rayline.sdk.flow import Flow, flow
from rayline.sdk.graph import Graph, Node, Param, ParamRef, Ref
from rayline.sdk.resources import Backoff, Resources, RetryPolicy
from rayline.sdk.secrets import Secret
from rayline.sdk.task import Task, task

__version__ = "0.1.0"


def _show_in_notebooks() -> None:
    # Inside IPython (a Jupyter kernel), graphs and flows display themselves; the SDK cannot
    # do this itself, as display sits above it. Outside IPython this imports nothing.
    if "IPython" in sys.modules:
        from rayline.display.ipython import install_in_running_shell

        install_in_running_shell()


_show_in_notebooks()

_API = {"run", "resume", "load_run", "load_flow", "cancel", "list_runs", "Run"}
_LAZY_MODULES = {"context"}


def __getattr__(name: str) -> Any:
    # The engine (and Ray) load only when a flow is actually run.
    if name in _API:
        from rayline import api

        return getattr(api, name)
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f"rayline.{name}")
    raise AttributeError(f"module 'rayline' has no attribute {name!r}")


__all__ = [
    "Backoff",
    "DefinitionError",
    "Flow",
    "Graph",
    "Node",
    "Param",
    "ParamRef",
    "RaylineError",
    "Ref",
    "Resources",
    "RetryPolicy",
    "Run",
    "RunCancelledError",
    "RunFailedError",
    "Secret",
    "Task",
    "TracingError",
    "ValidationError",
    "cancel",
    "flow",
    "list_runs",
    "load_flow",
    "load_run",
    "resume",
    "run",
    "task",
    "when",
]
