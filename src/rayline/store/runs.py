"""The run store: every run, task state, attempt and plan, in SQL (SQLite by default).

Only the driver writes it; Ray workers never touch it. Each write is one short transaction and
the driver batches task updates into ``record_tasks``. The run's owner holds a lease (pid, host,
heartbeat) and a fencing token, ``generation``: every write made on the owner's behalf names its
generation, and one that no longer matches (because ``take_over`` or
``mark_interrupted_if_stale`` moved it on) raises ``LeaseLostError`` and writes nothing. The lease
rules themselves live in ``leases.py``.

Example::

    store = RunStore.open(Path("~/.rayline").expanduser())
    run_id, created = store.create_run(
        flow_name="churn", source="flows/churn.py", params={"day": "2026-01-02"},
        plan_hash=plan.hash, plan_json=plan.to_json(), node_ids=["load", "train"],
        owner_pid=os.getpid(), owner_host=socket.gethostname())
    store.record_tasks(run_id, [TaskUpdate("load", TaskStatus.RUNNING, started_at=now)],
                       generation=1)
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

from sqlalchemy import Connection, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from rayline.errors import StoreError
from rayline.store import leases, run_events
from rayline.store.model_writes import apply_model_writes
from rayline.store.run_records import (
    AttemptRecord,
    AttemptUpdate,
    RunRecord,
    TaskRecord,
    TaskUpdate,
    attempt_from_row,
    run_from_row,
    task_from_row,
)
from rayline.store.schema import (
    insert_run_rows,
    migrate_run_store,
    plans,
    runs,
    task_attempts,
    tasks,
)
from rayline.store.sql import READ_OPTION, EngineOwner, make_engine, sqlite_url, to_json
from rayline.store.states import RunStatus
from rayline.store.task_batches import apply_task_writes, insert_tasks, task_writes

__all__ = [
    "AttemptRecord",
    "AttemptUpdate",
    "RunRecord",
    "RunStore",
    "TaskRecord",
    "TaskUpdate",
]


class RunStore(EngineOwner):
    """Runs, task states, attempts and plans, behind any SQLAlchemy URL.

    Thread-safe (one engine, one connection per call). Use as a context manager or ``close()``.

    Args:
        url: a SQLAlchemy URL, e.g. ``sqlite:////home/me/.rayline/runs.db`` or a PostgreSQL URL.
        task_copy: a task's private scratch copy (``models/registry/task_view.py``), the only
            database a Ray worker may open (``sql.make_engine`` refuses any other there).

    Raises:
        StoreError: the database is newer than this rayline, a SQLite file would live on a
            network filesystem, or this is a Ray worker.
    """

    def __init__(self, url: str | URL, *, task_copy: bool = False) -> None:
        self._url = make_url(url)
        self._where = self._url.render_as_string(hide_password=True)
        self._engine = make_engine(self._url, task_copy=task_copy)
        self._reader = self._engine.execution_options(**{READ_OPTION: True})
        self._host = socket.gethostname()
        try:
            migrate_run_store(self._engine, self._where)
        except DBAPIError as e:
            self._engine.dispose()
            raise StoreError(f"cannot open the run store at {self._where}: {e.orig}") from e
        except BaseException:
            self._engine.dispose()
            raise

    @classmethod
    def open(cls, home: str | Path) -> RunStore:
        """The default store: SQLite at ``home/runs.db``."""
        return cls(sqlite_url(Path(home) / "runs.db"))

    @property
    def url(self) -> str:
        """The store's URL, password hidden."""
        return self._where

    def __repr__(self) -> str:
        return f"RunStore({self._where!r})"

    @contextmanager
    def transaction(self, *, read: bool = False) -> Iterator[Connection]:
        """One transaction on the store's database, for the modules that keep their own tables in
        it (flow slots, trigger state): a write transaction (``BEGIN IMMEDIATE`` on SQLite)
        committed when the block ends, or with ``read=True`` a deferred one that never blocks.

        Example::

            with store.transaction() as conn:
                conn.execute(update(flow_slots).where(...).values(...))

        Raises:
            StoreError: the database refused (``IntegrityError`` passes through as it is).
        """
        try:
            if read:
                with self._reader.connect() as conn:
                    yield conn
            else:
                with self._engine.begin() as conn:
                    yield conn
        except IntegrityError:
            raise
        except DBAPIError as e:
            raise StoreError(f"run store at {self._where}: {e.orig}") from e

    def _missing(self, run_id: str) -> StoreError:
        return leases.missing_run(run_id, self._where)

    def _fence(self, conn: Connection, run_id: str, held: int, values: dict[str, Any]) -> None:
        """``leases.fence``: update the run if generation ``held`` still holds its lease."""
        leases.fence(conn, run_id, held, values, where=self._where)

    # ------------------------------------------------------------------------------ writes

    def create_run(
        self,
        *,
        flow_name: str,
        source: str | None,
        params: dict[str, Any],
        plan_hash: str,
        plan_json: str,
        node_ids: Iterable[str],
        run_key: str | None = None,
        trigger: dict[str, Any] | None = None,
        owner_pid: int | None,
        owner_host: str | None,
        status: RunStatus = RunStatus.RUNNING,
    ) -> tuple[str, bool]:
        """Insert a run, its plan (if new) and one PENDING task per node; take the lease.

        With a ``run_key`` the insert is idempotent: if a run with that key exists, nothing is
        written and its id is returned. A UNIQUE constraint guarantees it, also across processes.

        Returns:
            ``(run_id, created)``; ``created`` is False when ``run_key`` matched an existing run.
            The new run's lease is generation 1.
        """
        ids = list(node_ids)
        if len(set(ids)) != len(ids):
            dupes = sorted({n for n in ids if ids.count(n) > 1})
            raise StoreError(f"run of flow '{flow_name}' lists node ids twice: {dupes}")
        params_json = to_json(params, f"params of flow '{flow_name}'")
        trigger_json = None if trigger is None else to_json(trigger, "the trigger")
        for _ in range(3):
            run_id, now = uuid4().hex[:12], time.time()
            try:
                with self.transaction() as conn:
                    insert_run_rows(
                        conn, run_id=run_id, now=now, flow_name=flow_name, source=source,
                        params_json=params_json, plan_hash=plan_hash, plan_json=plan_json,
                        node_ids=ids, run_key=run_key, trigger_json=trigger_json,
                        owner_pid=owner_pid, owner_host=owner_host, status=status,
                    )  # fmt: skip
                return run_id, True
            except IntegrityError:
                if run_key is not None:
                    with self.transaction(read=True) as conn:
                        by_key = select(runs.c.run_id).where(runs.c.run_key == run_key)
                        existing = conn.execute(by_key).scalar()
                    if existing is not None:
                        return existing, False
                # Otherwise a run-id collision or a concurrent plan insert: try again.
        raise StoreError(f"could not insert a run of flow '{flow_name}' into {self._where}")

    def record_tasks(
        self, run_id: str, updates: Sequence[TaskUpdate], *, generation: int, new: Sequence[str] = (),
        model_writes: Sequence[Any] = (),
    ) -> None:  # fmt: skip
        """Apply a batch of task updates in one transaction, if ``generation`` holds the lease;
        ``new`` node ids (the items of a map, known at run time) are added as PENDING tasks first;
        ``model_writes``: what the task of ``updates`` wrote to the model registry (``model_writes``).

        Also refreshes the run's heartbeat. Updates for the same node apply in order.

        Raises:
            LeaseLostError: another process owns the run now; nothing was written.
            ModelWriteConflict: the registry changed under ``model_writes``; nothing was written.
            StoreError: the run or one of the nodes does not exist.
        """
        writes = task_writes(run_id, updates)
        with self.transaction() as conn:
            self._fence(conn, run_id, generation, {})
            insert_tasks(conn, run_id, new)
            if model_writes:
                apply_model_writes(conn, model_writes, by=f"task '{updates[-1].node_id}' of run {run_id}")
            apply_task_writes(conn, run_id, writes)

    def set_run_status(
        self,
        run_id: str,
        status: RunStatus,
        *,
        error: str | None = None,
        generation: int | None = None,
        counters: dict[str, Any] | None = None,
    ) -> None:
        """Set a run's status (and ``ended_at`` for terminal ones), optionally fenced.

        Raises:
            LeaseLostError: ``generation`` is given and no longer holds the lease.
            StoreError: no such run.
        """
        now = time.time()
        values: dict[str, Any] = {"status": str(status)}
        values["ended_at"] = now if status.terminal else None
        if error is not None:
            values["error"] = error
        if counters is not None:
            values["counters_json"] = to_json(counters, "run counters")
        with self.transaction() as conn:
            if generation is not None:
                self._fence(conn, run_id, generation, values)
                return
            stmt = update(runs).where(runs.c.run_id == run_id).values(**values)
            if conn.execute(stmt).rowcount != 1:
                raise self._missing(run_id)

    def heartbeat(self, run_id: str, generation: int) -> None:
        """Renew the run's lease.

        Raises:
            LeaseLostError: another process took the run over.
        """
        with self.transaction() as conn:
            self._fence(conn, run_id, generation, {})

    def take_over(self, run_id: str, *, owner_pid: int, owner_host: str, lease_ttl: float) -> int:
        """Become the run's owner (for resume) if its lease is not live; return the new generation.

        The run becomes RUNNING with a fresh ``started_at``, no ``ended_at`` and no error. Check
        and update share one ``BEGIN IMMEDIATE`` transaction, so two resumers cannot both win.

        Raises:
            StoreError: the run is RUNNING under a live lease, or does not exist.
        """
        with self.transaction() as conn:
            return leases.take_over(conn, run_id, owner_pid=owner_pid, owner_host=owner_host,
                                    lease_ttl=lease_ttl, host=self._host, where=self._where)  # fmt: skip

    def is_stale(self, run: RunRecord, lease_ttl: float) -> bool:
        """Whether a RUNNING run's owner is gone.

        Stale when its owner pid is dead on this host, or its last heartbeat (or, before the
        first, its start) is older than ``lease_ttl`` seconds. Runs in other states are not.
        """
        return leases.is_stale(run, lease_ttl, host=self._host)

    def mark_interrupted_if_stale(self, run_id: str, lease_ttl: float) -> bool:
        """Mark a stale RUNNING run INTERRUPTED (its RUNNING tasks too) and revoke its lease.

        Returns:
            True if the run was stale and is now INTERRUPTED.
        """
        with self.transaction() as conn:
            return leases.interrupt_if_stale(conn, run_id, lease_ttl, host=self._host,
                                             where=self._where)  # fmt: skip

    # ------------------------------------------------------------------------------- reads

    def get_run(self, run_id: str) -> RunRecord:
        """The run ``run_id``.

        Raises:
            StoreError: no such run (the message says how to list runs).
        """
        with self.transaction(read=True) as conn:
            row = conn.execute(select(runs).where(runs.c.run_id == run_id)).first()
        if row is None:
            raise self._missing(run_id)
        return run_from_row(row)

    def find_run(self, prefix: str) -> RunRecord:
        """The run whose id is ``prefix`` or uniquely starts with it.

        Raises:
            StoreError: no run matches, or several do (they are named).
        """
        if not prefix:
            raise StoreError("an empty run id matches every run; give the id or its prefix")
        with self.transaction(read=True) as conn:
            exact = conn.execute(select(runs).where(runs.c.run_id == prefix)).first()
            if exact is not None:
                return run_from_row(exact)
            stmt = select(runs).where(runs.c.run_id.startswith(prefix, autoescape=True)).limit(6)
            rows = conn.execute(stmt).all()
        if not rows:
            raise self._missing(prefix)
        if len(rows) > 1:
            names = ", ".join(r._mapping["run_id"] for r in rows[:5])
            raise StoreError(
                f"run id prefix '{prefix}' is ambiguous: it matches {names}"
                f"{' …' if len(rows) > 5 else ''}; give more characters"
            )
        return run_from_row(rows[0])

    def list_runs(
        self, limit: int = 50, flow_name: str | None = None, status: RunStatus | None = None
    ) -> list[RunRecord]:
        """Runs, newest first, optionally of one flow and/or in one status."""
        stmt = select(runs).order_by(runs.c.created_at.desc(), runs.c.run_id.desc()).limit(limit)
        if flow_name is not None:
            stmt = stmt.where(runs.c.flow_name == flow_name)
        if status is not None:
            stmt = stmt.where(runs.c.status == str(status))
        with self.transaction(read=True) as conn:
            return [run_from_row(r) for r in conn.execute(stmt)]

    def get_tasks(self, run_id: str) -> list[TaskRecord]:
        """The run's tasks in plan order (empty if the run does not exist)."""
        stmt = select(tasks).where(tasks.c.run_id == run_id).order_by(tasks.c.seq)
        with self.transaction(read=True) as conn:
            return [task_from_row(r) for r in conn.execute(stmt)]

    def get_attempts(self, run_id: str, node_id: str | None = None) -> list[AttemptRecord]:
        """Every recorded attempt of the run (or of one node), in plan order then attempt."""
        stmt = (
            select(task_attempts)
            .join(
                tasks,
                (tasks.c.run_id == task_attempts.c.run_id)
                & (tasks.c.node_id == task_attempts.c.node_id),
            )
            .where(task_attempts.c.run_id == run_id)
            .order_by(tasks.c.seq, task_attempts.c.attempt)
        )
        if node_id is not None:
            stmt = stmt.where(task_attempts.c.node_id == node_id)
        with self.transaction(read=True) as conn:
            return [attempt_from_row(r) for r in conn.execute(stmt)]

    def get_plan(self, plan_hash: str) -> str | None:
        """The plan JSON stored under ``plan_hash``, or None."""
        stmt = select(plans.c.plan_json).where(plans.c.plan_hash == plan_hash)
        with self.transaction(read=True) as conn:
            return conn.execute(stmt).scalar()

    # ------------------------------------------------------------- events and lost outputs

    def record_event(self, run_id: str, kind: str, *, node_id: str | None = None,
                     digest: str | None = None, message: str | None = None) -> None:
        """Append an event to the run's history (``run_events.record_event``)."""
        with self.transaction() as conn:
            run_events.record_event(conn, run_id, kind, node_id=node_id, digest=digest, message=message)

    def get_events(self, run_id: str) -> list[run_events.RunEvent]:
        """The run's events, oldest first."""
        with self.transaction(read=True) as conn:
            return run_events.list_events(conn, run_id)

    def mark_output_lost(self, run_id: str, node_id: str, digest: str, reason: str, *,
                         lease_ttl: float, found_by: str) -> bool:
        """Record the output of ``node_id`` lost; resume then recomputes it and its dependants
        (``run_events.mark_output_lost``). True if task states changed."""
        with self.transaction() as conn:
            return run_events.mark_output_lost(conn, run_id, node_id, digest, reason, lease_ttl=lease_ttl,
                                               host=self._host, where=self._where, found_by=found_by)

    def tasks_with_digests(self, digests: Iterable[str]) -> list[tuple[str, str, str]]:
        """``(run_id, node_id, digest)`` of succeeded tasks whose output is one of ``digests``."""
        with self.transaction(read=True) as conn:
            return run_events.tasks_with_digests(conn, digests)

    def referenced_digests(self) -> set[str]:
        """Every artifact digest any task of any run records."""
        with self.transaction(read=True) as conn:
            return run_events.referenced_digests(conn)
