"""The Python verbs: ``run``, ``resume``, ``load_run``, ``cancel``, ``list_runs``, ``load_flow``
and the ``Run`` handle.

Every verb enters through ``rayline.launch`` (the one admission path): a ``Session`` holds the
settings, stores and executor for one call; nothing here is global. The CLI and notebooks use
exactly these functions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rayline.config import Settings
from rayline.errors import UsageError
from rayline.launch.flow_files import load_flow
from rayline.launch.session import Session
from rayline.sdk.flow import Flow
from rayline.sdk.graph import Graph
from rayline.store.states import RunStatus, TaskStatus


def _as_graph(flow: Flow | Graph | str | Path) -> Graph:
    if isinstance(flow, Graph):
        return flow
    if isinstance(flow, Flow):
        return flow.graph()
    return load_flow(flow)


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
    (see ``rayline.launch.admission.admit``). Without it the run starts regardless.

    Example::

        run = rayline.run(hello, n=5)          # local Ray started on demand
        run.result()                           # the flow's outputs
        rayline.run(hello, overlap="skip")     # SKIPPED while another run of hello is going
    """
    from rayline.launch.admission import admit, choose_overlap, plan_run, run_unslotted
    from rayline.launch.launchers import InProcessLauncher
    from rayline.launch.params import check_values

    graph = _as_graph(flow)
    all_params = {**(params or {}), **param_kwargs}
    check_values(graph, all_params)
    with Session(settings, executor, address) as session:
        planned = plan_run(session, graph, all_params, overrides=overrides, run_key=run_key, trigger=trigger)
        if overlap is None:
            run_id = run_unslotted(session, planned, on_event=on_event)
        else:
            launcher = InProcessLauncher(session.settings, executor, address)
            done = admit(session, planned, overlap=choose_overlap(overlap, "skip"), launcher=launcher,
                         skip_takes_key=False, on_event=on_event)  # fmt: skip
            run_id = done.run_id or ""
        return Run.load(session, run_id, graph=graph)


def resume(
    run_id: str,
    *,
    executor: Any = None,
    address: str | None = None,
    settings: Settings | None = None,
    on_event: Any = None,
) -> Run:
    """Re-run only the tasks of ``run_id`` that did not succeed (after a failure, a cancel, or
    the death of the driver, before or after its first task started); succeeded outputs are
    adopted after their checksums verify.

    A run started under an overlap policy (``rayline run``, schedules, triggers) takes its
    flow's slot back, so a resume never runs beside another live run of the flow.

    Raises:
        FlowBusyError: another run of the flow holds its slot; nothing was changed.
        RunBusyError: another process drives the run (it is being resumed); nothing was changed.
    """
    from rayline.launch.admission import resume_run

    with Session(settings, executor, address) as session:
        rid, graph = resume_run(session, run_id, on_event=on_event)
        return Run.load(session, rid, graph=graph)


def load_run(run_id: str, *, settings: Settings | None = None) -> Run:
    """The recorded state of a run (prefix of the id accepted)."""
    with Session(settings, executor="local") as session:
        record = session.find_run(run_id)
        session.interrupt_if_stale(record)
        return Run.load(session, record.run_id)


def list_runs(
    *, limit: int = 20, flow_name: str | None = None, status: str | None = None, settings: Settings | None = None
) -> list[Run]:
    """Recent runs, newest first (runs whose driver died are shown INTERRUPTED)."""
    with Session(settings, executor="local") as session:
        want = RunStatus(status.upper()) if status else None
        records = session.runs.list_runs(limit=limit, flow_name=flow_name, status=want)
        if [r for r in records if session.interrupt_if_stale(r)]:
            records = session.runs.list_runs(limit=limit, flow_name=flow_name, status=want)
        return [Run.load(session, r.run_id) for r in records]


