"""Continuous training end to end, driven by the real scheduler loop on the session Ray.

A model serves under bounded load on 127.0.0.1 with its inputs logged (``serve_model``'s
``input_log`` option). ``Scheduler.run_forever`` runs in a thread with a drift trigger attached to
the retraining flow ``flows/retrain.py`` (read what landed, train, register, gate, roll out),
each run started in-process by ``InProcessLauncher`` on the session Ray. Nothing in the test
calls a task: the traffic shifts, the trigger fires, the run retrains, the gate promotes and the
served version changes by itself, with zero failed requests. Then label-shuffled data lands, the
trigger fires again (the injected clock skips the trigger's cooldown), the gate rejects the worse
challenger and the champion keeps serving.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.ray

FLOW = Path(__file__).parent / "flows" / "retrain.py"
COOLDOWN = 600.0  # trigger seconds; the test's clock jumps over it for the second round
WINDOW = COOLDOWN + 60.0  # the whole test in round one; the last 60 s after the jump


def _data(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(shift, 1, n), "b": rng.normal(0, 1, n)})
    df["label"] = (df.a - 0.5 * df.b > shift).astype(int)  # the concept moves with the data
    return df


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Load:
    """Two threads posting records from ``self.shift``'s distribution; bounded in count and time."""

    def __init__(self, url: str, max_requests: int = 30_000, max_s: float = 240.0) -> None:
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
                time.sleep(0.02)

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

    def recent_versions(self, n: int = 50) -> set[int | None]:
        """The versions that answered the next ``n`` requests (waits for them)."""
        start = len(self.results)
        _wait(lambda: len(self.results) >= start + n, "more requests answered")
        return {v for _, v in self.results[start : start + n]}


