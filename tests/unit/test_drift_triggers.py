"""Drift and Metric triggers polled with an injected clock; ``rayline drift show`` (no Ray)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from rayline.monitoring.input_log import InputLogger
from rayline.triggers.drift import Drift
from rayline.triggers.metric import Metric
from rayline.triggers.trigger import trigger_class

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _log(home, shift: float, n: int = 400, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    lg = InputLogger(home, "churn", 1, flush_records=10**6, flush_seconds=60)
    lg.log([{"a": float(v), "b": float(w)} for v, w in zip(rng.normal(shift, 1, n), rng.normal(0, 1, n), strict=True)])
    lg.close()


def test_drift_fires_once_per_window_and_records_why(home, tmp_path):
    rng = np.random.default_rng(1)
    ref = tmp_path / "train.parquet"
    pd.DataFrame({"a": rng.normal(0, 1, 2000), "b": rng.normal(0, 1, 2000),
                  "label": rng.integers(0, 2, 2000)}).to_parquet(ref)  # fmt: skip
    trig = Drift("churn", reference=str(ref), threshold=0.2, min_rows=100, window_s=1e10)
    assert trigger_class("drift") is Drift
    assert trig.poll(NOW, {}).fires == ()  # nothing logged yet
    _log(home, shift=0.0)
    calm = trig.poll(NOW, {})
    assert calm.fires == () and calm.state["score"] < 0.1
    _log(home, shift=2.0, seed=2)
    _log(home, shift=2.0, seed=3)
    poll = trig.poll(NOW, calm.state)
    (fire,) = poll.fires
    assert fire.info["kind"] == "drift" and "a" in fire.info["drifted"] and "b" not in fire.info["drifted"]
    assert fire.info["features"]["a"] > 0.2 and "PSI" in fire.reason
    state = trig.settle(poll.state, fire, "start")
    assert trig.poll(NOW, state).fires == ()  # the same window never fires twice
    out = CliRunner().invoke(__import__("rayline.cli.main", fromlist=["cli"]).cli,
                             ["drift", "show", "churn", "--json"])  # fmt: skip
    assert out.exit_code == 0, out.output
    shown = json.loads(out.output)
    assert shown["drifted"] and shown["drifted_features"] == ["a"] and shown["model"] == "churn"
    text = CliRunner().invoke(__import__("rayline.cli.main", fromlist=["cli"]).cli, ["drift", "show", "churn"])
    assert "drift in churn" in text.output and "yes" in text.output


def test_drift_reads_a_log_dir_and_records_the_report_it_decided_on(home, tmp_path):
    from rayline.store.artifacts import ArtifactStore

    ref = tmp_path / "train.parquet"
    pd.DataFrame({"a": np.random.default_rng(1).normal(0, 1, 2000)}).to_parquet(ref)
    lg = InputLogger(home, "churn", 1, flush_seconds=60, dir=tmp_path / "logs")
    lg.log([{"a": float(v)} for v in np.random.default_rng(2).normal(2, 1, 400)])
    lg.close()
    assert Drift("churn", reference=str(ref), min_rows=100, window_s=1e10).poll(NOW, {}).fires == ()
    trig = Drift("churn", reference="train.parquet", min_rows=100, window_s=1e10, log_dir="logs")
    trig = trig.resolved(tmp_path)
    assert trig.log_dir == str(tmp_path / "logs") and trig.reference == str(ref)
    (fire,) = trig.poll(NOW, {}).fires
    report = ArtifactStore.open(home).get(fire.info["report"])
    assert report["window"]["digest"] == fire.info["window"] and report["drifted_features"] == ["a"]


def test_drift_show_without_a_report_is_a_usage_error(home):
    from rayline.cli.main import cli

    out = CliRunner().invoke(cli, ["drift", "show", "nope"])
    assert out.exit_code == 2 and "no drift report" in out.output


def test_metric_fires_when_accuracy_falls_below_the_threshold(tmp_path):
    fb = tmp_path / "feedback"
    fb.mkdir()
    trig = Metric(str(fb / "*.parquet"), metric="accuracy", threshold=0.8, min_rows=50)
    assert trig.poll(NOW, {}).fires == ()
    good = pa.table({"prediction": [1] * 90 + [0] * 10, "label": [1] * 100})
    pq.write_table(good, fb / "day1.parquet")
    poll = trig.poll(NOW, {})
    assert poll.fires == () and poll.state["value"] == 0.9
    pq.write_table(pa.table({"prediction": [0] * 200, "label": [1] * 200}), fb / "day2.parquet")
    poll = trig.poll(NOW, poll.state)
    (fire,) = poll.fires
    assert fire.info["kind"] == "metric" and fire.info["value"] < 0.8 and "accuracy" in fire.reason
    assert trig.poll(NOW, trig.settle(poll.state, fire, "start")).fires == ()
    assert Metric(str(fb), metric="rmse", threshold=0.1, min_rows=1).poll(NOW, {}).fires
