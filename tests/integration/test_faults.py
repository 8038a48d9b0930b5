"""Fault injection on the shared local Ray (RELIABILITY.md, part b): a Ray worker killed with
SIGKILL mid-task (F1), values that cannot be serialised (F15), and, in a process of its own, a
two-node cluster with a logical GPU.

Kills are coordinated through files (the task writes its pid, then waits for a ``go`` marker);
every wait has a timeout."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import rayline
from rayline import flow, task
from rayline.config import Settings
from rayline.store.runs import RunStore
from rayline.store.states import RunStatus, TaskStatus
from tests.coordination import ledger, pid_alive, read_pid, wait_for
from tests.integration.flows import faults
from tests.integration.flows import reliability as rf

ROOT = Path(__file__).resolve().parents[2]
TWO_NODE_SCRIPT = Path(__file__).with_name("two_node_placement.py")


# ---------------------------------------------------------------------------- helpers
def object_files(home: Path) -> list[Path]:
    objects = home / "artifacts" / "objects"
    return sorted(p for p in objects.rglob("*") if p.is_file()) if objects.exists() else []


# ---------------------------------------------------------------------------- F1
@pytest.fixture(scope="module")
def killed_worker_run(ray_session, tmp_path_factory):
    """F1, once for the tests below: run ``chain`` in a thread of this process; SIGKILL the Ray
    worker running ``gated`` while it waits for ``go``; then create ``go``."""
    base = tmp_path_factory.mktemp("f1")
    home, folder = base / "home", base / "folder"
    folder.mkdir()
    settings = Settings(home=home, heartbeat_interval=0.5, lease_ttl=5.0)
    go = folder / "go"
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(rayline.run, rf.chain, settings=settings, folder=str(folder))
        try:
            killed = wait_for(lambda: read_pid(folder / "gated.pid"), 30, "'gated' to write its pid")
            os.kill(killed, signal.SIGKILL)
            wait_for(lambda: not pid_alive(killed), 10, f"worker pid {killed} to die")
        finally:
            go.touch()  # always release the task, so the thread can end
        run = future.result(timeout=60)
    return {"run": run, "killed": killed, "home": home, "folder": folder}


def test_f1_killed_worker_is_retried_by_ray_and_the_run_succeeds(killed_worker_run):
    run = killed_worker_run["run"]
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result() == {"value": 22}
    gated = run.task("gated")
    assert gated.status == TaskStatus.SUCCEEDED
    assert gated.attempts == 2
    attempts = [a for a in run.attempts if a.node_id == "gated"]
    assert [(a.attempt, a.status) for a in attempts] == [(1, TaskStatus.FAILED), (2, TaskStatus.SUCCEEDED)]
    assert "WorkerDied" in (attempts[0].error_type or "")
    assert "died" in (attempts[0].error_message or "")
    assert attempts[1].worker_pid != killed_worker_run["killed"]  # the retry ran in a new worker
    # the other tasks ran once each, without retries
    assert run.task("start").attempts == 1 and run.task("finish").attempts == 1
    assert [a.node_id for a in run.attempts].count("start") == 1


def test_f1_killed_worker_leaves_exactly_one_committed_output(killed_worker_run):
    run, home, folder = killed_worker_run["run"], killed_worker_run["home"], killed_worker_run["folder"]
    assert ledger(folder, "gated") == 2  # two executions (the killed one and the retry) ...
    assert ledger(folder, "start") == 1 and ledger(folder, "finish") == 1
    digests = {t.node_id: t.digest for t in run.tasks}
    assert all(digests.values()) and len(set(digests.values())) == 3
    # ... but one committed output: each stored object is its data file plus its manifest,
    # nothing else (no temp files, no partial or duplicate copies), and only the run's outputs
    files = object_files(home)
    names = [p.name for p in files]
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")], names
    data = sorted(n for n in names if not n.endswith(".json"))
    manifests = sorted(n.removesuffix(".json") for n in names if n.endswith(".json"))
    assert data == manifests == sorted(digests.values())
    gated_file = next(p for p in files if p.name == digests["gated"])
    assert gated_file.parent.name == digests["gated"][:2]
    assert rayline.load_run(run.run_id, settings=Settings(home=home)).output("gated") == 11
    with RunStore(Settings(home=home).run_store_url) as store:
        rows = store.get_attempts(run.run_id, "gated")
        assert sorted(a.attempt for a in rows) == [1, 2]  # no duplicate attempt rows
        assert [t.node_id for t in store.get_tasks(run.run_id)] == ["start", "gated", "finish"]


def test_f1_attempt_killed_by_ray_is_not_attributed_to_the_retry_worker(killed_worker_run):
    """The worker of attempt 1 died before reporting anything, so its pid is either the one the
    test killed or unknown (None); it must not be the pid of the worker that ran attempt 2."""
    run = killed_worker_run["run"]
    first, second = [a for a in run.attempts if a.node_id == "gated"]
    assert first.worker_pid in (None, killed_worker_run["killed"]), (
        f"attempt 1 is recorded as run by pid {first.worker_pid}, the pid of attempt 2's worker "
        f"({second.worker_pid}); the killed worker was pid {killed_worker_run['killed']}"
    )


# ---------------------------------------------------------------------------- F15
SERIALISE = re.compile(r"seriali[sz]|pickl", re.IGNORECASE)


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize(
    ("flow_obj", "node", "what"),
    [(faults.returns_lock, "make_lock", "lock"), (faults.returns_generator, "make_generator", "generator")],
    ids=["lock", "generator"],
)
def test_f15_task_returning_an_unserialisable_value_fails_the_run_naming_node_and_cause(
    settings, tmp_path, flow_obj, node, what
):
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:  # a stuck run fails here, not at the pytest timeout
        run = pool.submit(rayline.run, flow_obj, settings=settings, folder=str(tmp_path)).result(timeout=60)
    assert time.monotonic() - t0 < 30
    assert run.status == RunStatus.FAILED  # finished, not stuck RUNNING
    assert ledger(tmp_path, node) == 1  # the task ran once: a serialisation error is not retried
    t = run.task(node)
    assert t.status == TaskStatus.FAILED and t.attempts == 1
    assert f"'{node}'" in (run.error or ""), run.error
    for text in (run.error or "", t.error_message or ""):
        assert SERIALISE.search(text) and what in text, (
            f"the error does not say that the returned {what} cannot be serialised: {text!r}"
        )
    assert "\x1b[" not in (run.error or "") + (t.error_message or "")  # no terminal colour codes


@pytest.mark.usefixtures("ray_session")
def test_f15_downstream_of_an_unserialisable_output_is_upstream_failed_and_never_runs(settings, tmp_path):
    run = rayline.run(faults.returns_generator, settings=settings, folder=str(tmp_path))
    assert run.status == RunStatus.FAILED
    assert ledger(tmp_path, "consume") == 0
    consume = run.task("consume")
    assert consume.status == TaskStatus.UPSTREAM_FAILED, (consume.status, consume.error_message)
    assert [a for a in run.attempts if a.node_id == "consume"] == []  # no attempt was made


@pytest.mark.usefixtures("ray_session")
def test_f15_task_closing_over_a_lock_is_rejected_at_compile_time_naming_the_variable(settings):
    guard = threading.Lock()

    @task
    def guarded_add(x: int) -> int:
        with guard:
            return x + 1

    @flow
    def locked():
        return guarded_add(1)

    t0 = time.monotonic()
    with pytest.raises(rayline.ValidationError) as err:
        rayline.run(locked, settings=settings)
    assert time.monotonic() - t0 < 10
    text = str(err.value)
    assert "node 'guarded_add'" in text
    assert "closure variable 'guard'" in text and "lock" in text
    with RunStore(settings.run_store_url) as store:
        assert store.list_runs() == []  # rejected before a run was even recorded


# ---------------------------------------------------------------------------- two nodes, one GPU
def test_two_nodes_gpu_tasks_land_on_the_gpu_node_and_cpu_tasks_on_both(tmp_path):
    """A ``ray.cluster_utils.Cluster`` cannot share this session's Ray, so it runs in a process
    of its own (tests/integration/two_node_placement.py)."""
    folder = tmp_path / "folder"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAYLINE_RAY_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(TWO_NODE_SCRIPT), str(tmp_path / "home"), str(folder)],
        capture_output=True, text=True, timeout=150, env=env, cwd=str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("RESULT "))
    out = json.loads(line.removeprefix("RESULT "))
    assert out["status"] == "SUCCEEDED", out["error"]
    head, gpu_node = out["head_node"], out["gpu_node"]
    gpu_tasks, cpu_tasks = out["result"]["gpu"], out["result"]["cpu"]
    assert len(gpu_tasks) == 2 and len(cpu_tasks) == 8
    for t in gpu_tasks:
        assert t["node"] == gpu_node, t
        assert len(t["gpu_ids"]) == 1, t  # Ray assigned it the (logical) GPU
    assert {t["node"] for t in cpu_tasks} == {head, gpu_node}
    assert all(t["gpu_ids"] == [] for t in cpu_tasks)
    rejected = out["two_gpus"]
    assert rejected["raised"] == "ValidationError"
    assert "node 'wants_two_gpus'" in rejected["message"] and "GPU=2" in rejected["message"]
    assert "CPU=1, GPU=1" in rejected["message"]  # names what the cluster's nodes do have
    assert out["runs"] == 1  # the rejected flow never became a run
