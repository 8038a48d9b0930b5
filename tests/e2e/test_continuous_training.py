"""Continuous training end to end on the session Ray: a served model under bounded load on
127.0.0.1, its inputs logged; shifted data lands, the drift trigger (polled once, with an injected
time) fires, a retrained challenger passes the gate and serves, with zero failed requests; a
second, worse challenger (label-shuffled) is rejected and the champion keeps serving."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, datetime

import httpx
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.ray


def _data(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(shift, 1, n), "b": rng.normal(0, 1, n)})
    df["label"] = (df.a - 0.5 * df.b > (2 * shift)).astype(int)  # the concept moves with the data
    return df


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Load:
    """Two threads posting records from ``self.shift``'s distribution; bounded in count and time."""

    def __init__(self, url: str, max_requests: int = 6000, max_s: float = 90.0) -> None:
        self.url, self.shift, self.max_requests = url, 0.0, max_requests
        self.deadline = time.monotonic() + max_s
        self.results: list[tuple[int, int | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(2)]

    def _run(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(timeout=30) as c:
            while not self._stop.is_set() and time.monotonic() < self.deadline and len(self.results) < self.max_requests:
                body = {"records": [{"a": float(rng.normal(self.shift, 1)), "b": float(rng.normal())}]}
                try:
                    r = c.post(f"{self.url}/predict", json=body)
                    self.results.append((r.status_code, r.json().get("version") if r.status_code == 200 else None))
                except httpx.HTTPError:
                    self.results.append((599, None))
                time.sleep(0.005)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=40)

    def failures(self) -> list[int]:
        return [s for s, _ in self.results if s != 200]


def _wait(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_drift_retrain_gate_rollout_with_zero_failed_requests(ray_session, home, tmp_path, monkeypatch):
    from ray import serve
    from sklearn.linear_model import LogisticRegression

    from rayline.serving.rollout import serve_model
    from rayline.tasks.evaluation import split
    from rayline.tasks.gate import gate_and_promote, rollout_if_promoted
    from rayline.tasks.registry import ModelRegistry
    from rayline.tasks.train import train_sklearn
    from rayline.triggers.drift import Drift, window_files
    from rayline.triggers.drift_stats import load_report

    monkeypatch.setenv("RAYLINE_SERVE_REPLICA_ENV", json.dumps({"RAYLINE_INPUT_LOG": '{"flush_seconds": 0.3}'}))
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    _data(1500, 0).to_parquet(train_dir / "part-0.parquet")
    reg = ModelRegistry(home)
    parts = split(pd.read_parquet(train_dir), test_fraction=0.25, seed=0)
    first = gate_and_promote(train_sklearn(parts, estimator=LogisticRegression(), label="label"), parts,
                             model_name="churn", home=reg)  # fmt: skip
    assert first.promoted and first.challenger_version == 1
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serving = dict(home=reg, port=port, health_check_period_s=0.5, health_check_timeout_s=5, bake_s=1.0)
    try:
        d = serve_model("churn", alias="production", app_name="churn-ct", **serving)
        with Load(d.url) as load:
            trig = Drift("churn", reference=str(train_dir), threshold=0.2, min_rows=100, window_s=3600,
                         home=str(home))  # fmt: skip
            _wait(lambda: len(window_files(home, "churn")) > 0)
            now = datetime.now(UTC)
            assert trig.poll(now, {}).fires == ()  # served inputs look like the training data
            # new data lands with a shifted distribution; traffic shifts with it
            _data(1500, 1, shift=2.0).to_parquet(train_dir / "part-1.parquet")
            new = _data(1500, 2, shift=2.0)
            load.shift = 2.0
            since = time.time()
            _wait(lambda: sum(1 for s, _ in load.results[-200:] if s == 200) >= 150)
            _wait(lambda: any(f.stat().st_mtime >= since for f in window_files(home, "churn")))
            drift = Drift("churn", reference=str(train_dir / "part-0.parquet"), threshold=0.2,
                          min_rows=50, window_s=time.time() - since, home=str(home))  # fmt: skip
            (fire,) = drift.poll(datetime.now(UTC), {}).fires
            assert "a" in fire.info["drifted"] and fire.info["score"] > 0.2
            assert load_report("churn", home).drifted_features == fire.info["drifted"]
            # retrain on the new data; the gate compares on the same held-out rows
            parts = split(new, test_fraction=0.3, seed=1)
            challenger = train_sklearn(parts, estimator=LogisticRegression(), label="label")
            decision = gate_and_promote(challenger, parts, model_name="churn", margin=0.05, home=reg,
                                        lineage={"trigger": dict(fire.info)})  # fmt: skip
            assert decision.promoted, decision.reason
            assert decision.challenger_score > decision.champion_score + 0.05
            out = rollout_if_promoted(decision, app_name="churn-ct", watch_s=1.5,
                                      probe=[{"a": 2.0, "b": 0.0}], **serving)  # fmt: skip
            assert out.action == "serving" and out.version == 2, out
            n = len(load.results)
            _wait(lambda: len(load.results) > n + 50)
            assert {v for _, v in load.results[-20:]} == {2}
            # round two: a worse challenger (shuffled labels) must leave v2 serving
            bad = parts.train.assign(label=np.random.default_rng(3).permutation(parts.train["label"].to_numpy()))
            worse = train_sklearn(bad, estimator=LogisticRegression(), label="label")
            second = gate_and_promote(worse, parts, model_name="churn", margin=0.0, home=reg)
            assert not second.promoted and second.champion_version == 2
            assert rollout_if_promoted(second, app_name="churn-ct", **serving).action == "none"
            n = len(load.results)
            _wait(lambda: len(load.results) > n + 50)
        assert load.failures() == [], f"{len(load.failures())} failed of {len(load.results)}"
        assert {v for _, v in load.results[-20:]} == {2}
        assert reg.aliases("churn") == {"production": 2}
        events = [(e.event, e.to_version) for e in reg.history("churn")]
        assert ("promote", 2) in events and ("gate_rejected", 3) in events
        assert reg.get("churn", 2).lineage["trigger"]["kind"] == "drift"
    finally:
        serve.shutdown()
        reg.close()
