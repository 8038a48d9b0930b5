"""The ``Session``: settings, the run store, the artifact store and the executor for one call.

Every way in (``rayline.run``, the CLI, a trigger, a scheduler's child process) opens one
``Session``, uses its stores, starts its executor when a run must execute, and closes it; nothing
here is global. (It is not SQLAlchemy's ``Engine``, nor the ``engine`` package that runs plans.)

Example::

    with Session(Settings(), executor="local") as session:
        plan = session.compile(graph, {"n": 3})
        ex = session.executor()
        session.check_cluster(plan, ex)
        session.runner(ex).run(plan)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rayline.config import Settings
from rayline.engine import compiler
from rayline.engine.compiler import Plan
from rayline.errors import ValidationError
from rayline.sdk.graph import Graph
from rayline.sdk.secrets import decode_secret_params

__all__ = ["Session"]


class Session:
    """Settings + stores + executor for one call (a context manager that closes the run store).

    Args:
        settings: default ``Settings()`` (``RAYLINE_*`` environment variables).
        executor: ``None``/``"ray"`` (Ray at ``address``, or a local Ray on demand), ``"local"``
            (this process), or an executor object.
        address: the Ray cluster (default ``settings.ray_address``).
    """

    def __init__(self, settings: Settings | None = None, executor: Any = None, address: str | None = None):
        from rayline.store.artifacts import ArtifactStore
        from rayline.store.runs import RunStore

        self.settings = settings or Settings()
        home = self.settings.resolved_home
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.runs = RunStore(self.settings.run_store_url)
        self.artifacts = ArtifactStore.for_settings(self.settings)
        self.keep_store_open = False
        self.executor_choice = executor
        self.address = address or self.settings.ray_address

    def executor(self) -> Any:
        """Start and return the executor this session was opened with."""
        ex = self.executor_choice
        if ex is None or ex == "ray":
            from rayline.engine.executors.ray import RayExecutor

            ex = RayExecutor(
                self.address,
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
        """A ``Runner`` on this session's stores. ``slot``: how its ``resume`` takes the run over
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

    def compile(self, graph: Graph, params: Mapping[str, Any], overrides: Any = None) -> Plan:
        """The run's ``Plan``: every static check but the cluster's (``check_cluster``), so that
        a run is compiled once, before any executor starts."""
        params = decode_secret_params(params)  # a resumed run's recorded {"$secret": NAME}
        return compiler.compile_plan(graph, params, cluster=None, overrides=overrides,
                            persist_all=self.settings.persist == "all")  # fmt: skip

    def check_cluster(self, plan: Plan, executor: Any) -> None:
        """Refuse a plan whose resource requests the started executor's cluster can never meet,
        and a run on a cluster of several nodes that cannot all see the local artifact folder
        (``launch/cluster_check.py``; an object-store URL needs no check).

        Raises:
            ValidationError: every node that asks for more than any node of the cluster has, and
                every gang (Train workers, Tune trials) the cluster can never hold.
            UsageError: some Ray node cannot see the local artifact folder.
        """
        from rayline.engine.demand import check_gangs
        from rayline.engine.validate import check_resources

        cluster = executor.cluster_nodes()
        if cluster is None:
            return
        problems = list(check_resources(plan.graph, cluster))
        problems += check_gangs(plan.nodes, cluster, flow=plan.graph.name)
        if problems:
            raise ValidationError(problems)
        folder = self.artifacts.root  # a Path for a local folder, not for an object store
        if len(cluster) > 1 and getattr(executor, "name", "") == "ray" and isinstance(folder, Path):
            from rayline.launch.cluster_check import CACHE_FILE, check_artifact_folder

            check_artifact_folder(folder, self.settings.resolved_home / CACHE_FILE)

    def find_run(self, run_id: str) -> Any:
        """The record of run ``run_id`` (or a unique prefix).

        Raises:
            UsageError: no such run, or the prefix is ambiguous.
        """
        from rayline.errors import LeaseLostError, StoreError, UsageError

        try:
            return self.runs.find_run(run_id)
        except LeaseLostError:
            raise
        except StoreError as exc:
            raise UsageError(str(exc)) from None

    def interrupt_if_stale(self, record: Any) -> bool:
        """Mark a RUNNING run whose driver is gone INTERRUPTED (what every reader of runs does
        before showing them); True if it was."""
        if record.status.value != "RUNNING":
            return False
        return self.runs.mark_interrupted_if_stale(record.run_id, self.settings.lease_ttl)

    def close(self) -> None:
        if not self.keep_store_open:  # a Run handed out still reads from it
            self.runs.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