def cancel(run_id: str, *, wait: float = 30.0, settings: Settings | None = None) -> Run:
    """Cancel a run from any host sharing the run store (see ``rayline cancel``): record the
    request, wait up to ``wait`` seconds for the run to end; returns its ``Run`` as it is then."""
    from rayline.launch.cancel import cancel_run

    with Session(settings, executor="local") as session:
        rid = session.find_run(run_id).run_id
        cancel_run(session, rid, wait_s=wait, say=lambda line, err: None)
        return Run.load(session, rid)


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
        self._lease_ttl = 30.0  # Run.load takes the engine's

    @classmethod
    def load(cls, session: Session, run_id: str, graph: Graph | None = None) -> Run:
        # Details (tasks, attempts, plan) are read on first use; the Run keeps the store.
        session.keep_store_open = True
        run = cls(session.runs.get_run(run_id), session.runs, session.artifacts, graph)
        run._lease_ttl = session.settings.lease_ttl
        return run

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
        """The stored output of one task (verified against its checksum). One that is damaged or
        gone raises ArtifactIntegrityError and is marked lost: ``rayline resume`` recomputes it."""
        from rayline.errors import ArtifactIntegrityError, StoreError

        t = self.task(node_id)
        if not t.digest:
            raise UsageError(f"run {self.run_id}: task '{node_id}' has no stored output ({t.status})")
        try:
            return self._artifacts.get(t.digest)
        except StoreError as exc:
            if not isinstance(exc, ArtifactIntegrityError) and self._artifacts.exists(t.digest):
                raise  # not a damaged or missing object (e.g. a read error): nothing is lost
            self._runs.mark_output_lost(self.run_id, node_id, t.digest, str(exc), lease_ttl=self._lease_ttl,
                                        found_by="reading the run's output")
            raise ArtifactIntegrityError(f"{exc}. Marked it lost: `rayline resume {self.run_id}` recomputes it") from exc

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
        """How many tasks are in each state: ``{"SUCCEEDED": 3, "FAILED": 1}``."""
        from rayline.display.run_view import run_view

        return run_view(self.record, self.tasks).counts

    def view(self) -> Any:
        """The run's ``RunView`` (``rayline.display.run_view``): what every display of it renders."""
        from rayline.display.run_view import run_view

        return run_view(self.record, self.tasks, self.attempts, artifact_root=self._artifacts.url,
                        logs=self._logs(), events=self._runs.get_events(self.run_id))

    def _logs(self) -> Any:
        from rayline.store.task_logs import TaskLogs

        return TaskLogs(self._artifacts)

    def logs(self, node_id: str, attempt: int | None = None) -> str:
        """What task ``node_id`` printed (stdout and stderr, interleaved): one ``attempt``, or
        every attempt, each under a ``--- attempt N ---`` line when there are several.

        Example::

            run = rayline.load_run("1a2b3c")
            print(run.logs("train"))            # every attempt
            print(run.logs("train", attempt=2))

        Raises:
            UsageError: the run has no task ``node_id``, or no log for that attempt.
        """
        logs = self._logs()
        if node_id not in {t.node_id for t in self.tasks} and node_id not in logs.nodes(self.run_id):
            known = ", ".join(t.node_id for t in self.tasks) or "none"
            raise UsageError(f"run {self.run_id} has no task '{node_id}' (tasks: {known})")
        parts = logs.parts(self.run_id, [node_id], attempt)
        if attempt is not None and not parts:
            raise UsageError(f"run {self.run_id}: task '{node_id}' has no log for attempt {attempt}")
        if len(parts) == 1:
            return parts[0].text
        return "".join(f"--- attempt {p.attempt} ---\n{p.text}" + ("" if p.text.endswith("\n") else "\n")
                       for p in parts)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-ready data: the document ``rayline runs show --json`` prints."""
        return self.view().to_json()

    def _repr_html_(self) -> str:
        from rayline.display.notebook import run_html

        return run_html(self.view(), self.graph)

    def __repr__(self) -> str:
        return f"<Run {self.run_id} {self.flow_name} {self.status.value} {self.counts()}>"


__all__ = ["Run", "TaskStatus", "cancel", "list_runs", "load_flow", "load_run", "resume", "run"]
