"""The model registry without Ray: versions, aliases, history, rollback, names, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

import rayline
from rayline import context, flow, task
from rayline.config import Settings
from rayline.errors import ArtifactIntegrityError, StoreError, UnsafeNameError
from rayline.models.predictor import InputError, RecordPredictor
from rayline.models.registry import ModelNotFoundError, parse_ref
from rayline.models.registry.sql import ModelRegistry
from rayline.models.servable import flavor_of
from rayline.store.artifacts import ArtifactStore
from rayline.store.runs import RunStore
from rayline.tasks.registry import register_model


class Doubler:
    """A pyfunc model: anything with predict(records)."""

    def predict(self, records):
        return [2 * r["x"] for r in records]


def _frame(n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    x = pd.DataFrame(np.random.RandomState(seed).randn(n, 3), columns=["a", "b", "c"])
    return x, (x.a + 0.1 * x.b > 0).astype(int)


@pytest.fixture
def model() -> LogisticRegression:
    x, y = _frame()
    return LogisticRegression().fit(x, y)


@pytest.fixture
def reg(home: Path, store_url: str):
    """The registry in the run store's database, on SQLite and on PostgreSQL."""
    with ModelRegistry(Settings(home=home, db_url=store_url)) as r:
        yield r


def test_versions_are_numbered_per_model(reg, model):
    a1 = reg.register("churn", model, metrics={"auc": np.float64(0.91)})
    a2 = reg.register("churn", model, metrics={"auc": 0.93})
    b1 = reg.register("fraud", Doubler())
    assert (a1.version, a2.version, b1.version) == (1, 2, 1)
    assert a1.flavor == "sklearn" and b1.flavor == "pyfunc"
    assert a1.inputs == ("a", "b", "c")  # read from the estimator's feature_names_in_
    assert reg.get("churn").version == 2  # latest
    assert reg.get("churn", 1).metrics == {"auc": 0.91}
    assert [v.version for v in reg.versions("churn")] == [1, 2]
    summary = {s.name: s for s in reg.list_models()}
    assert summary["churn"].latest_version == 2 and summary["churn"].num_versions == 2
    assert json.loads(json.dumps(a1.to_dict()))["name"] == "churn"


def test_concurrent_registrations_get_distinct_versions(home: Path):
    errors, versions = [], []

    def worker() -> None:
        try:
            with ModelRegistry(home) as r:  # its own engine: a separate SQLite connection pool
                for _ in range(5):
                    versions.append(r.register("busy", Doubler()).version)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sorted(versions) == list(range(1, 21))


def test_load_returns_the_model_verified_by_the_artifact_store(reg, model):
    v = reg.register("churn", model)
    x, _ = _frame(5, seed=1)
    assert list(reg.load("churn", 1).predict(x)) == list(model.predict(x))
    path = reg.store.root / "objects" / v.digest[:2] / v.digest
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(path, 0o600)
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError):
        reg.load("churn", 1)


def test_aliases_promote_and_record_history(reg, model):
    for _ in range(3):
        reg.register("churn", model)
    reg.promote("churn", 1, "production", reason="first")
    reg.promote("churn", 2, "production", reason="better auc", actor="gate")
    again = reg.promote("churn", 2, "production")  # already there: no new row
    reg.promote("churn", 3, "staging")
    assert reg.aliases("churn") == {"production": 2, "staging": 3}
    assert reg.get("churn", alias="production").version == 2
    assert reg.get("churn", 2).aliases == ("production",)
    history = reg.history("churn", "production")
    assert [(e.event, e.from_version, e.to_version) for e in history] == [
        ("promote", None, 1), ("promote", 1, 2)]  # fmt: skip
    assert again.id == history[-1].id
    assert history[-1].reason == "better auc" and history[-1].actor == "gate"
    assert len(reg.history("churn")) == 3


def test_rollback_undoes_promotions_in_order(reg, model):
    for v in range(1, 4):
        reg.register("churn", model)
        reg.promote("churn", v, "production")
    first = reg.rollback("churn", "production", reason="error rate up")
    assert (first.event, first.from_version, first.to_version) == ("rollback", 3, 2)
    second = reg.rollback("churn", "production")
    assert (second.from_version, second.to_version) == (2, 1)
    assert reg.get("churn", alias="production").version == 1
    with pytest.raises(StoreError, match="no earlier version to roll back to"):
        reg.rollback("churn", "production")
    reg.promote("churn", 3, "production")
    with pytest.raises(StoreError, match="moved meanwhile"):
        reg.rollback("churn", "production", expected=2)
    assert reg.rollback("churn", "production", expected=3).to_version == 1


