"""An older home's ``registry.db`` (the registry's own SQLite file before schema version 5) is
imported into the run store's database once, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import MetaData, create_engine, insert

from rayline.config import Settings
from rayline.errors import StoreError
from rayline.models.registry.sql import ModelRegistry
from rayline.serving.deployments import DeploymentRecords
from rayline.store.artifacts import ArtifactStore
from rayline.store.model_schema import define_model_tables


class Tripler:
    def predict(self, records):
        return [3 * r["x"] for r in records]


def _old_registry(home: Path, digest: str, *, version: int = 1) -> Path:
    """A ``registry.db`` as rayline wrote it before version 5: the four tables and its own
    ``registry_schema`` version table."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "registry.db"
    engine = create_engine(f"sqlite:///{path}")
    md = MetaData()
    define_model_tables(md)
    now = time.time()
    with engine.begin() as conn:
        md.create_all(conn)
        conn.exec_driver_sql("CREATE TABLE registry_schema (id INTEGER PRIMARY KEY, version INTEGER NOT NULL)")
        conn.exec_driver_sql("INSERT INTO registry_schema VALUES (1, 1)")
        conn.execute(insert(md.tables["model_versions"]).values(
            name="legacy", version=version, digest=digest, flavor="pyfunc", metrics_json='{"auc":0.8}',
            lineage_json='{"run_id":"old"}', inputs_json=None, features_digest=None, description=None,
            created_at=now))  # fmt: skip
        conn.execute(insert(md.tables["aliases"]).values(name="legacy", alias="production", version=version,
                                                         updated_at=now))  # fmt: skip
        conn.execute(insert(md.tables["alias_history"]).values(
            id=7, name="legacy", alias="production", event="promote", from_version=None, to_version=version,
            undoes=None, at=now, reason="old gate", actor="gate"))  # fmt: skip
        conn.execute(insert(md.tables["deployments"]).values(
            app="legacy", name="legacy", version=version, alias="production", spec_json=json.dumps({"url": "x"}),
            status="RUNNING", updated_at=now))  # fmt: skip
    engine.dispose()
    return path


@pytest.fixture
def settings(home: Path, store_url: str) -> Settings:
    return Settings(home=home, db_url=store_url)


def test_an_old_registry_db_is_imported_once_into_the_run_database(settings: Settings, monkeypatch):
    digest = ArtifactStore.for_settings(settings).put(Tripler()).digest
    old = _old_registry(settings.resolved_home, digest)
    with ModelRegistry(settings) as reg:
        mv = reg.get("legacy", alias="production")
        assert (mv.version, mv.digest, mv.metrics) == (1, digest, {"auc": 0.8})
        assert reg.load(mv).predict([{"x": 2}]) == [6]
        assert [(e.id, e.reason) for e in reg.history("legacy")] == [(7, "old gate")]
        nxt = reg.register("legacy", Tripler())
        moved = reg.promote("legacy", nxt.version, "production")
    assert nxt.version == 2 and moved.id > 7  # numbering goes on after the imported rows
    assert not old.exists() and old.with_name("registry.db.imported").exists()
    with DeploymentRecords(settings) as records:
        assert [(r["app"], r["version"]) for r in records.find()] == [("legacy", 1)]
    with ModelRegistry(settings) as again:  # once: nothing imported twice
        assert [v.version for v in again.versions("legacy")] == [1, 2]
    from rayline.cli.models import models_group

    monkeypatch.setenv("RAYLINE_DB_URL", settings.run_store_url)
    out = CliRunner().invoke(models_group, ["list", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0]["name"] == "legacy"


def test_an_old_registry_that_contradicts_the_database_is_refused_by_name(settings: Settings):
    store = ArtifactStore.for_settings(settings)
    with ModelRegistry(settings) as reg:
        reg.register("legacy", Tripler())
    old = _old_registry(settings.resolved_home, store.put(Doubled()).digest)
    with pytest.raises(StoreError, match=f"{old}.*version 1 of model 'legacy'.*move the file aside"):
        ModelRegistry(settings)
    assert old.exists()  # nothing was imported, the file is kept
    with sqlite3.connect(old) as db:
        assert db.execute("SELECT count(*) FROM model_versions").fetchone() == (1,)


class Doubled:
    def predict(self, records):
        return [2 * r["x"] for r in records]
