"""Graph -> Plan: validate, merge options (task defaults < config < CLI), resolve parameters,
decide persistence and Ray options per node, hash the result."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rayline.engine.conditions import WHEN_ARG, guarded_spec
from rayline.engine.demand import check_gangs, node_gang
from rayline.engine.validate import ClusterNodes, validate
from rayline.errors import DefinitionError, Problem, ValidationError
from rayline.sdk.graph import DeferredRange, Graph, Node, NodeIndex, ParamRef, Ref
from rayline.sdk.nested import map_nested
from rayline.sdk.resources import Gang
from rayline.sdk.secrets import Secret
from rayline.sdk.spec import TaskSpec
from rayline.sdk.task import Task


@dataclass(frozen=True, slots=True)
class Slot:
    """Position ``index`` in a node's list of upstream inputs."""

    index: int


@dataclass(frozen=True, slots=True, eq=False)
class PlannedNode:
    """One node, ready to submit: its spec, an argument template in which every ``Ref`` is a
    ``Slot`` into ``inputs`` and every ``ParamRef`` is its value, Ray options, persistence."""

    id: str
    spec: TaskSpec
    template: tuple[tuple[str, Any], ...]
    inputs: tuple[str, ...]
    ray_options: dict[str, Any]
    persist: bool
    location: str
    #: a map node not yet expanded (``engine/expand.py``): the parameter that receives each item
    mapped: str | None = None
    #: the Train workers / Tune trials it starts from inside (``engine/demand.py``)
    gang: Gang | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Plan(NodeIndex[PlannedNode]):
    graph: Graph
    params: dict[str, Any]
    nodes: tuple[PlannedNode, ...]
    plan_hash: str
    downstream: dict[str, list[str]] = field(default_factory=dict)
    _index: dict[str, PlannedNode] = field(default_factory=dict, repr=False)

    def jsonable_params(self) -> dict[str, Any]:
        """Parameter values as the run store records them (``repr`` for non-JSON values; a
        ``Secret`` as its reference, ``{"$secret": NAME}``, never its value)."""
        out: dict[str, Any] = {}
        for k, v in self.params.items():
            if isinstance(v, Secret):
                out[k] = v.to_json()
                continue
            try:
                json.dumps(v)
                out[k] = v
            except TypeError:
                out[k] = repr(v)
        return out

    def descendants(self, node_id: str) -> set[str]:
        out: set[str] = set()
        stack = [node_id]
        while stack:
            for d in self.downstream.get(stack.pop(), ()):
                if d not in out:
                    out.add(d)
                    stack.append(d)
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "flow": self.graph.name,
                "source": self.graph.source,
                "outputs": encode_outputs(self.graph.outputs),
                "nodes": [
                    {
                        "id": n.id,
                        "task": n.spec.qualified_name,
                        "code_hash": n.spec.code_hash,
                        "inputs": list(n.inputs),
                        "ray_options": n.ray_options,
                        "retries": n.spec.retry.retries,
                        "timeout": n.spec.timeout,
                        "cache": n.spec.cache.enabled,
                        "persist": n.persist,
                        "location": n.location,
                        **({"gang": [dict(b) for b in n.gang.bundles]} if n.gang else {}),
                    }
                    for n in self.nodes
                ],
            },
            sort_keys=True,
            default=str,
        )


