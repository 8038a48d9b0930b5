"""Fan-out over values known only at run time: ``task.map(x)`` where ``x`` is an upstream
task's output, a flow parameter, or ``range()`` of flow parameters.

Such a map is recorded as one *map node* (``Node.mapped`` names the parameter that receives each
item); the engine expands it into one task per item (``square[0]``, ``square[1]``, …) once the
iterable is known, and the map node's own output is the list of the items' outputs, in order.

``range(n)`` of a ``ParamRef`` cannot return a placeholder (Python insists on an ``int``), so while
a flow is traced ``ParamRef.__index__`` hands out a large token int that the trace remembers;
``task.map`` turns a ``range`` holding tokens back into a ``DeferredRange``. Iterating such a
range in the flow body (``for i in range(n)``) is refused at the call site.
"""

from __future__ import annotations

import dis
import sys
from typing import Any

from rayline.errors import TracingError
from rayline.sdk.graph import DeferredRange, ParamRef, Ref
from rayline.sdk.tracing import active_trace, caller_location

_TOKEN_BASE = 1 << 60


def index_token(ref: ParamRef) -> int:
    """The int that stands for ``ref`` inside ``range(...)`` while a flow is traced."""
    trace = active_trace()
    if trace is None or not _deferrable_call_at(sys._getframe(2)):
        raise ref._refuse("range() or indexing outside task.map(range(...))")
    for token, known in trace.int_tokens.items():
        if known == ref:
            return token
    token = _TOKEN_BASE + len(trace.int_tokens)
    trace.int_tokens[token] = ref
    return token


def _deferrable_call_at(frame: Any) -> bool:
    """True when ``frame`` is calling a function (``range(n)``, not ``xs[n]``) whose result it
    does not iterate next (``for i in range(n)``): a token range must never be walked."""
    if frame is None:
        return False
    current = None
    for ins in dis.get_instructions(frame.f_code):
        if current is not None and ins.opname != "CACHE":
            return ins.opname != "GET_ITER"
        if ins.offset == frame.f_lasti:
            if not ins.opname.startswith(("CALL", "PRECALL")):
                return False
            current = ins
    return False


def deferred_source(iterable: Any) -> Any:
    """The placeholder to map over if ``iterable`` is known only at run time, else None."""
    if isinstance(iterable, Ref | ParamRef | DeferredRange):
        return iterable
    trace = active_trace()
    if isinstance(iterable, range) and trace is not None and trace.int_tokens:
        bounds = [trace.int_tokens.get(v, v) for v in (iterable.start, iterable.stop, iterable.step)]
        if any(isinstance(b, ParamRef) for b in bounds):
            return DeferredRange(*bounds)
    return None


def record_map(task: Any, first: str, source: Any, common: dict[str, Any]) -> Ref:
    """Record one map node of ``task`` over ``source``; its output is the list of results."""
    trace = active_trace()
    location = caller_location()
    if trace is None:
        raise TracingError(
            f"{location}: task '{task.name}'.map() over {source!r} works only inside a flow; "
            "outside one, pass a list"
        )
    try:
        bound = task.spec.signature.bind(**{first: source}, **common)
    except TypeError as exc:
        raise TracingError(
            f"{location}: flow '{trace.flow_name}', task '{task.name}'.map(): {exc}; "
            f"call it as {task.name}{task.spec.signature}"
        ) from None
    return trace.record(task.spec, tuple(bound.arguments.items()), location, mapped=first)
