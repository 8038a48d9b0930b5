"""``@flow``: a function whose body, traced once with placeholders, is the graph."""

from __future__ import annotations

import functools
import inspect
import os
import traceback
import typing
from collections.abc import Callable
from typing import Any

from rayline.errors import DefinitionError, TracingError
from rayline.sdk.graph import REQUIRED, Graph, Param, ParamRef, Ref, iter_refs
from rayline.sdk.hooks import as_hooks
from rayline.sdk.spec import definition_site
from rayline.sdk.subflows import call_subflow
from rayline.sdk.tracing import active_trace, end_trace, start_trace


class Flow:
    """A traced pipeline. Call ``graph()`` for its IR; ``rayline.run(flow, **params)`` runs it.
    Calling the flow directly runs its body as plain Python (tasks run as plain functions)."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None, schedule: Any = None,
                 on_failure: Any = None, on_success: Any = None, queue: str | None = None,
                 priority: int | None = None):  # fmt: skip
        self.fn = fn
        self.queue, self.priority = queue, priority
        self.name = name or fn.__name__
        self.schedule = schedule
        self.location = definition_site(fn)
        self.hooks, problems = as_hooks(on_failure, on_success)
        if problems:
            raise DefinitionError(f"{self.location}: flow '{self.name}': " + "; ".join(problems))
        self.source: str | None = None  # set by the loader: "path.py:attr"
        self._graph: Graph | None = None
        functools.update_wrapper(self, fn)
        self.params = self._params()

    def _params(self) -> tuple[Param, ...]:
        try:
            hints = typing.get_type_hints(self.fn)
        except Exception:
            hints = {}
        out = []
        for p in inspect.signature(self.fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise DefinitionError(
                    f"{self.location}: flow '{self.name}': *{p.name} parameters are not supported; "
                    "declare each flow parameter by name"
                )
            default = REQUIRED if p.default is p.empty else p.default
            out.append(Param(p.name, default, hints.get(p.name)))
        return tuple(out)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        trace = active_trace()
        if trace is not None:  # called inside another flow: a subflow of its run
            return call_subflow(self, trace, args, kwargs)
        return self.fn(*args, **kwargs)

    def graph(self) -> Graph:
        """Trace the body once (memoised) with a ``ParamRef`` for each parameter."""
        if self._graph is None:
            self._graph = self._trace()
        return self._graph

    def _trace(self) -> Graph:
        trace, token = start_trace(self.name)
        try:
            outputs = self.fn(**{p.name: ParamRef(p.name) for p in self.params})
        except TracingError as exc:
            raise TracingError(f"{_user_frame(exc)}flow '{self.name}': {exc}") from None
        finally:
            end_trace(token)
        known = {n.id for n in trace.nodes}
        for r in iter_refs(outputs):
            if isinstance(r, Ref) and r.node not in known:
                raise TracingError(f"{self.location}: flow '{self.name}' returns {r!r}, which it did not create")
        return Graph(
            name=self.name,
            nodes=tuple(trace.nodes),
            params=self.params,
            outputs=outputs,
            location=self.location,
            source=self.source,
            hooks=self.hooks or None,
            queue=self.queue,
            priority=self.priority,
        )

    def __repr__(self) -> str:
        return f"<Flow {self.name} at {self.location}>"


def _user_frame(exc: BaseException) -> str:
    sdk_dir = os.path.dirname(os.path.abspath(__file__))
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.dirname(os.path.abspath(f.filename)) != sdk_dir]
    if not frames:
        return ""
    f = frames[-1]
    return f"{f.filename}:{f.lineno}: "


def flow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    schedule: Any = None,
    on_failure: Any = None,
    on_success: Any = None,
    queue: str | None = None,
    priority: int | None = None,
) -> Any:
    """Declare a flow. Its parameters (with defaults and type hints) are the flow's parameters.

    ``on_failure`` / ``on_success``: a callable (or a list of them) called on the driver when a
    run ends FAILED or INTERRUPTED / SUCCEEDED, with the keyword arguments it names among
    ``run_id``, ``flow``, ``status``, ``error`` (whole) and ``run`` (see ``rayline.sdk.hooks``).
    A hook that fails is logged; it never changes the run's outcome.

    ``queue`` / ``priority``: where its runs wait for the cluster when queues are configured
    (``$RAYLINE_QUEUES``, see ``rayline.launch.queue_config``); a higher priority goes first.

    Example::

        @flow(on_failure=lambda *, run_id, error: print(run_id, error))
        def hello(n: int = 3):
            parts = [square(i) for i in range(3)]
            return total(parts)
    """

    def wrap(f: Callable[..., Any]) -> Flow:
        return Flow(f, name=name, schedule=schedule, on_failure=on_failure, on_success=on_success,
                    queue=queue, priority=priority)

    return wrap(fn) if fn is not None else wrap