def compile_plan(
    graph: Graph,
    params: Mapping[str, Any] | None = None,
    *,
    cluster: ClusterNodes | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    persist_all: bool = True,
) -> Plan:
    """Check everything that can be checked before running and produce the ``Plan``.

    ``overrides`` maps a node id or a task name to ``@task`` options (from a config file or the
    CLI), applied over the task's own defaults. Raises ``ValidationError`` with every problem.
    """
    given = dict(params or {})
    if overrides:
        graph = _apply_overrides(graph, overrides)
    validate(graph, given, cluster)
    values = {p.name: given.get(p.name, p.default) for p in graph.params}
    outputs = set(graph.output_nodes())
    map_sources = {r.node for n in graph.nodes if n.mapped for r in [n.kwargs[n.mapped]] if isinstance(r, Ref)}
    nodes = []
    problems: list[Problem] = []
    for node in graph.nodes:
        spec = node.spec
        slots: dict[str, int] = {u: i for i, u in enumerate(node.upstream)}
        template = tuple((k, _template(v, slots, values)) for k, v in node.args)
        try:
            gang = node_gang(spec, template, is_known=lambda v: not isinstance(v, Slot))
        except (TypeError, ValueError) as exc:
            problems.append(Problem(str(exc), flow=graph.name, node=node.id, location=node.location))
            gang = None
        if node.when:  # runs only when its conditions hold (engine/conditions.py)
            spec = guarded_spec(spec, node.when)
            template = (*template, (WHEN_ARG, [Slot(slots[w]) for w in node.when]))
        nodes.append(
            PlannedNode(
                id=node.id,
                spec=spec,
                template=template,
                inputs=node.upstream,
                ray_options=ray_options(spec),
                # the driver reads a map's iterable from the artifact store to expand the map
                persist=persist_all or spec.persist or spec.cache.enabled or node.id in outputs | map_sources,
                location=node.location,
                mapped=node.mapped,
                gang=gang,
            )
        )
    if cluster is not None:
        problems.extend(check_gangs(nodes, cluster, flow=graph.name))
    if problems:
        raise ValidationError(problems)
    h = hashlib.sha256(graph.fingerprint().encode())
    h.update(json.dumps(values, sort_keys=True, default=repr).encode())
    plan = Plan(graph, values, tuple(nodes), h.hexdigest()[:16], graph.downstream())
    return expand_static_maps(plan)


def expand_static_maps(plan: Plan) -> Plan:
    """Expand the map nodes whose iterable is known now (flow parameters, constants)."""
    from rayline.engine.expand import expand_map  # expand builds on this module's types

    for node in plan.nodes:
        if node.mapped and not isinstance(source := dict(node.template)[node.mapped], Slot):
            plan = expand_map(plan, node.id, source)
    return plan


def encode_outputs(value: Any) -> Any:
    """The flow's outputs as JSON: each ``Ref`` becomes ``{"$ref": node_id}``."""
    if isinstance(value, Ref):
        return {"$ref": value.node}
    if isinstance(value, list | tuple):
        return [encode_outputs(v) for v in value]
    if isinstance(value, dict):
        return {"$dict": [[str(k), encode_outputs(v)] for k, v in value.items()]}
    if isinstance(value, ParamRef):
        return {"$param": value.name}
    return {"$const": repr(value)} if value is not None else None


def _template(value: Any, slots: dict[str, int], params: dict[str, Any]) -> Any:
    def fill(v: Any) -> Any:
        if isinstance(v, Ref):
            return Slot(slots[v.node])
        if isinstance(v, ParamRef):
            return params[v.name]
        if isinstance(v, DeferredRange):
            return v.resolve(params)
        return v

    return map_nested(value, fill)


def ray_options(spec: TaskSpec) -> dict[str, Any]:
    opts = spec.resources.ray_options()
    opts["max_retries"] = spec.retry.max_worker_retries
    opts["retry_exceptions"] = False  # the user's exceptions are retried by rayline, with backoff
    if spec.runtime_env:
        opts["runtime_env"] = spec.runtime_env  # its own worker (never the warm pool)
    return opts


def _apply_overrides(graph: Graph, overrides: Mapping[str, Mapping[str, Any]]) -> Graph:
    known_keys = {n.id for n in graph.nodes} | {n.spec.name for n in graph.nodes}
    unknown = [k for k in overrides if k not in known_keys and k != "*"]
    if unknown:
        raise DefinitionError(
            f"flow '{graph.name}': options given for unknown node(s) {', '.join(map(repr, unknown))}; "
            f"nodes are: {', '.join(sorted(known_keys))}"
        )
    new_nodes = []
    for n in graph.nodes:
        opts: dict[str, Any] = {}
        for key in ("*", n.spec.name, n.id):
            opts.update(overrides.get(key, {}))
        if opts:
            spec = Task(n.spec).with_options(**opts).spec
            n = Node(n.id, spec, n.args, n.location, n.upstream, n.mapped)
        new_nodes.append(n)
    return Graph(graph.name, tuple(new_nodes), graph.params, graph.outputs, graph.location, graph.source,
                 hooks=graph.hooks)
