"""Running a conditional node (``rayline.when`` / YAML ``if:``): its condition values arrive as
one more argument, and a ``Guarded`` function ends it SKIPPED ("branch not taken") without
calling the task when one of them is falsy. The runner counts such SKIPPED nodes, and those
downstream of them, as done: the run still SUCCEEDS."""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any

from rayline.errors import SkipRun
from rayline.sdk.spec import TaskSpec

NOT_TAKEN = "branch not taken"
WHEN_ARG = "_rayline_when"


class Guarded:
    """``fn``, called only when every value passed as ``_rayline_when`` is truthy."""

    def __init__(self, fn: Any, conditions: tuple[str, ...]):
        self.fn = fn
        self.conditions = conditions
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        extra = inspect.Parameter(WHEN_ARG, inspect.Parameter.KEYWORD_ONLY)
        at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
        self.__signature__ = sig.replace(parameters=[*params[:at], extra, *params[at:]])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        values = kwargs.pop(WHEN_ARG)
        for node_id, value in zip(self.conditions, values, strict=True):
            if not value:
                raise SkipRun(f"{NOT_TAKEN}: '{node_id}' gave {value!r:.80}")
        return self.fn(*args, **kwargs)


def guarded_spec(spec: TaskSpec, conditions: tuple[str, ...]) -> TaskSpec:
    """``spec`` whose function checks ``conditions`` first; same name, code hash, signature."""
    memo = {"code_hash": spec.code_hash, "signature": spec.signature, "hints": spec.type_hints}
    return replace(spec, fn=Guarded(spec.fn, conditions), _memo=memo)


def not_taken(meta: dict[str, Any]) -> bool:
    """Whether a SKIPPED node's meta says its condition was falsy."""
    return str(meta.get("skip_reason", "")).startswith(NOT_TAKEN)
