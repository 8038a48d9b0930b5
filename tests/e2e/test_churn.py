"""The churn flow end to end (small size) on the session Ray: the Python flow and its YAML twin
run, register a model with held-out metrics, and the model answers over real HTTP."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

import rayline
from rayline.store.states import RunStatus

pytestmark = pytest.mark.usefixtures("ray_session")

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"files": 2, "rows_per_file": 4000, "tune_samples": 2, "epochs": 2}
RECORDS = [
    {"tenure": 2, "monthly_charges": 105.0, "support_calls": 5, "plan": "basic", "region": "south", "age": 24},
    {"tenure": 70, "monthly_charges": 25.0, "support_calls": 0, "plan": "premium", "region": "east", "age": 61},
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_registered(run, name: str) -> None:
    assert run.status == RunStatus.SUCCEEDED, run.error
    mv = run.result()
    assert mv.name == name and mv.version == 1 and "production" in mv.aliases
    assert mv.metrics["accuracy"] > 0.6 and mv.metrics["auc"] > 0.65, mv.metrics
    assert mv.metrics["rows"] > 1000  # scored on the held-out 20 %


def test_the_python_flow_trains_registers_and_serves(settings, home, tmp_path):
    from ray import serve

    from rayline.serving import serve_model, stop_serving

    run = rayline.run(ROOT / "flows" / "churn.py", {**SMALL, "data_dir": str(tmp_path / "churn")}, settings=settings)
    _check_registered(run, "churn")
    assert len(list((tmp_path / "churn").glob("*.parquet"))) == 2
    try:
        d = serve_model("churn", alias="production", home=home, port=_free_port())
        r = httpx.post(f"{d.url}/predict", json={"records": RECORDS}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["version"] == 1 and len(body["predictions"]) == 2
        assert set(body["predictions"]) <= {0, 1}
        assert httpx.get(f"{d.url}/healthz", timeout=30).status_code == 200
        bad = httpx.post(f"{d.url}/predict", json={"records": [{"tenure": 1}]}, timeout=30)
        assert 400 <= bad.status_code < 500 and "monthly_charges" in bad.text
        stop_serving("churn", home=home)
    finally:
        serve.shutdown()  # the next module may start Serve on a port of its own


def test_the_yaml_flow_runs_the_same_pipeline(settings, tmp_path):
    data = tmp_path / "churn"
    params = {**SMALL, "data_dir": str(data), "model_name": "churn-yaml"}
    run = rayline.run(ROOT / "configs" / "churn.yaml", params, settings=settings)
    _check_registered(run, "churn-yaml")
    assert {t.node_id for t in run.tasks} >= {"dataset", "source", "parts", "features", "tuned", "model",
                                              "metrics", "registered"}
