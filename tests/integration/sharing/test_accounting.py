"""Accounting: every attempt records what it held (its planned CPUs, GPUs, memory) and for how
long; tasks and runs sum it; ``rayline runs show --json`` and ``rayline usage`` report it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

import rayline
from rayline import flow, task
from rayline.cli.main import cli
from rayline.config import Settings
from rayline.display.run_view import read_run_view
from rayline.launch.session import Session
from rayline.store.states import RunStatus

ROOT = Path(__file__).resolve().parents[3]


@task(cpus=2, gpus=1, memory=32 * 1024 * 1024)
def on_the_gpu(seconds: float) -> float:
    start = time.time()
    time.sleep(seconds)
    return time.time() - start


@task(cpus=1)
def small(x: float) -> float:
    return x


@flow
def accounted(seconds: float = 0.6):
    return small(on_the_gpu(seconds))


def _show_json(run_id: str) -> dict:
    out = CliRunner().invoke(cli, ["runs", "show", run_id, "--json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def test_gpu_seconds_of_a_one_gpu_task_match_its_run_time_locally(settings):
    run = rayline.run(accounted, executor="local", settings=settings)
    assert run.status == RunStatus.SUCCEEDED
    took = run.result()
    doc = _show_json(run.run_id)
    gpu_task = next(t for t in doc["tasks"] if t["node_id"].startswith("on_the_gpu"))
    attempt = gpu_task["attempt_log"][0]
    assert abs(attempt["gpu_seconds"] - took) < 1.0
    assert abs(attempt["cpu_seconds"] - 2 * took) < 2.0
    assert attempt["memory_bytes"] == 32 * 1024 * 1024
    assert gpu_task["gpu_seconds"] == attempt["gpu_seconds"]
    small_task = next(t for t in doc["tasks"] if t["node_id"].startswith("small"))
    assert small_task["gpu_seconds"] == 0.0
    assert doc["gpu_seconds"] == gpu_task["gpu_seconds"]
    assert doc["cpu_seconds"] == round(gpu_task["cpu_seconds"] + small_task["cpu_seconds"], 3)


def test_usage_sums_runs_by_flow_queue_and_day(settings):
    for _ in range(2):
        run = rayline.run(accounted, {"seconds": 0.2}, executor="local", settings=settings)
        assert run.status == RunStatus.SUCCEEDED
    with Session(settings, executor="local") as session:
        ids = [r.run_id for r in session.runs.list_runs(flow_name="accounted")]
        views = [read_run_view(session.runs, i) for i in ids]
    want = round(sum(v.usage.gpu_seconds for v in views), 3)
    for by, key in (("flow", "accounted"), ("queue", "default")):
        out = CliRunner().invoke(cli, ["usage", "--by", by, "--json"])
        assert out.exit_code == 0, out.output
        (row,) = json.loads(out.output)
        assert (row["key"], row["runs"], row["attempts"]) == (key, 2, 4)
        assert abs(row["gpu_seconds"] - want) < 0.01 and row["gpu_seconds"] >= 0.4
    out = CliRunner().invoke(cli, ["usage", "--by", "day", "--since", "2999-01-01", "--json"])
    assert json.loads(out.output) == []
    table = CliRunner().invoke(cli, ["usage", "--by", "day"])
    assert table.exit_code == 0 and "GPU-SECONDS" in table.output
    bad = CliRunner().invoke(cli, ["usage", "--since", "yesterday"])
    assert bad.exit_code == 2


def test_gpu_seconds_on_ray_with_a_logical_gpu(tmp_path):
    """A driver on its own Ray with one logical GPU (the shared fixture has none)."""
    home, timing = tmp_path / "home", tmp_path / "took"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]), "RAYLINE_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "tests.integration.sharing.gpu_driver", str(home), str(timing)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_id, status = done.stdout.split()[-2:]
    assert status == "SUCCEEDED"
    took = float(timing.read_text())
    with Session(Settings(home=home), executor="local") as session:
        view = read_run_view(session.runs, run_id)
    (attempt,) = view.tasks[0].attempt_log
    assert attempt.usage is not None and abs(attempt.usage.gpu_seconds - took) < 1.0
    assert view.usage.gpu_seconds == attempt.usage.gpu_seconds
    assert attempt.usage.memory_bytes == 64 * 1024 * 1024
