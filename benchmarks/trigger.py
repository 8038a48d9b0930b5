"""Trigger latency, with the default polling (1 s interval, 1 s debounce), through the real
``rayline scheduler`` (a child process per run). Two figures; files land at random phases of the
polling period, written to a temporary name and renamed, as a producer should.

1. File lands -> its run RUNNING (``--files``, a one-task flow, in-process executor so Ray
   start-up is not counted). Goal: under 5 s.
2. File lands -> the retrained version is the one answering on a real Ray Serve application on
   127.0.0.1, minus the run's training time (``--serve-files``). The flow is a small retrain
   flow: ``read_parquet`` of the watched folder, ``split``, ``train_sklearn``,
   ``gate_and_promote`` (registers the challenger; ties promote, and the data is separable so
   every challenger ties at accuracy 1.0), and a task that calls ``rollout_if_promoted`` (an
   in-place Serve update). The benchmark starts Ray (its GCS address is the fixed address the
   scheduler's runs join: ``rayline scheduler --address``, ``RAY_ADDRESS``), serves version 1,
   and a client polls ``GET /version`` every 20 ms to see when the new version first answers.
   Training time is the ``train_sklearn`` task's record in the run store (ended - started).

Baselines in the same run: a hand-written ``os.scandir`` poll loop with the same 1 s interval
(how long merely noticing the file takes), and the polling interval itself.

    python benchmarks/trigger.py --json [--files 8] [--serve-files 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

SERVE_MODEL, SERVE_APP = "bench-retrain", "bench-retrain"
#: Serve settings shared by the first deployment (here) and every rollout (in the runs).
SERVE_OPTS = {"health_check_period_s": 0.5, "health_check_timeout_s": 5.0}

RETRAIN_FLOW = '''
from rayline import flow, task
from rayline.tasks import gate_and_promote, read_parquet, split, train_sklearn

INBOX, MODEL, APP, PORT = {inbox!r}, {model!r}, {app!r}, {port}


@task(cpus=0.5)
def roll_out(decision):
    from rayline.tasks.gate import rollout_if_promoted

    out = rollout_if_promoted(decision, app_name=APP, port=PORT, watch_s=0.25, interval_s=0.05,
                              bake_s=0.5, **{opts!r})
    if out.action != "serving":
        raise RuntimeError(f"rollout: {{out.reason}}")
    return out.to_dict()


@flow
def retrain(snapshot: str = ""):
    parts = split(read_parquet(INBOX), test_fraction=0.25, seed=0)
    model = train_sklearn(parts, estimator="sklearn.linear_model:LogisticRegression", label="label")
    return roll_out(gate_and_promote(model, parts, model_name=MODEL, metric="accuracy", margin=0.0,
                                     label="label"))
'''

FLOW = '''
from rayline import flow, task

@task
def note(snapshot: str) -> str:
    return snapshot[:12]

@flow
def retrain(snapshot: str = ""):
    return note(snapshot)
'''


def land(inbox: Path, name: str) -> float:
    """Write a file atomically (temp name, then rename); return when it landed."""
    tmp = inbox / f".{name}.tmp"
    tmp.write_text("x,y\n1,2\n" * 100)
    os.replace(tmp, inbox / name)
    return time.time()


def summary(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 3), "mean": round(statistics.fmean(xs), 3),
            "min": round(min(xs), 3), "max": round(max(xs), 3)}  # fmt: skip


def wait_for(condition, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError("benchmark step timed out")


def stop_scheduler(proc: subprocess.Popen[bytes]) -> None:
    """Let the last run's child process exit (its run is already terminal), then stop the
    scheduler (SIGTERM), so no run is interrupted on its way out."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    try:
        wait_for(lambda: not children.exists() or not children.read_text().split(), 30)
    except (TimeoutError, OSError):
        pass
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def rayline_latency(files: int, work: Path, rng: random.Random) -> dict[str, list[float]]:
    sys.path.insert(0, str(SRC))
    from rayline.store.runs import RunStore
    from rayline.store.trigger_states import TriggerStates

    inbox, home = work / "inbox", work / "home"
    inbox.mkdir()
    (work / "retrain_flow.py").write_text(FLOW)
    (work / "schedules.yaml").write_text("schedules:\n  - flow: retrain_flow.py:retrain\n    new_data: inbox\n")
    env = {**os.environ, "RAYLINE_HOME": str(home), "RAYLINE_EXECUTOR": "local", "RAYLINE_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "rayline.cli.main", "scheduler", str(work / "schedules.yaml")],
                            env=env, stdin=subprocess.DEVNULL)  # fmt: skip
    out: dict[str, list[float]] = {"start": [], "fire": [], "launch": []}
    try:
        home.mkdir(exist_ok=True)
        wait_for(lambda: (home / "runs.db").exists(), 60)
        with RunStore.open(home) as store:
            wait_for(lambda: TriggerStates(store).all(), 60)  # the scheduler has polled once
            for i in range(files):
                time.sleep(rng.uniform(0.0, 1.0))  # a random phase of the polling period
                landed = land(inbox, f"part-{i:03}.csv")

                def started(n=i + 1):  # type: ignore[no-untyped-def]
                    runs = [r for r in store.list_runs(limit=5) if r.trigger and r.trigger.get("files") == n]
                    return runs[0] if runs and runs[0].started_at else None

                run = wait_for(started, 60)
                fired = datetime.fromisoformat(run.trigger["fired_at"].replace("Z", "+00:00")).timestamp()
                out["start"].append(run.started_at.timestamp() - landed)
                out["fire"].append(fired - landed)
                out["launch"].append(run.started_at.timestamp() - fired)
                wait_for(lambda rid=run.run_id: store.get_run(rid).status.terminal, 60)
    finally:
        stop_scheduler(proc)
    return out


