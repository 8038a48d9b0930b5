"""What a task writes to the model registry travels back with its result and is committed by
the driver with the task's success (DESIGN principle 8), on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

import rayline
from rayline import flow, task
from rayline.config import Settings
from rayline.models.registry import open_registry
from rayline.models.registry.sql import ModelRegistry
from rayline.store.model_writes import (
    ModelWriteConflict,
    apply_model_writes,
    diff_model_rows,
    model_rows,
)
from rayline.store.runs import RunStore
from rayline.store.states import RunStatus
from rayline.tasks.gate import gate_and_promote
from rayline.tasks.registry import register_model
from rayline.tasks.train import train_sklearn


class Doubler:
    def predict(self, records):
        return [2 * r["x"] for r in records]


def _data(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    x["label"] = (x.a - 0.5 * x.b > 0).astype(int)
    return x


@task
def frame(n: int, seed: int) -> pd.DataFrame:
    return _data(n, seed)


@task
def estimator(weak: bool) -> object:
    return DummyClassifier(strategy="most_frequent") if weak else LogisticRegression()


@flow
def retrain(weak: bool = False):
    model = train_sklearn(frame(300, 0), estimator=estimator(weak), label="label")
    version = register_model(model, name="churn")
    return gate_and_promote(version, frame(200, 1), model_name="churn")


@pytest.fixture
def settings(home: Path, store_url: str) -> Settings:
    return Settings(home=home, db_url=store_url, heartbeat_interval=0.5, lease_ttl=5.0)


def test_register_and_gate_in_a_flow_are_committed_by_the_driver(settings: Settings):
    first = rayline.run(retrain, settings=settings, executor="local")
    assert first.status.ok, first.error
    assert first.result().promoted and first.result().challenger_version == 1
    second = rayline.run(retrain, settings=settings, executor="local", weak=True)
    assert second.status.ok, second.error
    d = second.result()
    assert (d.challenger_version, d.champion_version, d.promoted) == (2, 1, False)
    with ModelRegistry(settings) as reg:
        assert [v.version for v in reg.versions("churn")] == [1, 2]
        assert reg.aliases("churn") == {"production": 1}
        events = [(e.event, e.to_version) for e in reg.history("churn")]
        assert events == [("promote", 1), ("gate_rejected", 2)]
        assert reg.get("churn", 1).lineage["run_id"] == first.run_id


@task(registry=True)
def racing_register() -> int:
    # Another process registers the same model while this task runs (here: the driver's own
    # process, which may open the database; the local executor runs tasks in it).
    with ModelRegistry(Settings()) as elsewhere:
        elsewhere.register("race", Doubler())
    return open_registry().register("race", Doubler()).version


@flow
def race():
    return racing_register()


def test_a_registration_that_lost_a_race_fails_the_task_and_writes_nothing(settings: Settings, monkeypatch):
    monkeypatch.setenv("RAYLINE_DB_URL", settings.run_store_url)
    with ModelRegistry(settings) as reg:
        reg.register("race", Doubler())  # version 1, in the rows the task gets
    run = rayline.run(race, settings=settings, executor="local")
    assert run.status == RunStatus.FAILED
    assert "version 2 of model 'race' was registered by someone else" in run.error
    with ModelRegistry(settings) as reg:
        assert [v.version for v in reg.versions("race")] == [1, 2]  # the task's version 2 was refused


def test_writes_are_diffed_and_applied_with_optimistic_checks(store_url: str, home: Path):
    with RunStore(store_url) as runs:
        with ModelRegistry(Settings(home=home, db_url=store_url), runs=runs) as reg:
            reg.register("m", Doubler())
            reg.promote("m", 1, "production")
        with runs.transaction(read=True) as conn:
            before = model_rows(conn)
        after = {k: [dict(r) for r in v] for k, v in before.items()}
        row = {**after["model_versions"][0], "version": 2}
        after["model_versions"].append(row)
        after["aliases"][0]["version"] = 2
        writes = diff_model_rows(before, after)
        assert [w["op"] for w in writes] == ["version", "alias"]
        assert writes[1]["expected"] == 1
        with runs.transaction() as conn:
            apply_model_writes(conn, writes, by="test")
        with pytest.raises(ModelWriteConflict, match="version 2 of model 'm' was registered by someone else"):
            with runs.transaction() as conn:
                apply_model_writes(conn, writes, by="test")
        with pytest.raises(ModelWriteConflict, match="alias 'production' of model 'm' moved"):
            with runs.transaction() as conn:
                apply_model_writes(conn, writes[1:], by="test")