def test_unknown_model_version_or_alias_says_what_exists(reg, model):
    reg.register("churn", model)
    reg.register("churn", model)
    reg.promote("churn", 1, "staging")
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'.*churn"):
        reg.get("nope")
    with pytest.raises(ModelNotFoundError, match="no version 9; its versions: 1-2"):
        reg.get("churn", 9)
    with pytest.raises(ModelNotFoundError, match="no alias 'production'; its aliases: staging"):
        reg.get("churn", alias="production")
    with pytest.raises(ModelNotFoundError):
        reg.promote("churn", 5, "production")
    with pytest.raises(ModelNotFoundError):
        reg.history("nope")


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "x" * 129, "%2e%2e%2f", "a b", "..", "\x00"])
def test_unsafe_model_and_alias_names_are_refused(reg, model, bad):
    with pytest.raises(UnsafeNameError):
        reg.register(bad, model)
    reg.register("ok", model)
    with pytest.raises(UnsafeNameError):
        reg.promote("ok", 1, bad)


def test_references_and_numeric_aliases(reg, model):
    assert parse_ref("churn") == ("churn", None, None)
    assert parse_ref("churn@3") == ("churn", 3, None)
    assert parse_ref("churn@production") == ("churn", None, "production")
    reg.register("churn", model)
    with pytest.raises(UnsafeNameError, match="all digits"):
        reg.promote("churn", 1, "42")
    reg.promote("churn", 1, "production")
    assert reg.resolve("churn@production").version == reg.resolve("churn@1").version == 1


def test_metrics_and_lineage_must_be_json(reg, model):
    with pytest.raises(TypeError, match="metrics"):
        reg.register("churn", model, metrics={"auc": object()})
    with pytest.raises(TypeError, match="cannot serve"):
        reg.register("churn", object())
    v = reg.register("churn", model, lineage={"input_snapshot": {"files": ["a.parquet"]},
                                              "trained": np.int64(3)})  # fmt: skip
    assert v.lineage == {"input_snapshot": {"files": ["a.parquet"]}, "trained": 3}


def test_the_registry_lives_in_the_run_stores_private_database(home: Path, model):
    with ModelRegistry(home) as reg:
        mv = reg.register("churn", model)
    mode = stat.S_IMODE(os.stat(home / "runs.db").st_mode)
    assert mode == 0o600
    assert not (home / "registry.db").exists()
    with RunStore.open(home) as runs, runs.transaction(read=True) as conn:
        assert conn.exec_driver_sql("SELECT digest FROM model_versions").scalar() == mv.digest


def test_newer_registry_schema_is_refused(home: Path):
    ModelRegistry(home).close()
    import sqlite3

    with sqlite3.connect(home / "runs.db") as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="run store at .* has schema version 99"):
        ModelRegistry(home)


def test_a_registry_on_a_network_filesystem_is_refused_by_name(home, tmp_path, monkeypatch):
    from rayline.store import sql

    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nserver:/export {tmp_path} nfs4 rw 0 0\n")
    monkeypatch.setattr(sql, "_MOUNTS_FILE", str(mounts))
    monkeypatch.delenv("RAYLINE_ALLOW_NETWORK_FS", raising=False)
    with pytest.raises(StoreError, match="SQLite run store .* network filesystem \\(nfs4\\)"):
        ModelRegistry(home)


def test_register_model_task_records_lineage_from_the_task_context(home: Path, model):
    store = ArtifactStore.open(home)
    ctx = context.TaskContext("run123", "register", "churn_flow", 1, store)
    token = context._activate(ctx)
    try:
        mv = register_model(model, name="churn", alias="staging",
                            lineage={"input_snapshot": {"rows": 60}})  # fmt: skip
    finally:
        context._deactivate(token)
    assert mv.version == 1 and mv.aliases == ("staging",)
    assert mv.lineage["run_id"] == "run123" and mv.lineage["node_id"] == "register"
    assert mv.lineage["input_snapshot"] == {"rows": 60}
    assert ModelRegistry(home).history("churn")[0].actor == "run:run123"


@task
def lineage_model(n: int) -> Doubler:
    return Doubler()


@flow
def lineage_flow(n: int = 3):
    return register_model(lineage_model(n), name="lineage", alias="staging")


def test_register_model_gets_the_run_lineage_from_the_driver_not_the_run_store(home: Path, tmp_path: Path):
    # The run store is not home/runs.db (RAYLINE_DB_URL elsewhere): a task that looked for it
    # would find nothing. The lineage comes from the driver, through the task's context.
    elsewhere = tmp_path / "db" / "runs.db"
    elsewhere.parent.mkdir()
    settings = Settings(home=home, heartbeat_interval=0.5, lease_ttl=5.0, db_url=f"sqlite:///{elsewhere}")
    done = rayline.run(lineage_flow, settings=settings, executor="local", n=7)
    assert done.status.ok, done.error
    assert not (home / "runs.db").exists()
    mv = ModelRegistry(settings).get("lineage")  # in the run store's database, where the driver wrote it
    with RunStore(settings.db_url) as runs:
        rec = runs.get_run(done.run_id)
        plan = json.loads(runs.get_plan(rec.plan_hash))
    upstream = [n for n in plan["nodes"] if n["id"] != mv.lineage["node_id"]]
    text = "\n".join(f"{n['id']}:{n['code_hash']}" for n in sorted(upstream, key=lambda n: n["id"]))
    assert mv.lineage == {"run_id": done.run_id, "node_id": "register_model", "flow_name": "lineage_flow",
                          "run_params": {"n": 7}, "plan_hash": rec.plan_hash,
                          "code_hash": hashlib.sha256(text.encode()).hexdigest()}  # fmt: skip
    assert mv.aliases == ("staging",)