def scandir_baseline(files: int, work: Path, rng: random.Random, interval: float) -> list[float]:
    """A plain poll loop: list the directory every ``interval`` s and note new names."""
    inbox = work / "inbox-baseline"
    inbox.mkdir()
    seen: dict[str, float] = {}
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            now = time.time()
            for e in os.scandir(inbox):
                if not e.name.startswith(".") and e.name not in seen:
                    seen[e.name] = now
            stop.wait(interval)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    out = []
    for i in range(files):
        time.sleep(rng.uniform(0.0, interval))
        name = f"part-{i:03}.csv"
        landed = land(inbox, name)
        wait_for(lambda n=name: n in seen, 30)
        out.append(max(seen[name] - landed, 0.0))
    stop.set()
    thread.join()
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def separable(rows: int, seed: int):  # type: ignore[no-untyped-def]
    """A table whose label is the sign of ``a`` with a gap around 0: every fit scores 1.0."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    a = rng.choice([-1.0, 1.0], rows) * (0.5 + np.abs(rng.normal(0, 1, rows)))
    return pd.DataFrame({"a": a, "b": rng.normal(0, 1, rows), "label": (a > 0).astype("int64")})


def land_parquet(inbox: Path, name: str, seed: int) -> float:
    """Write a Parquet file atomically (hidden temp name, then rename); return when it landed."""
    tmp = inbox / f".{name}.tmp"
    separable(400, seed).to_parquet(tmp, index=False)
    os.replace(tmp, inbox / name)
    return time.time()


class VersionWatch:
    """A client polling ``GET /version`` every ``every`` s; keeps (answered at, version)."""

    def __init__(self, url: str, every: float = 0.02) -> None:
        self.url, self.every = url, every
        self.seen: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    r = client.get(f"{self.url}/version")
                    version = r.json().get("version") if r.status_code == 200 else None
                except (httpx.HTTPError, ValueError):
                    version = None
                self.seen.append((time.time(), version))
                self._stop.wait(self.every)

    def __enter__(self) -> VersionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def first(self, version: int, after: float) -> float | None:
        """When ``version`` first answered after ``after``."""
        return next((t for t, v in list(self.seen) if t >= after and v == version), None)

    def only_since(self, version: int, after: float) -> float | None:
        """When ``version`` answered every request from then on (the old one had drained)."""
        seen = [(t, v) for t, v in list(self.seen) if t >= after]
        since = None
        for t, v in seen:
            since = (since or t) if v == version else None
        return since


def serving_latency(files: int, work: Path, rng: random.Random) -> list[dict[str, Any]]:
    """Per file: landed -> run RUNNING, -> new version answering, training time (see the module
    docstring, figure 2)."""
    sys.path.insert(0, str(SRC))
    import ray
    from ray import serve
    from sklearn.linear_model import LogisticRegression

    from rayline.models.registry.sql import ModelRegistry
    from rayline.serving.rollout import serve_model
    from rayline.store.runs import RunStore
    from rayline.store.trigger_states import TriggerStates

    inbox, home = work / "serve-inbox", work / "serve-home"
    inbox.mkdir()
    home.mkdir()
    port = free_port()
    (work / "retrain_serve.py").write_text(RETRAIN_FLOW.format(
        inbox=str(inbox), model=SERVE_MODEL, app=SERVE_APP, port=port, opts=SERVE_OPTS))  # fmt: skip
    (work / "serve-schedules.yaml").write_text(
        "schedules:\n  - flow: retrain_serve.py:retrain\n    new_data: serve-inbox\n")  # fmt: skip
    # Logical CPUs: the replica and its surge copy (0.5 each) next to the run's task workers.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)  # never a stray cluster
    address = ray.get_runtime_context().gcs_address
    reg = ModelRegistry(home)
    proc = None
    out: list[dict[str, Any]] = []
    try:
        first = separable(400, 10_000)
        reg.register(SERVE_MODEL, LogisticRegression().fit(first[["a", "b"]], first["label"]))
        reg.promote(SERVE_MODEL, 1, "production")
        url = serve_model(SERVE_MODEL, alias="production", app_name=SERVE_APP, home=reg, port=port,
                          **SERVE_OPTS).url  # fmt: skip
        env = {**os.environ, "RAYLINE_HOME": str(home), "RAY_ADDRESS": address, "RAYLINE_LOG_LEVEL": "WARNING"}
        env.pop("RAYLINE_EXECUTOR", None)
        proc = subprocess.Popen([sys.executable, "-m", "rayline.cli.main", "scheduler", "--address", address,
                                 str(work / "serve-schedules.yaml")], env=env, stdin=subprocess.DEVNULL)  # fmt: skip
        wait_for(lambda: (home / "runs.db").exists(), 60)
        with RunStore.open(home) as store, VersionWatch(url) as watch:
            wait_for(lambda: TriggerStates(store).all(), 60)  # the scheduler has polled once
            wait_for(lambda: watch.first(1, 0.0), 30)
            for i in range(files):
                time.sleep(rng.uniform(0.0, 1.0))  # a random phase of the polling period
                landed = land_parquet(inbox, f"part-{i:03}.parquet", seed=i)

                def started(n=i + 1):  # type: ignore[no-untyped-def]
                    runs = [r for r in store.list_runs(limit=5) if r.trigger and r.trigger.get("files") == n]
                    return runs[0] if runs and runs[0].started_at else None

                run = wait_for(started, 120)
                run = wait_for(lambda rid=run.run_id: (r := store.get_run(rid)).status.terminal and r, 300)
                if run.status.value != "SUCCEEDED":
                    raise RuntimeError(f"retrain run {run.run_id} ended {run.status.value}: {run.error}")
                version = reg.aliases(SERVE_MODEL)["production"]
                answered = wait_for(lambda v=version, t=landed: watch.first(v, t), 30)
                only = watch.only_since(version, landed)
                records = [t for t in store.get_tasks(run.run_id) if t.started_at and t.ended_at]
                tasks = {t.node_id: round((t.ended_at - t.started_at).total_seconds(), 3) for t in records}
                train = sum(s for node, s in tasks.items() if node.startswith("train_sklearn"))
                rollout = min(t.started_at.timestamp() for t in records if t.node_id.startswith("roll_out"))
                fired = datetime.fromisoformat(run.trigger["fired_at"].replace("Z", "+00:00")).timestamp()
                out.append({
                    "version": version,
                    "to_running_s": round(run.started_at.timestamp() - landed, 3),
                    "fire_s": round(fired - landed, 3),
                    "to_serving_s": round(answered - landed, 3),
                    "train_s": round(train, 3),
                    "to_serving_minus_train_s": round(answered - landed - train, 3),
                    "to_only_new_s": round(only - landed, 3) if only else None,
                    "rollout_start_to_serving_s": round(answered - rollout, 3),
                    "run_s": round(run.ended_at.timestamp() - run.started_at.timestamp(), 3),
                    "tasks_s": tasks,
                })  # fmt: skip
    finally:
        if proc is not None:
            stop_scheduler(proc)
        reg.close()
        serve.shutdown()
        ray.shutdown()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=8, help="files landing one after another (figure 1)")
    ap.add_argument("--serve-files", type=int, default=3, help="files retrained and served (figure 2)")
    ap.add_argument("--quick", action="store_true", help="3 files and 2 served files (a smoke run)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    files = 3 if args.quick else args.files
    serve_files = min(2, args.serve_files) if args.quick else args.serve_files
    rng = random.Random(args.seed)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rayline-bench-trigger-") as tmp:
        work = Path(tmp)
        ours = rayline_latency(files, work, rng)
        base = scandir_baseline(files, work, rng, interval=1.0)
        served = serving_latency(serve_files, work, rng) if serve_files > 0 else []
    start, detect = summary(ours["start"]), summary(base)

    def col(key: str) -> dict[str, float] | None:
        return summary([f[key] for f in served]) if served else None

    to_serving = col("to_serving_minus_train_s")
    result = {
        "benchmark": "trigger",
        "what": "seconds from a file landing to its run RUNNING (a one-task flow), and to the "
                "retrained version answering on Ray Serve minus the run's training time "
                "(rayline scheduler, default polling)",
        "files": files,
        "poll_interval_s": 1.0,
        "debounce_s": 1.0,
        "rayline_start_s": start,
        "rayline_fire_s": summary(ours["fire"]),
        "rayline_launch_s": summary(ours["launch"]),
        "baseline_scandir_detect_s": detect,
        "ratio_start_vs_scandir_median": round(start["median"] / max(detect["median"], 1e-3), 2),
        "ratio_start_vs_poll_interval": round(start["median"] / 1.0, 2),
        "goal_s": 5.0,
        "meets_goal": start["max"] < 5.0,
        "serving": {
            "what": "retrain flow (read_parquet, split, train_sklearn, gate_and_promote, "
                    "rollout_if_promoted) on the Ray executor (rayline scheduler --address, the "
                    "benchmark's Ray); GET /version polled every 20 ms on 127.0.0.1",
            "files": len(served),
            "to_running_s": col("to_running_s"),
            "fire_s": col("fire_s"),
            "to_serving_s": col("to_serving_s"),
            "train_s": col("train_s"),
            "to_serving_minus_train_s": to_serving,
            "to_only_new_s": summary([f["to_only_new_s"] for f in served if f["to_only_new_s"] is not None])
            if served else None,
            "rollout_start_to_serving_s": col("rollout_start_to_serving_s"),
            "ratio_to_serving_minus_train_vs_scandir_median": round(to_serving["median"] / max(detect["median"], 1e-3), 2)
            if to_serving else None,
            "per_file": served,
        },
        "load_avg_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        print(f"file -> run RUNNING: median {start['median']:.2f} s, max {start['max']:.2f} s "
              f"(fire {result['rayline_fire_s']['median']:.2f} s + launch "
              f"{result['rayline_launch_s']['median']:.2f} s); scandir poll notices in "
              f"{detect['median']:.2f} s; ratio {result['ratio_start_vs_scandir_median']}")  # fmt: skip
        if to_serving:
            sv = result["serving"]
            print(f"file -> new version serving: median {sv['to_serving_s']['median']:.2f} s, minus "
                  f"training {to_serving['median']:.2f} s (train {sv['train_s']['median']:.2f} s, "
                  f"run RUNNING after {sv['to_running_s']['median']:.2f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
