"""The YAML steps that compose others: ``map:`` (one task per item of a value), ``if:`` (run
only when a step's output is truthy) and ``uses:`` of a whole flow (a ``.yaml`` flow file, or a
``module:flow``), inlined as a subflow whose nodes are namespaced under the step (``train.fit``).

A subflow step's output is the subflow's outputs: ``${steps.train}`` in a later step refers to
them, and ``needs: [train]`` waits for all of the subflow's nodes. Its ``with:`` binds the
subflow's parameters; an unknown or missing one is a problem reported with the step's line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rayline.errors import DefinitionError
from rayline.sdk.graph import DeferredRange, Graph, Node, ParamRef, Ref, iter_refs, upstream_of
from rayline.sdk.nested import map_nested

Report = Callable[..., None]  # the loader's problem(message, loc, node, hint)


def mapped_param(report: Report, sid: str, task: Any, items: Any, kwargs: dict[str, Any]) -> str | None:
    """Put a ``map:`` value (already resolved) under the task's first parameter; its name."""
    first = next(iter(task.spec.signature.parameters), None)
    if first is None or first in kwargs:
        why = "takes no parameters" if first is None else f"gets '{first}' from `with:` already"
        report(
            f"task '{task.name}' {why}, so it cannot be mapped", ("steps", sid, "map"), sid,
            "`map:` passes each item as the task's first parameter",
        )  # fmt: skip
        return None
    kwargs[first] = items
    return first


def when_of(report: Report, sid: str, text: str, resolved: Any, steps: dict[str, int]) -> tuple[str, ...]:
    """The step that an ``if:`` (already resolved) names."""
    if isinstance(resolved, Ref):
        return (resolved.node,) if resolved.node in steps else ()  # an unknown step is reported
    report(
        f"if: {text!r} must name a step's output", ("steps", sid, "if"), sid,
        'write `if: "${steps.check}"`; to test a parameter, return it from a step',
    )  # fmt: skip
    return ()


def subflow_graph(report: Report, sid: str, uses: str, resolve: Callable[[str], Any], here: str) -> Graph | None:
    """The graph of the flow a step ``uses:`` (a ``.yaml`` file beside this one, or a
    ``module:flow``); None when it names a task (or nothing: ``_task`` reports that)."""
    from rayline.sdk.flow import Flow

    try:
        if uses.endswith((".yaml", ".yml")):  # loaded as any YAML flow is
            from rayline.sdk.yaml_flow import load_yaml_flow

            path = (Path(here).parent / uses).resolve()
            if path == Path(here).resolve():
                raise DefinitionError(f"{uses!r} is this flow itself")
            return load_yaml_flow(path)
        obj = resolve(uses)
        return obj.graph() if isinstance(obj, Flow) else None
    except DefinitionError as exc:
        report(f"uses: subflow {uses!r} cannot be loaded: {exc}", ("steps", sid, "uses"), sid)
    except Exception:  # noqa: BLE001 - not resolvable as a flow: _task reports what is wrong
        pass
    return None


def inline(report: Report, sid: str, sub: Graph, bindings: dict[str, Any]) -> tuple[list[Node], Any]:
    """``sub``'s nodes renamed under ``sid.``, its parameters replaced by ``bindings``; and its
    outputs, renamed the same way."""
    names = {p.name for p in sub.params}
    for name in sorted(set(bindings) - names):
        report(f"subflow '{sub.name}' has no parameter '{name}'", ("steps", sid, "with", name), sid,
               f"its parameters are: {', '.join(sorted(names)) or 'none'}")  # fmt: skip
    for p in sub.params:
        if p.required and p.name not in bindings:
            report(f"missing parameter '{p.name}' for subflow '{sub.name}'", ("steps", sid, "with"), sid,
                   f"add `{p.name}:` under `with:`")  # fmt: skip
    values = {p.name: bindings.get(p.name, p.default) for p in sub.params}

    def rename_ref(v: Any) -> Any:
        if isinstance(v, Ref):
            return Ref(f"{sid}.{v.node}")
        if isinstance(v, ParamRef):
            return values.get(v.name, v)
        return v

    def rename(v: Any) -> Any:
        return _map_refs(v, rename_ref)

    nodes = []
    for n in sub.nodes:
        args = tuple((k, rename(v)) for k, v in n.args)
        ups = tuple(dict.fromkeys([*upstream_of(args), *(f"{sid}.{u}" for u in n.upstream)]))
        nodes.append(Node(f"{sid}.{n.id}", n.spec, args, n.location, ups, n.mapped, tuple(f"{sid}.{w}" for w in n.when)))
    return nodes, rename(sub.outputs)


def splice(order: list[str], steps: dict[str, Node], subflows: dict[str, tuple[list[Node], Any]]) -> tuple[list[Node], Callable[[Any], Any]]:
    """The graph's nodes in ``order``, each subflow step replaced by its nodes, and a function
    that rewrites a reference to a subflow step into the subflow's outputs."""
    aliases = {sid: out for sid, (_, out) in subflows.items()}
    members = {sid: [n.id for n in nodes] for sid, (nodes, _) in subflows.items()}

    def swap(v: Any) -> Any:
        return _map_refs(v, lambda r: aliases[r.node] if isinstance(r, Ref) and r.node in aliases else r)

    def ids(step: str, outputs_only: bool = False) -> list[str]:
        if step not in aliases:
            return [step]
        return [r.node for r in iter_refs(aliases[step]) if isinstance(r, Ref)] if outputs_only else members[step]

    out = []
    for sid in order:
        for n in subflows[sid][0] if sid in subflows else [steps[sid]] if sid in steps else []:
            args = tuple((k, swap(v)) for k, v in n.args)
            ups = dict.fromkeys([*upstream_of(args), *(i for u in n.upstream for i in ids(u))])
            when = tuple(i for w in n.when for i in ids(w, outputs_only=True))
            out.append(Node(n.id, n.spec, args, n.location, tuple(ups), n.mapped, when))
    return out, swap


def _map_refs(v: Any, f: Callable[[Any], Any]) -> Any:
    """``v`` with ``f`` applied to each value nested in it, a ``DeferredRange``'s bounds too."""

    def leaf(x: Any) -> Any:
        return DeferredRange(f(x.start), f(x.stop), f(x.step)) if isinstance(x, DeferredRange) else f(x)

    return map_nested(v, leaf)
