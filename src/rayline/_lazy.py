"""Lazy package exports (PEP 562): a package names each export's defining module, and the module
is imported on first use, so ``import rayline.tasks`` stays cheap (no Ray, no pyarrow).

Example::

    # rayline/tasks/__init__.py
    _TASKS = {"read_parquet": "rayline.tasks.ingest"}
    __getattr__, __dir__ = lazy_exports(__name__, _TASKS, noun="task")
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    module_name: str, table: Mapping[str, str], *, noun: str | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` for ``table`` (export name -> defining module).

    Args:
        module_name: the package's ``__name__``.
        table: each lazy export and the module that defines it (under the same name).
        noun: what the table holds (``"task"``); given, a missing name's error lists them all.
    """

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is not None:
            return getattr(importlib.import_module(module), name)
        if noun is None:
            raise AttributeError(f"module '{module_name}' has no attribute {name!r}")
        raise AttributeError(
            f"module '{module_name}' has no {noun} {name!r}; {noun}s: {', '.join(sorted(table))}"
        )

    def __dir__() -> list[str]:
        # The package's public API: its lazy exports and whatever else its __all__ names.
        return sorted(set(table) | set(getattr(sys.modules[module_name], "__all__", ())))

    return __getattr__, __dir__


def import_object(ref: str, what: str = "object") -> Any:
    """The object a ``"package.module:attribute"`` reference names (dotted attributes allowed).

    The one place that turns such a string into an object: features' batch functions, model
    estimators, dask-ml classes and trigger kinds all go through it.

    Raises:
        ValueError: ``ref`` is not of the form ``module:attribute`` (the message names ``what``).
        ImportError / AttributeError: the module or attribute does not exist.
    """
    module, _, name = str(ref).partition(":")
    if not module or not name:
        raise ValueError(f"{what}: name it as 'package.module:attribute', got {ref!r}")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj
