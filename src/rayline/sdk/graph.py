"""The flow IR: ``Ref``, ``ParamRef``, ``Node``, ``Graph``.

A ``Graph`` is what tracing a Python flow (or loading a YAML flow) produces, and what the engine
compiles. It is plain data: nodes in the order they were recorded (a topological order for a
traced flow), each argument bound by parameter name to a constant, a ``Ref`` to an upstream node,
a ``ParamRef`` to a flow parameter, or a list/tuple/dict nesting those (fan-in).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from rayline.errors import TracingError
from rayline.sdk.nested import nested_values

if TYPE_CHECKING:
    from rayline.sdk.hooks import RunHooks
    from rayline.sdk.spec import TaskSpec

N = TypeVar("N")

REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()


class _Placeholder:
    """Behaviour shared by ``Ref`` and ``ParamRef``: any attempt to use the value at tracing
    time raises a ``TracingError`` that says to do it inside a task."""

    __slots__ = ()

    def _refuse(self, what: str) -> TracingError:
        return TracingError(
            f"{self!r} is a placeholder while the flow is traced, so it cannot be used for {what}. "
            "Branch, loop or compute on it inside a @task instead, and pass the result on."
        )

    def __bool__(self) -> bool:
        raise self._refuse("branching (if/while/and/or)")

    def __iter__(self) -> Iterator[Any]:
        raise self._refuse("iteration or unpacking")

    def __len__(self) -> int:
        raise self._refuse("len()")

    def __index__(self) -> int:
        raise self._refuse("range() or indexing")

    # ParamRef overrides __index__ so that ``task.map(range(n))`` can defer the range
    # (``rayline.sdk.mapping``).

    def __float__(self) -> float:
        raise self._refuse("arithmetic")

    def __repr__(self) -> str:  # Ref('train'), ParamRef('n'): each has one field
        return f"{type(self).__name__}({getattr(self, self.__match_args__[0])!r})"

    def __int__(self) -> int:
        raise self._refuse("arithmetic")

    def __lt__(self, other: Any) -> bool:
        raise self._refuse("comparison")

    __le__ = __gt__ = __ge__ = __lt__


@dataclass(frozen=True, slots=True, repr=False)
class Ref(_Placeholder):
    """The (future) output of node ``node``."""

    node: str


@dataclass(frozen=True, slots=True, repr=False)
class ParamRef(_Placeholder):
    """The value of flow parameter ``name``, bound at run time."""

    name: str

    def __index__(self) -> int:
        from rayline.sdk.mapping import index_token  # tracing sits above the IR

        return index_token(self)


@dataclass(frozen=True, slots=True)
class DeferredRange:
    """``range(start, stop, step)`` whose bounds are flow parameters (``ParamRef``) or ints,
    resolved when the plan is compiled: what ``task.map(range(n))`` maps over."""

    start: Any
    stop: Any
    step: Any = 1

    def resolve(self, params: dict[str, Any]) -> range:
        def value(v: Any) -> Any:
            return params[v.name] if isinstance(v, ParamRef) else v

        return range(value(self.start), value(self.stop), value(self.step))


@dataclass(frozen=True, slots=True)
class Param:
    """A flow parameter: name, default (``REQUIRED`` if none) and annotation (or None)."""

    name: str
    default: Any = REQUIRED
    annotation: Any = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    """One call of a task inside a flow."""

    id: str
    spec: TaskSpec
    args: tuple[tuple[str, Any], ...]
    location: str
    upstream: tuple[str, ...] = ()
    #: for a map node (``task.map`` over a run-time value): the parameter that receives each item;
    #: its argument is the iterable (a ``Ref``, a ``ParamRef`` or a ``DeferredRange``)
    mapped: str | None = None
    #: the nodes whose outputs must all be truthy for this node to run (``rayline.when``);
    #: otherwise it is SKIPPED, and so is everything downstream of it
    when: tuple[str, ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)


class NodeIndex(Generic[N]):
    """A graph's nodes by id: ``node(id)``, ``id in graph``, ``len(graph)``. The class holds
    ``nodes`` and an ``_index`` dict that ``__post_init__`` fills from them (a dataclass's
    ``_index`` field starts empty)."""

    __slots__ = ()
    nodes: tuple[N, ...]
    _index: dict[str, N]

    def __post_init__(self) -> None:
        if not self._index:
            self._index.update((n.id, n) for n in self.nodes)

    def node(self, node_id: str) -> N:
        return self._index[node_id]

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._index

    def __len__(self) -> int:
        return len(self.nodes)


@dataclass(frozen=True, slots=True, eq=False)
class Graph(NodeIndex[Node]):
    """A traced flow: nodes (topologically ordered when traced), outputs, parameters."""

    name: str
    nodes: tuple[Node, ...]
    params: tuple[Param, ...] = ()
    outputs: Any = None
    location: str = "<unknown>"
    source: str | None = None  # how to load it again: "path.py:flow" or "path.yaml"
    hooks: RunHooks | None = None  # called when a run ends (rayline.launch.notify)
    queue: str | None = None  # the admission queue its runs wait in (rayline.launch.queue_config)
    priority: int | None = None  # higher goes first; None: the queue's priority
    _index: dict[str, Node] = field(default_factory=dict, repr=False)

    def downstream(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {n.id: [] for n in self.nodes}
        for n in self.nodes:
            for u in n.upstream:
                if u in out:
                    out[u].append(n.id)
        return out

    def output_nodes(self) -> list[str]:
        return sorted({r.node for r in iter_refs(self.outputs) if isinstance(r, Ref)})

    def fingerprint(self) -> str:
        """A hash of the structure and code of the graph (not of parameter values)."""
        h = hashlib.sha256(self.name.encode())
        for n in self.nodes:
            h.update(json.dumps([n.id, n.spec.name, n.spec.code_hash, list(n.upstream), n.mapped, list(n.when)]).encode())
            h.update(describe_args(n.args).encode())
        return h.hexdigest()

    # Rendering lives in rayline.display (above this floor): it registers notebook display
    # of Graph and Flow with IPython (rayline.display.ipython), so nothing here imports it.


def iter_refs(value: Any) -> Iterator[Ref | ParamRef]:
    """Every ``Ref``/``ParamRef`` nested in lists, tuples and dicts of ``value`` (and in the
    bounds of a ``DeferredRange``)."""
    for v in nested_values(value):
        for x in (v.start, v.stop, v.step) if isinstance(v, DeferredRange) else (v,):
            if isinstance(x, Ref | ParamRef):
                yield x


def upstream_of(args: tuple[tuple[str, Any], ...]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for _, v in args:
        for r in iter_refs(v):
            if isinstance(r, Ref):
                seen.setdefault(r.node, None)
    return tuple(seen)


def describe_args(args: tuple[tuple[str, Any], ...]) -> str:
    """A stable text for arguments, for hashing: refs by name, constants by repr."""
    return repr([(k, _describe(v)) for k, v in args])


def _describe(v: Any) -> Any:
    if isinstance(v, Ref | ParamRef):
        return repr(v)
    if isinstance(v, list | tuple):
        return [type(v).__name__, [_describe(x) for x in v]]
    if isinstance(v, dict):
        return ["dict", [(repr(k), _describe(x)) for k, x in v.items()]]
    return repr(v)
