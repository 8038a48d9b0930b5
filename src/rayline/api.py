"""The Python entry points: ``run``, ``resume``, ``load_run``, ``load_flow`` and ``Run``.

This is where settings, stores and the executor are assembled for one call; nothing here is
global. The CLI and notebooks use exactly these functions.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rayline.config import Settings
from rayline.engine.compiler import Plan, compile_plan
from rayline.errors import DefinitionError, UsageError
from rayline.sdk.flow import Flow
from rayline.sdk.graph import Graph
from rayline.store.states import RunStatus, TaskStatus


# ---------------------------------------------------------------------------- loading flows
def load_flow(target: str | Path) -> Graph:
    """Load ``path.py[:flow]`` or ``path.yaml`` into a ``Graph`` (traced once)."""
    text = str(target)
    path_s, _, attr = text.partition(":") if not Path(text).exists() else (text, "", "")
    path = Path(path_s)
    if not path.exists():
        raise UsageError(f"no such flow file: {path_s}")
    if path.suffix in (".yaml", ".yml"):
        from rayline.sdk.yaml_flow import load_yaml_flow

        return load_yaml_flow(path)
    if path.suffix != ".py":
        raise UsageError(f"{path}: a flow is a .py file (with @flow) or a .yaml file")
    module = _import_file(path)
    flows = {name: obj for name, obj in vars(module).items() if isinstance(obj, Flow)}
    if attr:
        chosen = flows.get(attr) or next((f for f in flows.values() if f.name == attr), None)
        if chosen is None:
            raise UsageError(f"{path}: no flow named '{attr}'; flows here: {', '.join(flows) or 'none'}")
    elif len(flows) == 1:
        attr, chosen = next(iter(flows.items()))
    else:
        raise UsageError(
            f"{path} defines {len(flows)} flows ({', '.join(flows) or 'none'}); "
            f"pick one with {path}:NAME"
        )
    chosen.source = f"{path}:{attr}"
    chosen._graph = None
    return chosen.graph()


def _import_file(path: Path) -> Any:
    path = path.resolve()
    name = f"rayline_flow_{path.stem}_{abs(hash(str(path))) % 10**8}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    parent = str(path.parent)
    if parent not in sys.path:
        # Appended, not prepended: the flow's sibling modules become importable without a
        # file such as numbers.py there ever shadowing the standard library (for this process
        # and for the processes it spawns, which inherit sys.path).
        sys.path.append(parent)
    try:
        spec.loader.exec_module(module)
    except DefinitionError:
        sys.modules.pop(name, None)
        raise
    except Exception as exc:
        sys.modules.pop(name, None)
        raise DefinitionError(f"{path}: importing the flow file failed: {type(exc).__name__}: {exc}") from exc
    return module


def _as_graph(flow: Flow | Graph | str | Path) -> Graph:
    if isinstance(flow, Graph):
        return flow
    if isinstance(flow, Flow):
        return flow.graph()
    return load_flow(flow)


# ---------------------------------------------------------------------------- assembling
class Engine:
    """Settings + stores + executor for one call (a context manager that closes them)."""

    def __init__(self, settings: Settings | None = None, executor: Any = None, address: str | None = None):
        from rayline.store.artifacts import ArtifactStore
        from rayline.store.runs import RunStore

        self.settings = settings or Settings()
        home = self.settings.resolved_home
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.runs = RunStore(self.settings.run_store_url)
        self.artifacts = ArtifactStore.open(home)
        self.keep_store_open = False
        self._executor_arg = executor
        self._address = address or self.settings.ray_address

    def executor(self) -> Any:
        ex = self._executor_arg
        if ex is None or ex == "ray":
            from rayline.engine.executors.ray import RayExecutor

            ex = RayExecutor(
                self._address,
                num_cpus=self.settings.num_cpus,
                object_store_memory=self.settings.object_store_memory,
                pool=self.settings.pool,
                ray_dir=self.settings.ray_dir,
            )
        elif ex == "local":
            from rayline.engine.executors.local import LocalExecutor

            ex = LocalExecutor()
        ex.start()
        return ex

    def runner(self, executor: Any, on_event: Any = None, *, slot: str | None = None) -> Any:
        """A ``Runner`` on this engine's stores. ``slot``: how its ``resume`` takes the run over
        through the flow's slot, ``"start"`` for a reserved run (``FlowSlots.start``) or
        ``"resume"`` for a run being resumed (``FlowSlots.resume``); None: no slot."""
        from rayline.engine.runner import Runner

        store = self.runs
        if slot is not None:
            from rayline.store.slots import FlowSlots, SlotGuardedStore

            slots = FlowSlots(self.runs, self.settings.lease_ttl)
            store = SlotGuardedStore(self.runs, slots, resuming=slot == "resume")
        return Runner(
            store,
            self.artifacts,
            executor,
            lease_ttl=self.settings.lease_ttl,
            heartbeat_interval=self.settings.heartbeat_interval,
            inline_limit=self.settings.inline_limit,
            on_event=on_event,
        )

    def compile(self, graph: Graph, params: Mapping[str, Any], executor: Any, overrides: Any = None) -> Plan:
        return compile_plan(
            graph,
            params,
            cluster=executor.cluster_nodes(),
            overrides=overrides,
            persist_all=self.settings.persist == "all",
        )

    def close(self) -> None:
        if not self.keep_store_open:  # a Run handed out still reads from it
            self.runs.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------- public API
def run(
    flow: Flow | Graph | str | Path,
    params: Mapping[str, Any] | None = None,
    *,
    executor: Any = None,
    address: str | None = None,
    settings: Settings | None = None,
    run_key: str | None = None,
    trigger: dict[str, Any] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    on_event: Any = None,
    overlap: str | None = None,
    **param_kwargs: Any,
) -> Run:
    """Compile and run a flow; returns the finished ``Run`` (check ``run.status``).

    ``overlap`` (``skip``, ``queue`` or ``allow``; ``rayline run`` passes the flow's declared
    policy, default ``skip``) runs it through the flow's slot, so that overlapping calls never
    run the flow twice at once: under ``skip`` a busy flow gives a SKIPPED ``Run`` at once
    (its ``error`` names the run holding the slot), under ``queue`` the call waits its turn
    (see ``rayline.triggers.launch.run_in_slot``). Without it the run starts regardless.

    Example::

        run = rayline.run(hello, n=5)          # local Ray started on demand
        run.result()                           # the flow's outputs
        rayline.run(hello, overlap="skip")     # SKIPPED while another run of hello is going
    """
    graph = _as_graph(flow)
    all_params = {**(params or {}), **param_kwargs}
    with Engine(settings, executor, address) as eng:
        if overlap is not None:
            from rayline.triggers.launch import run_in_slot

            run_id = run_in_slot(eng, graph, all_params, overlap=overlap, overrides=overrides, run_key=run_key,
                                 trigger=trigger, on_event=on_event, executor=executor, address=address)  # fmt: skip
            return Run.load(eng, run_id, graph=graph)
        ex = eng.executor()
        plan = eng.compile(graph, all_params, ex, overrides)
        outcome = eng.runner(ex, on_event).run(plan, run_key=run_key, trigger=trigger)
        return Run.load(eng, outcome.run_id, graph=graph)


def resume(
    run_id: str,
    *,
    executor: Any = None,
    address: str | None = None,
    settings: Settings | None = None,
    on_event: Any = None,
) -> Run:
    """Re-run only the tasks of ``run_id`` that did not succeed (after a failure, a cancel, or
    the death of the driver); succeeded outputs are adopted after their checksums verify.

    A run started under an overlap policy (``rayline run``, schedules, triggers) takes its
    flow's slot back, so a resume never runs beside another live run of the flow.

    Raises:
        FlowBusyError: another run of the flow holds its slot; nothing was changed.
    """
    with Engine(settings, executor, address) as eng:
        record = eng.runs.find_run(run_id)
        if not record.source:
            raise UsageError(f"run {record.run_id} has no recorded source to load the flow from")
        graph = load_flow(record.source)
        ex = eng.executor()
        plan = eng.compile(graph, record.params, ex)
        eng.runner(ex, on_event, slot="resume").resume(plan, record.run_id)
        return Run.load(eng, record.run_id, graph=graph)


def load_run(run_id: str, *, settings: Settings | None = None) -> Run:
    """The recorded state of a run (prefix of the id accepted)."""
    with Engine(settings, executor="local") as eng:
        eng.runs.mark_interrupted_if_stale(eng.runs.find_run(run_id).run_id, eng.settings.lease_ttl)
        return Run.load(eng, eng.runs.find_run(run_id).run_id)


class Run:
    """A recorded run: status, per-task states and attempts, outputs. Renders in Jupyter."""

    def __init__(self, record: Any, runs: Any, artifacts: Any, graph: Graph | None = None):
        self.record = record
        self.graph = graph
        self._runs = runs
        self._artifacts = artifacts
        self._tasks: list[Any] | None = None
        self._attempts: list[Any] | None = None
        self._plan: dict[str, Any] | None = None

    @classmethod
    def load(cls, eng: Engine, run_id: str, graph: Graph | None = None) -> Run:
        # Details (tasks, attempts, plan) are read on first use; the Run keeps the store.
        eng.keep_store_open = True
        return cls(eng.runs.get_run(run_id), eng.runs, eng.artifacts, graph)

    @property
    def tasks(self) -> list[Any]:
        if self._tasks is None:
            self._tasks = self._runs.get_tasks(self.run_id)
        return self._tasks

    @property
    def attempts(self) -> list[Any]:
        if self._attempts is None:
            self._attempts = self._runs.get_attempts(self.run_id)
        return self._attempts

    @property
    def plan(self) -> dict[str, Any]:
        if self._plan is None:
            text = self._runs.get_plan(self.record.plan_hash)
            self._plan = json.loads(text) if text else {}
        return self._plan

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def status(self) -> RunStatus:
        return self.record.status

    @property
    def flow_name(self) -> str:
        return self.record.flow_name

    @property
    def error(self) -> str | None:
        return self.record.error

    @property
    def succeeded(self) -> bool:
        return self.status.ok

    @property
    def warnings(self) -> list[str]:
        return list(self.record.counters.get("warnings", []))

    @property
    def counters(self) -> dict[str, float]:
        return dict(self.record.counters.get("counters", {}))

    def task(self, node_id: str) -> Any:
        return next(t for t in self.tasks if t.node_id == node_id)

    def output(self, node_id: str) -> Any:
        """The stored output of one task (verified against its checksum)."""
        t = self.task(node_id)
        if not t.digest:
            raise UsageError(f"run {self.run_id}: task '{node_id}' has no stored output ({t.status})")
        return self._artifacts.get(t.digest)

    def result(self) -> Any:
        """The flow's return value, loaded from the artifact store."""
        if not self.status.ok:
            raise UsageError(f"run {self.run_id} is {self.status}, so it has no result: {self.error or ''}")
        return self._decode(self.plan.get("outputs"))

    def _decode(self, v: Any) -> Any:
        if isinstance(v, list):
            return [self._decode(x) for x in v]
        if isinstance(v, dict):
            if "$ref" in v:
                return self.output(v["$ref"])
            if "$dict" in v:
                return {k: self._decode(x) for k, x in v["$dict"]}
            if "$param" in v:
                return self.record.params.get(v["$param"])
            if "$const" in v:
                return v["$const"]
        return v

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tasks:
            out[t.status.value] = out.get(t.status.value, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "run_id": r.run_id,
            "flow": r.flow_name,
            "status": r.status.value,
            "error": r.error,
            "params": r.params,
            "source": r.source,
            "run_key": r.run_key,
            "created_at": _iso(r.created_at),
            "ended_at": _iso(r.ended_at),
            "counts": self.counts(),
            "warnings": self.warnings,
            "counters": self.counters,
            "tasks": [
                {
                    "node_id": t.node_id,
                    "status": t.status.value,
                    "attempts": t.attempts,
                    "started_at": _iso(t.started_at),
                    "ended_at": _iso(t.ended_at),
                    "error": t.error_message,
                    "digest": t.digest,
                }
                for t in self.tasks
            ],
        }

    def _repr_html_(self) -> str:
        from rayline.notebook import run_html

        d = self.to_dict()
        tasks = []
        for t in self.tasks:
            dur = (t.ended_at - t.started_at).total_seconds() if t.ended_at and t.started_at else None
            tasks.append({"node_id": t.node_id, "status": t.status.value, "attempts": t.attempts,
                          "duration_s": dur, "error": t.error_message})
        return run_html({"run_id": d["run_id"], "flow_name": d["flow"], "status": d["status"],
                         "started_at": d["created_at"], "ended_at": d["ended_at"], "tasks": tasks,
                         "graph": self.graph})

    def __repr__(self) -> str:
        return f"<Run {self.run_id} {self.flow_name} {self.status.value} {self.counts()}>"


def _iso(dt: Any) -> str | None:
    return dt.isoformat() if dt else None


__all__ = ["Run", "TaskStatus", "load_flow", "load_run", "resume", "run"]
