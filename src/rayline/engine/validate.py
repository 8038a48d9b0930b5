"""Compile-time checks. Each check is a small function that yields ``Problem``s; ``validate``
runs them all and raises one ``ValidationError`` holding every problem."""

from __future__ import annotations

import io
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from rayline.errors import Problem, ValidationError
from rayline.sdk.graph import Graph, Node, ParamRef, Ref, iter_refs
from rayline.sdk.secrets import Secret

ClusterNodes = list[dict[str, float]]  # per alive node: resource name -> total amount


def validate(graph: Graph, params: Mapping[str, Any], cluster: ClusterNodes | None = None) -> None:
    problems: list[Problem] = []
    for check in (check_params, check_references, check_cycles, check_types, check_serialisable,
                  check_runtime_envs):  # fmt: skip
        problems.extend(check(graph, params))
    if cluster is not None:
        problems.extend(check_resources(graph, cluster))
    if problems:
        raise ValidationError(problems)


def check_params(graph: Graph, params: Mapping[str, Any]) -> Iterator[Problem]:
    declared = {p.name: p for p in graph.params}
    for name in params:
        if name not in declared:
            known = ", ".join(declared) or "none"
            yield Problem(
                f"unknown parameter '{name}'",
                flow=graph.name,
                location=graph.location,
                hint=f"the flow's parameters are: {known}",
            )
    for p in graph.params:
        if p.required and p.name not in params:
            yield Problem(
                f"missing required parameter '{p.name}'",
                flow=graph.name,
                location=graph.location,
                hint=f"pass it, e.g. `-p {p.name}=VALUE` or run(flow, {p.name}=...)",
            )
        elif (p.name in params and p.annotation is not None and not isinstance(params[p.name], Secret)
              and not _isinstance(params[p.name], p.annotation)):  # fmt: skip
            yield Problem(
                f"parameter '{p.name}' expects {_type_name(p.annotation)}, got "
                f"{type(params[p.name]).__name__} {params[p.name]!r}",
                flow=graph.name,
                location=graph.location,
            )


def check_references(graph: Graph, params: Mapping[str, Any]) -> Iterator[Problem]:
    declared = {p.name for p in graph.params}
    seen: set[str] = set()
    ids = {n.id for n in graph.nodes}
    for node in graph.nodes:
        if node.id in seen:
            yield Problem(f"duplicate node id '{node.id}'", flow=graph.name, node=node.id, location=node.location)
        seen.add(node.id)
        for ref in _node_refs(node):
            unknown = _unknown_ref(ref, ids, declared)
            if unknown is not None:
                message, hint = unknown
                yield Problem(message, flow=graph.name, node=node.id, location=node.location, hint=hint)


def _unknown_ref(ref: Ref | ParamRef, ids: set[str], declared: set[str]) -> tuple[str, str] | None:
    """(what is wrong, how to fix it) when ``ref`` names no step or no parameter of the flow."""
    if isinstance(ref, Ref) and ref.node not in ids:
        return f"refers to unknown step '{ref.node}'", f"known steps: {', '.join(sorted(ids))}"
    if isinstance(ref, ParamRef) and ref.name not in declared:
        return (f"refers to unknown parameter '{ref.name}'",
                f"declared parameters: {', '.join(sorted(declared)) or 'none'}")  # fmt: skip
    return None


def _node_refs(node: Node) -> Iterator[Ref | ParamRef]:
    for _, v in node.args:
        yield from iter_refs(v)
    for u in node.upstream:
        yield Ref(u)


def check_cycles(graph: Graph, params: Mapping[str, Any]) -> Iterator[Problem]:
    ids = {n.id for n in graph.nodes}
    deps = {n.id: [u for u in n.upstream if u in ids] for n in graph.nodes}
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(deps, WHITE)
    for start in deps:
        if color[start] != WHITE:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(deps[start]))]
        path = [start]
        color[start] = GREY
        while stack:
            nid, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[nid] = BLACK
                stack.pop()
                path.pop()
            elif color[nxt] == GREY:
                cyc = path[path.index(nxt) :] + [nxt]
                cyc.reverse()  # print in data-flow order: a -> b means b uses a
                node = graph.node(nxt)
                yield Problem(
                    "cycle: " + " -> ".join(cyc),
                    flow=graph.name,
                    node=nxt,
                    location=node.location,
                    hint="a step cannot depend on its own output; break the loop",
                )
                return
            elif color[nxt] == WHITE:
                color[nxt] = GREY
                stack.append((nxt, iter(deps[nxt])))
                path.append(nxt)


def check_types(graph: Graph, params: Mapping[str, Any]) -> Iterator[Problem]:
    ids = {n.id for n in graph.nodes}
    for node in graph.nodes:
        hints = node.spec.type_hints
        for name, value in node.args:
            want = hints.get(name)
            if want is None or not isinstance(value, Ref) or value.node not in ids or name == node.mapped:
                continue  # a mapped argument receives the items of its value, unchecked
            up = graph.node(value.node)
            got = up.spec.type_hints.get("return")
            if up.mapped:  # a map node's output is the list of its items' outputs
                got = list if got is None else list[got]
            if got is None or _compatible(got, want):
                continue
            yield Problem(
                f"argument '{name}' expects {_type_name(want)} but step '{up.id}' returns "
                f"{_type_name(got)} (declared at {up.spec.location})",
                flow=graph.name,
                node=node.id,
                location=node.location,
                hint="make the annotations agree, or convert the value inside a task",
            )