def test_register_model_outside_a_run_uses_rayline_home(home: Path):
    mv = register_model(Doubler(), name="plain")
    assert ModelRegistry(home).get("plain").digest == mv.digest


# ------------------------------------------------------------------- the servable protocol


def test_record_predictor_checks_records_before_predicting(model):
    p = RecordPredictor(model, flavor="sklearn", inputs=["a", "b", "c"])
    assert p.predict(p.check([{"a": 1.0, "b": 0.0, "c": 0.0}])) == [1]
    with pytest.raises(InputError, match="missing field"):
        p.check([{"a": 1.0, "c": 2.0}])
    with pytest.raises(InputError, match="must be a list"):
        p.check({"a": 1})
    with pytest.raises(InputError, match="empty"):
        p.check([])
    with pytest.raises(InputError, match=r"records\[0\].a must be a number"):
        p.check([{"a": [1], "b": 0, "c": 0}])
    with pytest.raises(InputError, match="could not score"):
        p.predict([{"a": "x", "b": 0.0, "c": 0.0}])
    assert flavor_of(Doubler()) == "pyfunc"
    assert RecordPredictor(Doubler(), flavor="pyfunc").predict([{"x": 2}]) == [4]


# ------------------------------------------------------------------------------- the CLI


def test_models_cli_lists_shows_promotes_and_rolls_back(home: Path, model):
    from rayline.cli.models import models_group

    with ModelRegistry(home) as r:
        r.register("churn", model, metrics={"auc": 0.9})
        r.register("churn", model, metrics={"auc": 0.95})
    cli = CliRunner()
    out = cli.invoke(models_group, ["list", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0]["latest_version"] == 2
    assert cli.invoke(models_group, ["promote", "churn", "1", "production"]).exit_code == 0
    out = cli.invoke(models_group, ["promote", "churn", "2", "production", "--reason", "gate",
                                    "--json"])  # fmt: skip
    assert json.loads(out.output)["from_version"] == 1
    out = cli.invoke(models_group, ["show", "churn@production", "--json"])
    assert json.loads(out.output)["version"] == 2
    out = cli.invoke(models_group, ["rollback", "churn", "production"])
    assert out.exit_code == 0 and "2 -> 1" in out.output
    out = cli.invoke(models_group, ["history", "churn", "--json"])
    assert [e["event"] for e in json.loads(out.output)] == ["promote", "promote", "rollback"]
    text = cli.invoke(models_group, ["show", "churn"])
    assert text.exit_code == 0 and "auc=0.95" in text.output


@pytest.mark.parametrize("args, message", [
    (["show", "nope"], "no model named 'nope'"),
    (["show", "churn@7"], "no version 7"),
    (["show", "churn@canary"], "no alias 'canary'"),
    (["promote", "churn", "3", "production"], "no version 3"),
    (["rollback", "churn", "production"], "no alias 'production'"),
    (["history", "nope"], "no model named 'nope'"),
    (["show", "../x"], "unsafe name"),
])  # fmt: skip
def test_models_cli_exits_2_for_unknown_names(home: Path, model, args, message):
    from rayline.cli.models import models_group

    with ModelRegistry(home) as r:
        r.register("churn", model)
    out = CliRunner().invoke(models_group, args)
    assert out.exit_code == 2
    assert message in out.output


def test_torch_modules_need_inputs_and_predict_from_records(reg):
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight[:] = torch.tensor([[1.0, -1.0]])
        net.bias[:] = 0.0
    with pytest.raises(TypeError, match="inputs"):
        reg.register("net", net)
    v = reg.register("net", net, inputs=["x", "y"])
    assert v.flavor == "torch" and v.inputs == ("x", "y")
    p = RecordPredictor(reg.load("net"), flavor="torch", inputs=v.inputs)
    assert p.predict([{"x": 3.0, "y": 1.0}, {"y": 2.0, "x": 0.5}]) == pytest.approx([2.0, -1.5])
    with pytest.raises(InputError, match="must be a number"):
        p.predict([{"x": "3", "y": 1.0}])


def test_a_registry_copy_loads_a_given_version_without_opening_its_database(home: Path, model):
    # What a serving replica does: it gets the version from the driver and loads it through the
    # registry's load(version), from the artifact store alone.
    import pickle

    with ModelRegistry(home) as reg:
        mv = reg.register("churn", model)
        copy = pickle.loads(pickle.dumps(reg))
    for f in home.glob("runs.db*"):
        f.unlink()
    x, _ = _frame(5)
    assert list(copy.load(mv).predict(x)) == list(model.predict(x))
    assert copy.load_features(mv) is None
    assert not (home / "runs.db").exists()
