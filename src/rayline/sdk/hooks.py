"""Run hooks: callables a flow declares to be told when one of its runs ends.

``@flow(on_failure=notify_team, on_success=[tag_release, log_metrics])`` (or ``on_failure:
"module:function"`` in a YAML flow). A hook takes keyword arguments only, and any subset of
``run_id``, ``flow``, ``status``, ``error`` and ``run`` (the run's stored record), as a pluggy
hook implementation does; ``**kwargs`` receives them all. The signature is checked when the flow
is defined, and ``rayline.launch`` calls the hooks on the driver once the run's final state is
committed (``rayline.launch.notify``).

Example::

    def page_oncall(*, run_id, flow, error):
        pager.send(f"{flow} run {run_id} failed: {error}")

    @flow(on_failure=page_oncall)
    def nightly(): ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

HOOK_ARGUMENTS = ("run_id", "flow", "status", "error", "run")

__all__ = ["HOOK_ARGUMENTS", "RunHooks", "as_hooks", "call_hook", "hook_problem"]


@dataclass(frozen=True, slots=True)
class RunHooks:
    """The hooks of one flow: called after a run ends FAILED or INTERRUPTED (``on_failure``),
    or SUCCEEDED (with or without warnings; ``on_success``)."""

    on_failure: tuple[Callable[..., Any], ...] = ()
    on_success: tuple[Callable[..., Any], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.on_failure or self.on_success)

    def for_status(self, status: str) -> tuple[Callable[..., Any], ...]:
        """The hooks to call for a run that ended in ``status`` (a ``RunStatus`` value)."""
        if status in ("FAILED", "INTERRUPTED"):
            return self.on_failure
        if status in ("SUCCEEDED", "SUCCEEDED_WITH_WARNINGS"):
            return self.on_success
        return ()


def as_hooks(on_failure: Any = None, on_success: Any = None) -> tuple[RunHooks, list[str]]:
    """``RunHooks`` from what ``@flow`` was given (None, one callable, or a list of them) and
    the problems found, one line each (empty when every hook is usable)."""
    problems: list[str] = []
    chosen: dict[str, tuple[Callable[..., Any], ...]] = {}
    for kind, value in (("on_failure", on_failure), ("on_success", on_success)):
        items = () if value is None else (value,) if callable(value) or isinstance(value, str) else value
        if not isinstance(items, Iterable):
            problems.append(f"{kind} must be a callable or a list of callables, got {value!r}")
            items = ()
        hooks = []
        for h in items:
            problem = hook_problem(h)
            if problem:
                problems.append(f"{kind} hook {_name(h)}: {problem}")
            else:
                hooks.append(h)
        chosen[kind] = tuple(hooks)
    return RunHooks(**chosen), problems


def hook_problem(hook: Any) -> str | None:
    """Why ``hook`` cannot be called as a hook (None when it can)."""
    if not callable(hook):
        return f"{hook!r} is not callable"
    try:
        sig = inspect.signature(hook)
    except (TypeError, ValueError):
        return None  # a builtin without a signature: it will be called with no arguments
    for p in sig.parameters.values():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        required = p.default is p.empty
        if p.kind is p.POSITIONAL_ONLY and required:
            return f"parameter '{p.name}' is positional-only; hooks receive keyword arguments"
        if p.name not in HOOK_ARGUMENTS and required:
            return (f"parameter '{p.name}' is not one a hook receives; "
                    f"take any of {', '.join(HOOK_ARGUMENTS)} (or **kwargs)")  # fmt: skip
    return None


def call_hook(hook: Callable[..., Any], available: Mapping[str, Any]) -> Any:
    """Call ``hook`` with the keyword arguments of ``available`` that it accepts."""
    try:
        params = inspect.signature(hook).parameters.values()
    except (TypeError, ValueError):
        return hook()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return hook(**available)
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return hook(**{k: v for k, v in available.items() if k in names})


def _name(hook: Any) -> str:
    return repr(getattr(hook, "__qualname__", None) or hook)
