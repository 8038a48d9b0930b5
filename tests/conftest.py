"""Shared fixtures: an isolated RAYLINE_HOME per test; one local Ray for the whole session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("RAYLINE_HOME", str(h))
    monkeypatch.delenv("RAYLINE_DB_URL", raising=False)
    return h


@pytest.fixture
def settings(home: Path):
    from rayline.config import Settings

    return Settings(home=home, heartbeat_interval=0.5, lease_ttl=5.0)


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server (``tests/postgres_server.py``), started on first use."""
    from tests.postgres_server import PostgresServer

    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A run-store URL on each backend: a SQLite file, or a fresh database on the session's
    PostgreSQL server (what ``RAYLINE_DB_URL`` points a team at)."""
    if request.param == "sqlite":
        from rayline.store.sql import sqlite_url

        return sqlite_url(tmp_path / "store" / "runs.db")
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every integration test: 2 CPUs, small object store, no dashboard."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            object_store_memory=150 * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}},
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_address(ray_session) -> str:
    """The session cluster's address, for subprocess drivers (CLI, kill -9 tests)."""
    return ray_session.get_runtime_context().gcs_address


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server on loopback (``tests/s3_server.py``: moto's server mode)."""
    from tests.s3_server import S3Server

    server = S3Server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_settings(s3_server, home: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings whose artifact store is a fresh bucket on the test S3 server; the same settings
    are in the environment (``RAYLINE_ARTIFACTS_URL``, ``RAYLINE_ARTIFACTS_OPTIONS``) for the
    CLI."""
    import json

    from rayline.config import Settings

    url = s3_server.new_bucket() + "/rayline"
    monkeypatch.setenv("RAYLINE_ARTIFACTS_URL", url)
    monkeypatch.setenv("RAYLINE_ARTIFACTS_OPTIONS", json.dumps(s3_server.options))
    return Settings(home=home, heartbeat_interval=0.5, lease_ttl=5.0, artifacts_url=url,
                    artifacts_options=s3_server.options)  # fmt: skip
