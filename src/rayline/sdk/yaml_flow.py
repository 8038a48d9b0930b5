"""Declarative flows: a YAML file loads into the same ``Graph`` as a traced ``@flow``.

::

    name: hello
    params:
      n: 3                                  # a default
      greeting: {default: "hi", type: str}
      seed: {type: int}                     # no default: required
    steps:
      load:
        uses: "hello_tasks:make_numbers"    # module:function, a @task or a plain function
        with: {n: "${params.n}"}
      square:
        uses: "hello_tasks:square_all"
        with: {xs: "${steps.load}"}         # the output of step `load`
        needs: [load]                       # ordering-only dependencies (optional)
        resources: {cpus: 1, gpus: 0}       # overrides the task's own options
        runtime_env: {env_vars: {MODE: fast}, pip: [termcolor]}   # Ray's, for this step
        retries: 2
        timeout: 30
        cache: true
    outputs: "${steps.square}"              # default: the steps nothing depends on
    on_failure: "hello_tasks:alert"         # hooks (one or a list), see rayline.sdk.hooks

A whole-string ``${params.x}`` becomes a ``ParamRef`` and ``${steps.id}`` a ``Ref``, also nested
inside lists and mappings of ``with:``. References embedded in longer strings are refused (build
strings inside a task); write ``$${`` for a literal ``${``.

Safety (see ``yaml_reader`` and ``yaml_uses``): only plain YAML values are built, duplicate keys,
size and depth are checked, and ``uses:`` imports only the flow's own project modules,
``rayline.tasks`` and modules listed in ``RAYLINE_ALLOWED_MODULES``. Every problem is reported at
once, each with its ``file:line``, as one ``SpecValidationError``.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayline.errors import DefinitionError, Problem
from rayline.sdk import yaml_compose as compose
from rayline.sdk.graph import Graph, Node, Param, ParamRef, Ref, iter_refs, upstream_of
from rayline.sdk.nested import nested_values
from rayline.sdk.toposort import toposort
from rayline.sdk.yaml_reader import Loc, SpecValidationError, YamlDocument, read_yaml
from rayline.sdk.yaml_run_options import step_runtime_env, yaml_hooks
from rayline.sdk.yaml_uses import UsesError, UsesResolver

if TYPE_CHECKING:
    from rayline.sdk.task import Task
    from rayline.sdk.yaml_schema import FlowDoc, StepSpec

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_REF = re.compile(r"^\$\{\s*([A-Za-z_][A-Za-z0-9_]*)\.([^{}\s]+)\s*\}$")
_EMBEDDED = re.compile(r"(?<!\$)\$\{")

__all__ = ["SpecValidationError", "load_yaml_flow"]


def load_yaml_flow(path: str | os.PathLike[str]) -> Graph:
    """Load a YAML flow file into a ``Graph`` (nodes in topological order, stable by file order).

    Example::

        graph = load_yaml_flow("configs/hello.yaml")
        [n.id for n in graph.nodes]   # ['load', 'sq1', 'sq2', 'sq3', 'total']

    Raises:
        SpecValidationError: (a ``SpecError`` and a ``ValidationError``) with every problem
            found: malformed or unsafe YAML, unknown keys, dangling references, cycles, modules
            that are not allowed or not importable, arguments that do not fit the function.
    """
    from rayline.sdk.yaml_schema import check_schema  # pydantic loads only when a file does

    doc = read_yaml(path)
    flow, problems = check_schema(doc, default_name=Path(path).stem)
    return _Loader(doc, flow, problems, UsesResolver(path)).graph(os.fspath(path))


class _Loader:
    """Turns a schema-checked ``FlowDoc`` into a ``Graph``, collecting every problem."""

    def __init__(
        self, doc: YamlDocument, flow: FlowDoc, problems: list[Problem], uses: UsesResolver
    ):
        self.doc, self.flow, self.problems, self.uses = doc, flow, problems, uses
        self.order = {sid: i for i, sid in enumerate(flow.steps)}
        raw_params = doc.data.get("params") if isinstance(doc.data, dict) else None
        self.param_names = set(raw_params) if isinstance(raw_params, dict) else set()

    def problem(
        self, message: str, loc: Loc, node: str | None = None, hint: str | None = None
    ) -> None:
        self.problems.append(
            Problem(
                message, flow=self.flow.name, node=node, location=self.doc.where(loc), hint=hint
            )
        )

    def graph(self, source: str) -> Graph:
        if not ID_PATTERN.match(self.flow.name):
            self.problem(f"flow name {self.flow.name!r} must match {ID_PATTERN.pattern}", ("name",))
        self._check_param_defaults()
        nodes: dict[str, tuple[Task, tuple[tuple[str, Any], ...]]] = {}
        upstream: dict[str, tuple[str, ...]] = {}
        mapped: dict[str, str | None] = {}
        whens: dict[str, tuple[str, ...]] = {}
        subflows: dict[str, tuple[list[Node], Any]] = {}
        for sid, spec in self.flow.steps.items():
            if not ID_PATTERN.match(sid):
                self.problem(
                    f"step id {sid!r} must match {ID_PATTERN.pattern}",
                    ("steps", sid),
                    sid,
                    hint="use letters, digits, '_', '-' and '.' (at most 128)",
                )
            if spec is None:  # its own problems are already reported
                upstream[sid] = ()
                continue
            kwargs = self._resolve(spec.with_, ("steps", sid, "with"), sid)
            sub = compose.subflow_graph(self.problem, sid, spec.uses, self.uses.resolve, self.doc.filename)
            if sub is not None:  # a whole flow, inlined under this step's id
                subflows[sid] = compose.inline(self.problem, sid, sub, kwargs)
                upstream[sid] = self._upstream(sid, spec, kwargs)
                continue
            task = self._task(sid, spec)
            if spec.map is not None and task is not None:
                items = self._resolve(spec.map, ("steps", sid, "map"), sid)
                mapped[sid] = compose.mapped_param(self.problem, sid, task, items, kwargs)
            args = self._bind(sid, task, kwargs) if task is not None else None
            if spec.if_ is not None:
                cond = self._resolve(spec.if_, ("steps", sid, "if"), sid)
                whens[sid] = compose.when_of(self.problem, sid, spec.if_, cond, self.order)
            upstream[sid] = tuple(dict.fromkeys((*self._upstream(sid, spec, kwargs), *whens.get(sid, ()))))
            if task is not None and args is not None:
                nodes[sid] = (task, args)
        order = self._toposort(upstream)
        outputs = self._outputs(upstream, order)
        hooks = yaml_hooks(self)
        if self.problems:
            problems = [replace(p, flow=p.flow or self.flow.name) for p in self.problems]
            raise SpecValidationError(sorted(problems, key=_line_of))
        steps = {
            sid: Node(sid, task.spec, args, self.doc.where(("steps", sid)), upstream[sid], mapped.get(sid), whens.get(sid, ()))
            for sid, (task, args) in nodes.items()
        }
        all_nodes, swap = compose.splice(order, steps, subflows)
        top = self.doc.data if isinstance(self.doc.data, dict) else {}
        return Graph(
            name=self.flow.name,
            nodes=tuple(all_nodes),
            params=tuple(Param(p.name, p.default, p.type) for p in self.flow.params.values()),
            outputs=swap(outputs),
            location=f"{self.doc.filename}:1",
            source=source,
            hooks=hooks,
            queue=top.get("queue"),  # validated by the schema check
            priority=top.get("priority"),
        )

    # -- steps ---------------------------------------------------------------------------------

    def _task(self, sid: str, spec: StepSpec) -> Task | None:
        from rayline.sdk.flow import Flow
        from rayline.sdk.task import Task, unwrap_task

        loc: Loc = ("steps", sid, "uses")
        try:
            obj = self.uses.resolve(spec.uses)
        except UsesError as exc:
            self.problem(exc.message, loc, sid, exc.hint)
            return None
        if isinstance(obj, Flow):
            self.problem(
                f"uses: {spec.uses!r} is a flow; a step must use a task or function", loc, sid
            )
            return None
        if not isinstance(obj, Task) and not inspect.isfunction(obj):
            self.problem(
                f"uses: {spec.uses!r} names an object of type {type(obj).__name__}, not a task or function",
                loc,
                sid,
            )
            return None
        task = unwrap_task(obj, location=self.doc.where(loc))
        options = _options(spec)
        if spec.runtime_env is not None:
            options["runtime_env"] = step_runtime_env(self, sid, spec.runtime_env)
        if not options:
            return task
        try:
            return task.with_options(**options)
        except DefinitionError as exc:
            self.problem(f"invalid options for task '{task.name}': {exc}", ("steps", sid), sid)
            return None

    def _bind(
        self, sid: str, task: Task, kwargs: dict[str, Any]
    ) -> tuple[tuple[str, Any], ...] | None:
        sig = task.spec.signature
        params = sig.parameters
        named = {
            n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        usage = f"{task.name}{sig}"
        ok = True
        for name in kwargs:
            if name not in named and not takes_any:
                close = difflib.get_close_matches(name, sorted(named), n=1)
                self.problem(
                    f"task '{task.name}' has no parameter '{name}'",
                    ("steps", sid, "with", name),
                    sid,
                    (f"did you mean '{close[0]}'? " if close else "") + f"it is {usage}",
                )
                ok = False
        for name, p in params.items():
            if name in named and p.default is p.empty and name not in kwargs:
                self.problem(
                    f"missing argument '{name}' for task '{task.name}'",
                    ("steps", sid, "with"),
                    sid,
                    f"add `{name}:` under `with:`; it is {usage}",
                )
                ok = False
        if not ok:
            return None
        try:
            return tuple(sig.bind(**kwargs).arguments.items())
        except TypeError as exc:
            self.problem(
                f"task '{task.name}': {exc}", ("steps", sid, "with"), sid, f"it is {usage}"
            )
            return None

    def _upstream(self, sid: str, spec: StepSpec, kwargs: dict[str, Any]) -> tuple[str, ...]:
        ups = dict.fromkeys(u for u in upstream_of(tuple(kwargs.items())) if u in self.order)
        for i, need in enumerate(spec.needs):
            m = _REF.match(need)
            name = m.group(2) if m and m.group(1) == "steps" else need
            if name in self.order:
                ups.setdefault(name, None)
            else:
                self.problem(
                    f"needs: unknown step '{name}'",
                    ("steps", sid, "needs", i),
                    sid,
                    self._closest_step(name),
                )
        return tuple(ups)

    # -- references ----------------------------------------------------------------------------

    def _resolve(self, value: Any, loc: Loc, sid: str | None) -> Any:
        if isinstance(value, str):
            return self._resolve_text(value, loc, sid)
        if isinstance(value, list):
            return [self._resolve(v, (*loc, i), sid) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self._resolve(v, (*loc, k), sid) for k, v in value.items()}
        return value

    def _resolve_text(self, text: str, loc: Loc, sid: str | None) -> Any:
        m = _REF.match(text)
        if m is not None:
            kind, name = m.groups()
            if kind == "params":
                if name not in self.param_names:
                    close = difflib.get_close_matches(name, sorted(self.param_names), n=1)
                    self.problem(
                        f"unknown parameter in {text!r}",
                        loc,
                        sid,
                        f"did you mean '{close[0]}'?" if close else "declare it under `params:`",
                    )
                return ParamRef(name)
            if kind == "steps":
                if name not in self.order:
                    self.problem(f"unknown step in {text!r}", loc, sid, self._closest_step(name))
                return Ref(name)
            self.problem(
                f"unknown reference kind '{kind}' in {text!r}",
                loc,
                sid,
                "use ${params.NAME} or ${steps.ID}",
            )
            return text
        if _EMBEDDED.search(text):
            self.problem(
                f"a reference inside a longer string is not supported: {text!r}",
                loc,
                sid,
                "pass the parameter or step output whole, and build the string inside "
                "a task (write $${ for a literal ${)",
            )
        return text.replace("$${", "${")

    def _closest_step(self, name: str) -> str:
        head = name.split(".")[0]
        if "." in name and head in self.order:
            return (
                f"a reference names a whole step's output; pass ${{steps.{head}}} and pick "
                "the part you need inside the task"
            )
        close = difflib.get_close_matches(name, list(self.order), n=1)
        return f"did you mean '{close[0]}'?" if close else "steps: " + ", ".join(self.order)

    def _check_param_defaults(self) -> None:
        for p in self.flow.params.values():
            if any(isinstance(v, str) and _EMBEDDED.search(v) for v in nested_values(p.default)):
                self.problem(
                    f"parameter '{p.name}': a default cannot contain a reference",
                    ("params", p.name),
                    hint="write $${ for a literal ${",
                )

    # -- order and outputs ---------------------------------------------------------------------

    def _toposort(self, upstream: dict[str, tuple[str, ...]]) -> list[str]:
        """Steps in a topological order, stable by file order; reports every cycle found."""
        order, cycles = toposort(upstream)
        for cycle in cycles:
            lines = ", ".join(f"{s}: line {self.doc.line(('steps', s))}" for s in cycle)
            path = " -> ".join([*cycle, cycle[0]])
            self.problem(
                f"steps depend on each other in a cycle: {path} ({lines})",
                ("steps", cycle[0]),
                cycle[0],
                "each arrow points from a step to a step that uses it; remove one dependency",
            )
        return order

    def _outputs(self, upstream: dict[str, tuple[str, ...]], order: list[str]) -> Any:
        if not self.flow.has_outputs:
            used = {u for ups in upstream.values() for u in ups}
            leaves = [Ref(sid) for sid in order if sid not in used]
            return leaves[0] if len(leaves) == 1 else leaves
        outputs = self._resolve(self.flow.outputs, ("outputs",), None)
        refs = list(iter_refs(outputs))
        constants = [v for v in nested_values(outputs) if not isinstance(v, Ref | ParamRef)]
        if constants or any(isinstance(r, ParamRef) for r in refs):
            self.problem(
                'outputs must be step references like "${steps.ID}" (or a list of them)',
                ("outputs",),
            )
        return outputs


def _options(spec: StepSpec) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if spec.resources is not None:
        for name in spec.resources.model_fields_set:
            opts["resources" if name == "custom" else name] = getattr(spec.resources, name)
    for name in ("retries", "cache", "persist"):
        if getattr(spec, name) is not None:
            opts[name] = getattr(spec, name)
    if "timeout" in spec.model_fields_set:
        opts["timeout"] = spec.timeout
    if spec.backoff is not None:
        opts["backoff"] = spec.backoff.model_dump()
    return opts


def _line_of(problem: Problem) -> int:
    tail = (problem.location or "").rsplit(":", 2)
    nums = [int(t) for t in tail[1:] if t.isdigit()]
    return nums[0] if nums else 0
