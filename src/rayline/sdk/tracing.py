"""Tracing: recording task calls made inside a flow body into nodes.

One ``ContextVar`` holds the active ``Trace``; nothing else is global.
"""

from __future__ import annotations

import os
import sys
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from rayline.errors import TracingError
from rayline.sdk.graph import Node, Ref, upstream_of
from rayline.sdk.spec import TaskSpec

_ACTIVE: ContextVar[Trace | None] = ContextVar("rayline_trace", default=None)
_SDK_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Trace:
    """The nodes recorded so far while tracing one flow."""

    flow_name: str
    nodes: list[Node] = field(default_factory=list)
    #: ints handed out for ``range(ParamRef)`` while tracing, mapped back by ``sdk.mapping``
    int_tokens: dict[int, Any] = field(default_factory=dict)
    #: node ids of the enclosing ``with rayline.when(...)`` blocks (``sdk.conditions``)
    conditions: list[str] = field(default_factory=list)
    #: namespaces of the subflow calls being traced (``sdk.subflows``), e.g. ``["train_all."]``
    prefixes: list[str] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=dict)

    def new_id(self, base: str) -> str:
        base = "".join(self.prefixes) + base
        n = self._counts.get(base, 0)
        self._counts[base] = n + 1
        return base if n == 0 else f"{base}-{n}"

    def record(
        self, spec: TaskSpec, args: tuple[tuple[str, Any], ...], location: str, mapped: str | None = None
    ) -> Ref:
        node_id = self.new_id(spec.name)
        when = tuple(dict.fromkeys(self.conditions))
        upstream = tuple(dict.fromkeys((*upstream_of(args), *when)))
        self.nodes.append(Node(node_id, spec, args, location, upstream, mapped, when))
        return Ref(node_id)


def active_trace() -> Trace | None:
    return _ACTIVE.get()


def start_trace(flow_name: str) -> tuple[Trace, Any]:
    if _ACTIVE.get() is not None:
        raise TracingError(
            f"flow '{flow_name}' was called while another flow is being traced; "
            "call its tasks directly instead of nesting flows"
        )
    trace = Trace(flow_name)
    return trace, _ACTIVE.set(trace)


def end_trace(token: Any) -> None:
    _ACTIVE.reset(token)


def caller_location() -> str:
    """``file:line`` of the first frame outside rayline's SDK (the user's call site)."""
    frame = sys._getframe(1)
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _SDK_DIR:
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"