def check_serialisable(graph: Graph, params: Mapping[str, Any]) -> Iterator[Problem]:
    import cloudpickle

    for label, value, node_id, location, hint in _shipped_values(graph, params):
        path = _unpicklable_path(value, label, cloudpickle)
        if path:
            yield Problem(f"cannot serialise {path}", flow=graph.name, node=node_id, location=location, hint=hint)


def _shipped_values(graph: Graph, params: Mapping[str, Any]) -> Iterator[tuple[str, Any, str | None, str, str | None]]:
    """(label, value, node id, location, hint) of each thing a run pickles: each task function
    once, the constant arguments, the parameters."""
    checked: set[int] = set()
    for node in graph.nodes:
        if id(node.spec.fn) not in checked:
            checked.add(id(node.spec.fn))
            yield (f"task function '{node.spec.name}'", node.spec.fn, node.id, node.spec.location,
                   "a task must not close over locks, sockets, connections or generators; create them "
                   "inside the task")  # fmt: skip
        for name, value in node.args:
            if not isinstance(value, Ref | ParamRef):
                yield (f"argument '{name}'", value, node.id, node.location,
                       "pass plain data (or a path/URL) and open the resource inside the task")  # fmt: skip
    for name, value in params.items():
        yield f"parameter '{name}'", value, None, graph.location, None


def _unpicklable_path(value: Any, label: str, cloudpickle: Any, depth: int = 0) -> str | None:
    """``None`` if ``value`` pickles; else the attribute path of the first leaf that does not."""
    if isinstance(value, Ref | ParamRef):
        return None
    try:
        cloudpickle.dump(value, io.BytesIO())
        return None
    except Exception as exc:
        reason = f"{type(value).__module__}.{type(value).__qualname__}"
        if depth > 6:
            return f"{label} ({reason}: {exc})"
    children: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        children = [(f"{label}[{k!r}]", v) for k, v in value.items()]
    elif isinstance(value, list | tuple | set | frozenset):
        children = [(f"{label}[{i}]", v) for i, v in enumerate(value)]
    elif callable(value) and getattr(value, "__closure__", None):
        names = value.__code__.co_freevars
        children = [(f"{label} closure variable '{n}'", c.cell_contents) for n, c in zip(names, value.__closure__, strict=False)]
        gl = getattr(value, "__globals__", {})
        children += [(f"{label} global '{n}'", gl[n]) for n in value.__code__.co_names if n in gl]
    elif callable(value) and hasattr(value, "__code__"):
        gl = getattr(value, "__globals__", {})
        children = [(f"{label} global '{n}'", gl[n]) for n in value.__code__.co_names if n in gl]
    elif hasattr(value, "__dict__"):
        children = [(f"{label}.{k}", v) for k, v in vars(value).items()]
    for child_label, child in children:
        found = _unpicklable_path(child, child_label, cloudpickle, depth + 1)
        if found:
            return found
    return f"{label} ({reason})"


def check_runtime_envs(graph: Graph, params: Mapping[str, Any]) -> Iterator[Problem]:
    """Obvious mistakes in a task's ``runtime_env`` (unknown keys, env_vars that are not
    strings, a malformed pip list, a working_dir that does not exist), once per task."""
    from rayline.sdk.runtime_env import runtime_env_problems

    seen: set[int] = set()
    for node in graph.nodes:
        env = node.spec.runtime_env
        if env is None or id(node.spec) in seen:
            continue
        seen.add(id(node.spec))
        for message, hint in runtime_env_problems(env):
            yield Problem(f"task '{node.spec.name}': {message}", flow=graph.name, node=node.id,
                          location=node.spec.location, hint=hint)  # fmt: skip


def check_resources(graph: Graph, cluster: ClusterNodes) -> Iterator[Problem]:
    """Each node's demand must fit on at least one alive node, ever (totals, not free now)."""
    known = set().union(*cluster) if cluster else set()
    summary = "; ".join(
        ", ".join(f"{k}={v:g}" for k, v in sorted(n.items()) if k in ("CPU", "GPU") or not _internal(k))
        for n in cluster
    )
    for node in graph.nodes:
        demand = node.spec.resources.demand()
        if any(all(n.get(k, 0.0) >= v for k, v in demand.items()) for n in cluster):
            continue
        unknown = [k for k in demand if k not in known]
        what = ", ".join(f"{k}={v:g}" for k, v in demand.items())
        msg = f"asks for {what}, which no node of the cluster can ever provide"
        if unknown:
            msg += f" (no node has resource {', '.join(repr(u) for u in unknown)})"
        yield Problem(
            msg,
            flow=graph.name,
            node=node.id,
            location=node.location,
            hint=f"cluster nodes: [{summary}]; lower the request or connect to a cluster that has it",
        )


def _internal(name: str) -> bool:
    return name.startswith("node:") or name in ("memory", "object_store_memory")


def _isinstance(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    if origin is typing.Union or str(origin) == "types.UnionType":
        return any(_isinstance(value, a) for a in typing.get_args(annotation))
    if annotation is Any or not isinstance(origin, type):
        return True
    if origin is float and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, origin)


def _compatible(got: Any, want: Any) -> bool:
    if want is Any or got is Any:
        return True
    want_args = typing.get_args(want) if (typing.get_origin(want) in (typing.Union, __import__("types").UnionType)) else None
    if want_args:
        return any(_compatible(got, w) for w in want_args)
    g, w = typing.get_origin(got) or got, typing.get_origin(want) or want
    if not isinstance(g, type) or not isinstance(w, type):
        return True
    if w is float and g is int:
        return True
    return issubclass(g, w)


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")