class Clock:
    """The scheduler's clock: real UTC time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)


def _wait(cond, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.1)
    return value


def _schedules(tmp_path: Path, reference: Path, params: dict) -> Path:
    """A schedules file (JSON is YAML) attaching a drift trigger to the retraining flow."""
    path = tmp_path / "schedules.yaml"
    item = {"flow": f"{FLOW}:retrain", "drift": "churn", "reference": str(reference), "threshold": 0.2,
            "interval": 1.0, "min_rows": 300, "window_s": WINDOW, "cooldown": COOLDOWN, "params": params}  # fmt: skip
    path.write_text(json.dumps({"schedules": [item]}))
    return path


def test_drift_trigger_retrains_gates_and_rolls_out_through_the_scheduler(ray_session, home, settings, tmp_path):
    from ray import serve
    from sklearn.linear_model import LogisticRegression

    from rayline.api import load_run
    from rayline.launch.launchers import InProcessLauncher
    from rayline.models.registry.sql import ModelRegistry
    from rayline.serving.rollout import serve_model
    from rayline.store.artifacts import ArtifactStore
    from rayline.store.runs import RunStore
    from rayline.store.trigger_states import TriggerStates
    from rayline.tasks.evaluation import split
    from rayline.tasks.gate import gate_and_promote
    from rayline.tasks.train import train_sklearn
    from rayline.triggers.catalog import load_entries
    from rayline.triggers.scheduler import Scheduler

    # champion v1, trained on the original data (bootstrapped here, not by the scheduler)
    reference = tmp_path / "train-0.parquet"
    _data(1500, 0).to_parquet(reference)
    landing = tmp_path / "landing"
    landing.mkdir()
    holdout = tmp_path / "holdout.parquet"  # trusted labels from the new distribution
    _data(600, 9, shift=2.0).to_parquet(holdout)
    reg = ModelRegistry(home)
    parts = split(pd.read_parquet(reference), test_fraction=0.25, seed=0)
    first = gate_and_promote(train_sklearn(parts, estimator=LogisticRegression(), label="label"), parts,
                             model_name="churn", home=reg)  # fmt: skip
    assert first.promoted and first.challenger_version == 1
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    entries = load_entries([_schedules(tmp_path, reference, {"landing": str(landing), "holdout": str(holdout),
                                                             "port": port, "app_name": "churn-ct"})])  # fmt: skip
    (entry,) = entries
    assert entry.flow_name == "retrain" and entry.trigger.kind == "drift"
    launcher, clock, stop = InProcessLauncher(settings), Clock(), threading.Event()

    def loop() -> None:
        with Scheduler(entries, settings=settings, clock=clock, launcher=launcher) as sched:
            sched.run_forever(stop, max_sleep=0.5)

    store = RunStore(settings.run_store_url)
    states = TriggerStates(store)
    scheduler = threading.Thread(target=loop, name="scheduler", daemon=True)
    try:
        d = serve_model("churn", alias="production", app_name="churn-ct", home=reg, port=port,
                        health_check_period_s=0.5, health_check_timeout_s=5,
                        input_log={"flush_seconds": 1.0})  # fmt: skip
        with Load(d.url) as load:
            scheduler.start()
            # served inputs look like the training data: the trigger checks, and does not fire
            checked = _wait(lambda: (s := states.get(entry.trigger_id)) and "score" in s.state and s.state,
                            "the trigger's first drift check")  # fmt: skip
            assert checked["score"] <= 0.2 and store.list_runs(flow_name="retrain") == []
            # new data lands with a shifted distribution, and traffic shifts with it
            _data(1500, 1, shift=2.0).to_parquet(landing / "batch-1.parquet")
            load.shift = 2.0
            _wait(lambda: launcher.finished, "the drift-triggered run", timeout=180)
            (run_id, status), = launcher.finished  # fmt: skip
            assert status == "SUCCEEDED", load_run(run_id, settings=settings).error
            run = load_run(run_id, settings=settings)
            why = run.record.trigger
            assert why["kind"] == "drift" and why["reason"].startswith("drift: PSI")
            assert why["score"] > 0.2 and "a" in why["drifted"] and why["features"]["a"] > 0.2
            report = ArtifactStore.open(home).get(why["report"])  # the report the decision read
            assert report["model"] == "churn" and report["window"]["digest"] == why["window"]
            gate = run.output("gate_and_promote")
            assert gate.promoted and gate.challenger_version == 2, gate.reason
            assert gate.challenger_score > gate.champion_score + 0.05
            outcome = run.result()
            assert (outcome.action, outcome.version) == ("serving", 2), outcome
            assert load.recent_versions() == {2}  # the served version changed by itself
            assert reg.aliases("churn") == {"production": 2}
            assert reg.get("churn", 2).lineage["trigger"]["report"] == why["report"]
            assert len(store.list_runs(flow_name="retrain")) == 1  # the cooldown holds
            # round two: label-shuffled data lands; once the cooldown is over, the trigger fires
            bad = _data(1500, 2, shift=2.0)
            bad["label"] = np.random.default_rng(3).permutation(bad["label"].to_numpy())
            bad.to_parquet(landing / "batch-2.parquet")
            clock.offset = COOLDOWN
            _wait(lambda: len(launcher.finished) > 1, "the second drift-triggered run", timeout=180)
            run_id2, status2 = launcher.finished[1]
            assert status2 == "SUCCEEDED", load_run(run_id2, settings=settings).error
            run2 = load_run(run_id2, settings=settings)
            assert run2.record.trigger["kind"] == "drift"
            gate2 = run2.output("gate_and_promote")
            assert not gate2.promoted and gate2.champion_version == 2 and gate2.challenger_version == 3
            assert gate2.challenger_score < gate2.champion_score, gate2.reason  # really worse
            assert run2.result().action == "none"
            assert load.recent_versions() == {2}  # the champion keeps serving
        assert load.failures() == [], f"{len(load.failures())} failed of {len(load.results)}"
        assert reg.aliases("churn") == {"production": 2}
        events = [(e.event, e.to_version) for e in reg.history("churn")]
        assert ("promote", 2) in events and ("rollout", 2) in events and ("gate_rejected", 3) in events
        assert [r.run_id for r in store.list_runs(flow_name="retrain")] == [run_id2, run_id]
    finally:
        stop.set()
        if scheduler.ident is not None:
            scheduler.join(timeout=120)
        store.close()
        serve.shutdown()
        reg.close()
