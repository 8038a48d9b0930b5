"""The run store's tables and their numbered migrations.

``sql.py`` is the kernel (engine factory, the migration runner); this module says what the run
store's database looks like: ``plans``, ``runs``, ``tasks``, ``task_attempts`` (version 1),
``flow_slots``, ``run_queue`` and ``trigger_state`` (version 2), the resources each attempt held
and its CPU-/GPU-seconds, and each run's queue and priority (version 3), ``run_cancels``
(version 4), ``run_events`` and the model registry's and serving's tables (version 5, declared in
``model_schema.py``). One migration list, one version table (``schema_version``) for every table
in the database. ``migrate_run_store`` brings a database to ``SCHEMA_VERSION``;
``insert_run_rows`` is the one insert that creates a run (used by ``RunStore.create_run`` and by
the flow slots' reservation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Engine,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    text,
)

from rayline.store.model_schema import MODEL_TABLES, define_model_tables
from rayline.store.sql import migrate, version_table
from rayline.store.states import RunStatus, TaskStatus

#: The schema version this code writes and understands.
SCHEMA_VERSION = 5


def _define_v1(md: MetaData) -> None:
    """The tables as of schema version 1. Never edit: a later version adds a migration."""
    Table(
        "plans",
        md,
        Column("plan_hash", String(128), primary_key=True),
        Column("plan_json", Text, nullable=False),
        Column("created_at", Double, nullable=False),
    )
    Table(
        "runs",
        md,
        Column("run_id", String(64), primary_key=True),
        Column("flow_name", String(256), nullable=False),
        Column("source", Text),
        Column("status", String(32), nullable=False),
        Column("params_json", Text, nullable=False),
        Column("plan_hash", String(128), ForeignKey("plans.plan_hash"), nullable=False),
        Column("run_key", String(512), unique=True),
        Column("trigger_json", Text),
        Column("created_at", Double, nullable=False),
        Column("started_at", Double),
        Column("ended_at", Double),
        Column("owner_pid", Integer),
        Column("owner_host", String(256)),
        Column("heartbeat_at", Double),
        Column("generation", Integer, nullable=False),
        Column("error", Text),
        Column("counters_json", Text, nullable=False),
        Index("ix_runs_created", "created_at"),
        Index("ix_runs_flow_created", "flow_name", "created_at"),
        Index("ix_runs_status", "status"),
    )
    Table(
        "tasks",
        md,
        Column(
            "run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
        ),
        Column("node_id", String(256), primary_key=True),
        Column("seq", Integer, nullable=False),
        Column("status", String(32), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("digest", String(128)),
        Column("size", BigInteger),
        Column("fmt", String(32)),
        Column("started_at", Double),
        Column("ended_at", Double),
        Column("error_type", Text),
        Column("error_message", Text),
        Column("traceback", Text),
        Column("cache_key", String(256)),
    )
    Table(
        "task_attempts",
        md,
        Column("run_id", String(64), primary_key=True),
        Column("node_id", String(256), primary_key=True),
        Column("attempt", Integer, primary_key=True),
        Column("status", String(32), nullable=False),
        Column("started_at", Double),
        Column("ended_at", Double),
        Column("error_type", Text),
        Column("error_message", Text),
        Column("traceback", Text),
        Column("worker_pid", Integer),
        Column("node_ip", String(64)),
        ForeignKeyConstraint(
            ["run_id", "node_id"], ["tasks.run_id", "tasks.node_id"], ondelete="CASCADE"
        ),
    )


def _define_v2(md: MetaData) -> None:
    """Tables added in schema version 2, for schedules and triggers. Never edit.

    ``flow_slots`` holds, per flow, the run that owns the flow's single execution slot (overlap
    policies ``skip`` and ``queue``); ``run_queue`` holds the PENDING runs waiting for that slot;
    ``trigger_state`` holds each trigger's persisted state and its next fire time (UTC epoch).
    """
    Table(
        "flow_slots",
        md,
        Column("flow_name", String(256), primary_key=True),
        Column("run_id", String(64), nullable=False),
        Column("updated_at", Double, nullable=False),
    )
    Table(
        "run_queue",
        md,
        Column(
            "run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
        ),
        Column("flow_name", String(256), nullable=False),
        Column("sort_key", Double, nullable=False),
        Column("enqueued_at", Double, nullable=False),
        Index("ix_run_queue_flow", "flow_name", "sort_key"),
    )
    Table(
        "trigger_state",
        md,
        Column("trigger_id", String(512), primary_key=True),
        Column("flow_name", String(256), nullable=False),
        Column("kind", String(32), nullable=False),
        Column("state_json", Text, nullable=False),
        Column("next_at", Double),
        Column("last_fired_at", Double),
        Column("last_run_id", String(64)),
        Column("updated_at", Double, nullable=False),
    )


def _usage_columns() -> dict[str, tuple[Column[Any], ...]]:
    """Columns added in schema version 3, for accounting and queues. Never edit.

    On ``task_attempts``: the resources the attempt held (``cpus``, ``gpus``, ``memory_bytes``,
    from its planned Ray options) and ``cpu_seconds``/``gpu_seconds`` (held x how long it ran).
    On ``runs``: the ``queue`` and ``priority`` it was admitted under (NULL: no queues configured).
    """
    return {
        "task_attempts": (
            Column("cpus", Double), Column("gpus", Double), Column("memory_bytes", BigInteger),
            Column("cpu_seconds", Double), Column("gpu_seconds", Double),
        ),
        "runs": (Column("queue", String(128)), Column("priority", Integer)),
    }  # fmt: skip


def _define_v3(md: MetaData) -> None:
    """Schema version 3: the accounting columns, and ``admission_reservations``: one row per task
    of a run that asked admission for its demand (``held`` once admitted). Never edit."""
    for table, columns in _usage_columns().items():
        for column in columns:
            md.tables[table].append_column(column)
    Table(
        "admission_reservations",
        md,
        Column(
            "run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
        ),
        Column("node_id", String(256), primary_key=True),
        Column("queue", String(128), nullable=False),
        Column("priority", Integer, nullable=False),
        Column("arrival", Double, nullable=False),
        Column("seq", Integer, nullable=False),
        Column("cpus", Double, nullable=False),
        Column("gpus", Double, nullable=False),
        Column("memory_bytes", BigInteger, nullable=False),
        Column("held", Integer, nullable=False),
        Index("ix_admission_order", "priority", "arrival", "seq"),
    )


def _define_v4(md: MetaData) -> None:
    """Tables added in schema version 4. Never edit.

    ``run_cancels`` holds the cancel requested for a run (``rayline cancel`` from any host):
    the lease ``generation`` it was made against (a resume starts a new one, which the request
    does not touch), when, why and by whom; ``noticed_at`` is set by the driver that saw it.
    """
    Table(
        "run_cancels",
        md,
        Column(
            "run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
        ),
        Column("generation", Integer, nullable=False),
        Column("requested_at", Double, nullable=False),
        Column("reason", Text, nullable=False),
        Column("requested_by", String(256)),
        Column("noticed_at", Double),
    )


def _define_v5(md: MetaData) -> None:
    """Tables added in schema version 5, when every store of a home moved into one database.
    Never edit.

    ``run_events`` holds a run's events besides its task states (``run_events.py``; until
    version 5 it kept a version table of its own, ``run_events_version``, whose table is adopted
    as it is); the model registry's and serving's tables are declared in ``model_schema.py``
    (until version 5 they lived in ``RAYLINE_HOME/registry.db``).
    """
    Table(
        "run_events",
        md,
        Column("event_id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", String(64), nullable=False),
        Column("at", Double, nullable=False),
        Column("kind", String(64), nullable=False),
        Column("node_id", String(256)),
        Column("digest", String(128)),
        Column("message", Text),
        Index("ix_run_events_run", "run_id", "event_id"),
    )
    define_model_tables(md)


metadata = MetaData()
_define_v1(metadata)  # the current schema; queries use these tables
_define_v2(metadata)
_define_v3(metadata)
_define_v4(metadata)
_define_v5(metadata)
plans = metadata.tables["plans"]
runs = metadata.tables["runs"]
tasks = metadata.tables["tasks"]
task_attempts = metadata.tables["task_attempts"]
flow_slots = metadata.tables["flow_slots"]
run_queue = metadata.tables["run_queue"]
trigger_state = metadata.tables["trigger_state"]
admission_reservations = metadata.tables["admission_reservations"]
run_cancels = metadata.tables["run_cancels"]
run_events = metadata.tables["run_events"]
model_versions = metadata.tables["model_versions"]
aliases = metadata.tables["aliases"]
alias_history = metadata.tables["alias_history"]
deployments = metadata.tables["deployments"]

schema_version = version_table("schema_version")


def _migration_1(conn: Connection) -> None:
    md = MetaData()
    _define_v1(md)
    md.create_all(conn)


def _migration_2(conn: Connection) -> None:
    md = MetaData()
    _define_v1(md)  # so that run_queue's foreign key resolves; existing tables are skipped
    _define_v2(md)
    md.create_all(conn, tables=[md.tables[n] for n in ("flow_slots", "run_queue", "trigger_state")])


def _migration_3(conn: Connection) -> None:
    for table, columns in _usage_columns().items():
        for c in columns:
            kind = c.type.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {c.name} {kind}"))
    md = MetaData()
    _define_v1(md)
    _define_v2(md)
    _define_v3(md)
    md.create_all(conn, tables=[md.tables["admission_reservations"]])


def _migration_4(conn: Connection) -> None:
    md = MetaData()
    _define_v1(md)  # so that run_cancels' foreign key resolves; existing tables are skipped
    _define_v4(md)
    md.create_all(conn, tables=[md.tables["run_cancels"]])


def _migration_5(conn: Connection) -> None:
    md = MetaData()
    _define_v5(md)  # a run_events table made under its old version table is kept as it is
    md.create_all(conn, tables=[md.tables[n] for n in ("run_events", *MODEL_TABLES)])
    conn.execute(text("DROP TABLE IF EXISTS run_events_version"))


#: Migration N takes a database from version N-1 to N. All pending ones run in one transaction.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _migration_1, 2: _migration_2, 3: _migration_3, 4: _migration_4, 5: _migration_5,
}


def migrate_run_store(engine: Engine, where: str) -> int:
    """``migrate`` the run store to ``SCHEMA_VERSION``; return the version found.

    Raises:
        StoreError: the database was written by a newer rayline.
    """
    return migrate(
        engine, schema_version, MIGRATIONS, SCHEMA_VERSION, where=where, label="run store"
    )


def insert_run_rows(
    conn: Connection,
    *,
    run_id: str,
    now: float,
    flow_name: str,
    source: str | None,
    params_json: str,
    plan_hash: str,
    plan_json: str,
    node_ids: Sequence[str],
    run_key: str | None,
    trigger_json: str | None,
    owner_pid: int | None,
    owner_host: str | None,
    status: RunStatus,
    error: str | None = None,
) -> None:
    """Insert a run, its plan (if new) and one PENDING task per node inside the caller's
    transaction (``create_run``'s, or a scheduler's that also takes the flow's slot).

    Raises:
        IntegrityError: ``run_key`` (or ``run_id``) is taken.
    """
    known = select(plans.c.plan_hash).where(plans.c.plan_hash == plan_hash)
    if conn.execute(known).first() is None:
        conn.execute(insert(plans).values(plan_hash=plan_hash, plan_json=plan_json, created_at=now))
    conn.execute(
        insert(runs).values(
            run_id=run_id, flow_name=flow_name, source=source,
            status=str(status), params_json=params_json, plan_hash=plan_hash,
            run_key=run_key, trigger_json=trigger_json, created_at=now,
            started_at=now if status == RunStatus.RUNNING else None,
            ended_at=now if status.terminal else None,
            owner_pid=owner_pid, owner_host=owner_host, heartbeat_at=now,
            generation=1, error=error, counters_json="{}",
        )
    )  # fmt: skip
    if node_ids:
        rows = [
            {"run_id": run_id, "node_id": n, "seq": i,
             "status": str(TaskStatus.PENDING), "attempts": 0}
            for i, n in enumerate(node_ids)
        ]  # fmt: skip
        conn.execute(insert(tasks), rows)
