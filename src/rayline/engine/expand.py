"""Expanding a map node (``task.map`` over a run-time value) into one node per item.

A map node ``square`` over a list of ``k`` items becomes the nodes ``square[0]`` …
``square[k-1]`` (the task, each with its item as a constant argument) and a *collect* node that
keeps the id ``square`` and returns the items' outputs as a list, in order; nodes downstream of
``square`` are unchanged. A map over flow parameters is expanded by the compiler; a map over an
upstream task's output by the runner, once that output is stored (``expand_ready``). Each item
is a task record of its own, so it has its own attempts, retries, cache entry and resume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from rayline.engine.compiler import Plan, PlannedNode, Slot, ray_options
from rayline.sdk.nested import map_nested
from rayline.sdk.spec import TaskSpec


def collect_items(items: list[Any]) -> list[Any]:
    """The output of an expanded map node: its items' outputs, in order."""
    return list(items)


def refuse_map(message: str) -> None:
    """The output of a map node whose iterable is not iterable: a task failure that says so."""
    raise TypeError(message)


def expand_map(plan: Plan, node_id: str, iterable: Any) -> Plan:
    """``plan`` with map node ``node_id`` replaced by one node per item and a collect node."""
    m = plan.node(node_id)
    try:
        items = list(iterable)
    except TypeError:
        message = (
            f"{m.location}: task '{m.spec.name}'.map() needs an iterable (a list, a range, …), "
            f"got {type(iterable).__name__}: {iterable!r:.200}"
        )
        return _replace(plan, m, [_node(m, "map", refuse_map, (("message", message),), ())])
    shared, inputs = _reslot({k: v for k, v in m.template if k != m.mapped}, m.inputs)  # the mapped argument is no input now
    expanded = []
    for i, item in enumerate(items):
        template = tuple((k, item if k == m.mapped else shared[k]) for k, _ in m.template)
        expanded.append(replace(m, id=f"{m.id}[{i}]", template=template, inputs=inputs, mapped=None))
    template = (("items", [Slot(i) for i in range(len(items))]),)
    expanded.append(_node(m, "collect", collect_items, template, tuple(n.id for n in expanded)))
    return _replace(plan, m, expanded)


def expand_ready(
    plan: Plan, done: Callable[[str], bool], digests: dict[str, str], artifacts: Any
) -> tuple[Plan, list[str]]:
    """Expand every map node whose inputs are all ``done``, reading its iterable from the
    artifact store (``digests``: node id -> stored output). Returns the plan and the new ids."""
    new: list[str] = []
    while True:
        # (a map node that is itself done was adopted whole by a resume: nothing to expand)
        m = next((n for n in plan.nodes if n.mapped and not done(n.id) and all(done(u) for u in n.inputs)), None)
        if m is None:
            return plan, new
        slot = dict(m.template)[m.mapped]
        before = {n.id for n in plan.nodes}
        plan = expand_map(plan, m.id, artifacts.get(digests[m.inputs[slot.index]]))
        new += [n.id for n in plan.nodes if n.id not in before]


def base_node_id(node_id: str) -> str:
    """The plan's node id of an item (``square[3]`` -> ``square``), else ``node_id`` itself."""
    while node_id.endswith("]") and "[" in node_id:
        head, _, index = node_id[:-1].rpartition("[")
        if not index.isdigit():
            break
        node_id = head
    return node_id


def _node(m: PlannedNode, what: str, fn: Callable[..., Any], template: Any, inputs: tuple[str, ...]) -> PlannedNode:
    spec = TaskSpec(name=f"{m.spec.name}.{what}", fn=fn, location=m.location)
    return PlannedNode(m.id, spec, template, inputs, ray_options(spec), m.persist, m.location)


def _replace(plan: Plan, m: PlannedNode, new: list[PlannedNode]) -> Plan:
    nodes: list[PlannedNode] = []
    for n in plan.nodes:
        nodes.extend(new if n.id == m.id else [n])
    downstream: dict[str, list[str]] = {n.id: [] for n in nodes}
    for n in nodes:
        for u in n.inputs:
            if u in downstream and n.id not in downstream[u]:
                downstream[u].append(n.id)
    return Plan(plan.graph, plan.params, tuple(nodes), plan.plan_hash, downstream)


def _reslot(template: dict[str, Any], inputs: tuple[str, ...]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Keep only the inputs that ``template`` (less the mapped argument) refers to, renumbering
    its slots."""
    used: dict[int, int] = {}

    def walk(v: Any) -> Any:
        return Slot(used.setdefault(v.index, len(used))) if isinstance(v, Slot) else v

    out = {k: map_nested(v, walk) for k, v in template.items()}
    return out, tuple(inputs[old] for old, _ in sorted(used.items(), key=lambda kv: kv[1]))
