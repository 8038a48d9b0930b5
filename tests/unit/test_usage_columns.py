"""Schema version 3 (and later): a version-2 run store gains the accounting columns and keeps its attempts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import MetaData, create_engine

from rayline.store import schema
from rayline.store.runs import RunStore
from rayline.store.sql import sqlite_url


def test_a_version_2_store_migrates_to_3_keeping_its_attempts(tmp_path: Path):
    url = sqlite_url(tmp_path / "runs.db")
    engine = create_engine(url)
    with engine.begin() as conn:
        md = MetaData()
        schema._define_v1(md)
        schema._define_v2(md)
        md.create_all(conn)
        schema.schema_version.create(conn)
        conn.execute(schema.schema_version.insert().values(id=1, version=2))
        conn.exec_driver_sql("INSERT INTO plans VALUES ('p', '{}', 0)")
        conn.exec_driver_sql("INSERT INTO runs (run_id, flow_name, status, params_json, plan_hash, "
                             "created_at, generation, counters_json) VALUES ('r1', 'f', 'SUCCEEDED', "
                             "'{}', 'p', 0, 1, '{}')")  # fmt: skip
        conn.exec_driver_sql("INSERT INTO tasks (run_id, node_id, seq, status, attempts) "
                             "VALUES ('r1', 'a', 0, 'SUCCEEDED', 1)")  # fmt: skip
        conn.exec_driver_sql("INSERT INTO task_attempts (run_id, node_id, attempt, status, started_at, "
                             "ended_at) VALUES ('r1', 'a', 1, 'SUCCEEDED', 1, 3)")  # fmt: skip
    engine.dispose()
    with RunStore(url) as store:
        (attempt,) = store.get_attempts("r1")
        assert (attempt.cpus, attempt.gpu_seconds, attempt.memory_bytes) == (None, None, None)
    with sqlite3.connect(tmp_path / "runs.db") as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (schema.SCHEMA_VERSION,)
        assert db.execute("SELECT queue, priority FROM runs").fetchone() == (None, None)
