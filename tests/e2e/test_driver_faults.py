"""Faults of the driver itself, with the real ``rayline`` console script as the driver, on the
shared local Ray (``--address``): SIGKILL mid-run then resume (F3), ``rayline cancel`` during a
retry (F27), and Ctrl-C (SIGINT).

The drivers are subprocesses with their own ``RAYLINE_HOME`` (the test's) and a short lease;
tasks coordinate with the test through files (pid files, a ``go`` marker, ``ran-<name>``
ledgers), and every wait has a timeout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rayline
from rayline.launch.session import Session
from rayline.store.runs import RunStore
from rayline.store.states import RunStatus, TaskStatus
from tests.coordination import ledger, pid_alive, read_pid, wait_for

pytestmark = pytest.mark.usefixtures("ray_session")

ROOT = Path(__file__).resolve().parents[2]
RAYLINE = Path(sys.executable).parent / "rayline"
FLOWS = ROOT / "tests" / "integration" / "flows"
CHAIN = f"{FLOWS / 'faults.py'}:chain"  # reliability.chain with self-contained task bodies
RELIABILITY_CHAIN = f"{FLOWS / 'reliability.py'}:chain"
HOPELESS_SLOWLY = f"{FLOWS / 'faults.py'}:hopeless_slowly"


# ---------------------------------------------------------------------------- helpers
def driver_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAYLINE_RAY_ADDRESS", "RAYLINE_DB_URL")}
    env.update(
        RAYLINE_HOME=str(home),
        RAYLINE_HEARTBEAT_INTERVAL="0.5",
        RAYLINE_LEASE_TTL="5",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")]),
    )
    return env


class Driver:
    """``rayline run ...`` (or another ``verb``: ``resume``) as a subprocess; stdout and stderr
    go to files (no pipe to fill)."""

    def __init__(self, home: Path, logs: Path, *args: str, env: dict[str, str] | None = None, verb: str = "run"):
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logs / "driver.out", logs / "driver.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([str(RAYLINE), verb, *args], stdout=out, stderr=err,
                                         env=env or driver_env(home), cwd=str(logs))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.out_path.read_text()

    def stderr(self) -> str:
        return self.err_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(RAYLINE), *args], capture_output=True, text=True, timeout=timeout,
                          env=driver_env(home))


def only_run_id(settings) -> str | None:
    if not (settings.resolved_home / "runs.db").exists():
        return None  # the driver has not created the store yet: don't race its migration
    with RunStore(settings.run_store_url) as store:
        runs = store.list_runs()
    assert len(runs) <= 1, runs
    return runs[0].run_id if runs else None


def task_status(settings, run_id: str, node_id: str) -> TaskStatus:
    with RunStore(settings.run_store_url) as store:
        return next(t.status for t in store.get_tasks(run_id) if t.node_id == node_id)


def run_status(settings, run_id: str) -> RunStatus:
    with RunStore(settings.run_store_url) as store:
        return store.get_run(run_id).status


def start_chain_and_wait_in_gated(settings, ray_address: str, folder: Path, logs: Path) -> tuple[Driver, str, int]:
    """Start ``chain`` in a driver; return once ``start`` is recorded SUCCEEDED and ``gated`` is
    running (it wrote its pid and waits for ``go``)."""
    folder.mkdir(parents=True, exist_ok=True)
    driver = Driver(settings.resolved_home, logs, CHAIN, "-p", f"folder={folder}", "--address", ray_address, "--json")
    try:
        gated_pid = wait_for(lambda: read_pid(folder / "gated.pid") or driver.proc.poll() is not None,
                             60, "'gated' to write its pid")
        assert driver.proc.poll() is None, f"the driver exited early: {driver.stderr()[-3000:]}"
        run_id = wait_for(lambda: only_run_id(settings), 10, "the run to be recorded")
        wait_for(lambda: task_status(settings, run_id, "start") == TaskStatus.SUCCEEDED, 15,
                 "task 'start' to be recorded SUCCEEDED")
    except BaseException:
        (folder / "go").touch()
        driver.stop()
        raise
    return driver, run_id, gated_pid


# ---------------------------------------------------------------------------- F3
def test_f3_driver_killed_mid_run_is_interrupted_and_resume_matches_an_uninterrupted_run(
    settings, ray_address, tmp_path
):
    folder = tmp_path / "interrupted"
    driver, run_id, gated_pid = start_chain_and_wait_in_gated(settings, ray_address, folder, tmp_path / "logs")
    try:
        os.kill(driver.pid, signal.SIGKILL)
        assert driver.proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        driver.stop()

    # The owner pid is dead: reading the run detects it and marks it INTERRUPTED.
    run = rayline.load_run(run_id, settings=settings)
    assert run.status == RunStatus.INTERRUPTED, (run.status, run.error)
    assert str(driver.pid) in (run.error or "")
    assert run.task("start").status == TaskStatus.SUCCEEDED
    assert run.task("gated").status == TaskStatus.INTERRUPTED  # it was RUNNING
    assert run.task("finish").status == TaskStatus.PENDING
    # Ray kills the running tasks of a dead driver, so 'gated' stops without finishing.
    wait_for(lambda: not pid_alive(gated_pid), 30, f"Ray to stop the dead driver's task (pid {gated_pid})")
    assert ledger(folder, "finish") == 0

    (folder / "go").touch()
    resumed = rayline.resume(run_id, settings=settings)
    assert resumed.run_id == run_id
    assert resumed.status == RunStatus.SUCCEEDED, resumed.error
    assert ledger(folder, "start") == 1  # committed before the kill: adopted, never re-run
    assert ledger(folder, "gated") == 2  # killed with the driver, so it ran again
    assert ledger(folder, "finish") == 1
    assert resumed.task("start").attempts == 1

    # byte-identical to an uninterrupted run of the same flow in a fresh folder
    fresh_folder = tmp_path / "fresh"
    fresh_folder.mkdir()
    (fresh_folder / "go").touch()
    fresh = rayline.run(CHAIN, settings=settings, folder=str(fresh_folder))
    assert fresh.status == RunStatus.SUCCEEDED, fresh.error
    assert resumed.result() == fresh.result() == {"value": 22}
    for node in ("start", "gated", "finish"):
        assert resumed.task(node).digest == fresh.task(node).digest, node
    with Session(settings, executor="local") as eng:
        digest = resumed.task("finish").digest
        assert eng.artifacts.verify(digest)
        assert eng.artifacts.get_bytes(digest) == eng.artifacts.get_bytes(fresh.task("finish").digest)


# ---------------------------------------------------------------------------- F27
def test_f27_cancel_during_a_retry_stops_further_attempts(settings, ray_address, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    driver = Driver(settings.resolved_home, tmp_path / "logs", HOPELESS_SLOWLY, "-p", f"folder={folder}",
                    "--address", ray_address, "--json")
    try:
        # attempts start at about 0 s, 1 s, 3 s and 7 s (backoff 1 s, 2 s, 4 s)
        wait_for(lambda: ledger(folder, "always_down") >= 2 or driver.proc.poll() is not None,
                 60, "a second attempt")
        assert driver.proc.poll() is None, f"the driver exited early: {driver.stderr()[-3000:]}"
        run_id = wait_for(lambda: only_run_id(settings), 10, "the run to be recorded")
        cancel = cli(settings.resolved_home, "cancel", run_id)
        after_cancel = ledger(folder, "always_down")
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
        assert "CANCELLED" in cancel.stdout
        assert driver.proc.wait(timeout=30) == 130, driver.stderr()[-3000:]
    finally:
        driver.stop()
    assert json.loads(driver.stdout())["status"] == "CANCELLED"
    assert run_status(settings, run_id) == RunStatus.CANCELLED
    assert task_status(settings, run_id, "always_down") == TaskStatus.CANCELLED
    # no further attempts: the next one was due within 2 s of the second
    time.sleep(2.0)
    assert ledger(folder, "always_down") == after_cancel < 4


# ---------------------------------------------------------------------------- SIGINT
def test_sigint_to_the_driver_cancels_the_run_and_its_ray_task(settings, ray_address, tmp_path):
    folder = tmp_path / "folder"
    driver, run_id, gated_pid = start_chain_and_wait_in_gated(settings, ray_address, folder, tmp_path / "logs")
    try:
        os.kill(driver.pid, signal.SIGINT)
        code = driver.proc.wait(timeout=30)
    finally:
        driver.stop()
    assert code == 130, driver.stderr()[-3000:]
    out = json.loads(driver.stdout())
    assert out["run_id"] == run_id and out["status"] == "CANCELLED"

    run = rayline.load_run(run_id, settings=settings)
    assert run.status == RunStatus.CANCELLED
    assert run.task("start").status == TaskStatus.SUCCEEDED
    assert run.task("gated").status == TaskStatus.CANCELLED
    assert run.task("finish").status == TaskStatus.CANCELLED
    # the Ray task is stopped: its worker process goes away without the task finishing
    wait_for(lambda: not pid_alive(gated_pid), 10, f"the cancelled task's worker (pid {gated_pid}) to exit")
    assert ledger(folder, "gated") == 1 and ledger(folder, "finish") == 0
    assert rayline.load_run(run_id, settings=settings).status == RunStatus.CANCELLED


# ---------------------------------------------------------------------------- shipping the flow
def test_flow_file_with_a_helper_function_runs_on_ray(settings, ray_address, tmp_path):
    """`rayline run FILE:FLOW --address A`, uninterrupted, where the tasks call helper functions
    defined in the same file (reliability.py's ``_ledger`` and ``wait_for``). The driver imports
    the file under a made-up module name, so Ray workers can only get those helpers by value."""
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "go").touch()
    done = cli(settings.resolved_home, "run", RELIABILITY_CHAIN, "-p", f"folder={folder}",
               "--address", ray_address, "--json", timeout=120)
    out = json.loads(done.stdout)
    causes = [ln.strip() for ln in done.stderr.splitlines() if "Error:" in ln and "ray::" not in ln]
    assert (done.returncode, out["status"]) == (0, "SUCCEEDED"), f"{out['error']}; on the worker: {causes[-3:]}"
    assert [ledger(folder, n) for n in ("start", "gated", "finish")] == [1, 1, 1]


# ---------------------------------------------------------------------------- F21
TRAIN_GATED = f"{FLOWS / 'train_faults.py'}:train_gated"


def _progress(folder: Path) -> tuple[int, int]:
    try:
        pid, epoch = map(int, (folder / "progress").read_text().split())
    except (FileNotFoundError, ValueError):
        return 0, -1
    return pid, epoch


def test_f21_driver_killed_during_training_resume_continues_from_the_checkpoint(settings, ray_address, tmp_path):
    """F21: SIGKILL the driver while the Train worker sits after epoch 2 (checkpoint reported);
    `resume` rebuilds the trainer with the same RunConfig name and storage path and starts from
    that checkpoint, not from epoch 0."""
    folder = tmp_path / "folder"
    folder.mkdir()
    driver = Driver(settings.resolved_home, tmp_path / "logs", TRAIN_GATED, "-p", f"folder={folder}",
                    "--address", ray_address, "--json")
    try:
        wait_for(lambda: _progress(folder)[1] == 2 or driver.proc.poll() is not None, 240,
                 "training to reach epoch 2")
        assert driver.proc.poll() is None, f"the driver exited early: {driver.stderr()[-3000:]}"
        worker_pid = _progress(folder)[0]
        run_id = wait_for(lambda: only_run_id(settings), 10, "the run to be recorded")
        os.kill(driver.pid, signal.SIGKILL)
        assert driver.proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        driver.stop()

    # Ray stops the dead driver's task, and with it the Train controller and worker it owned.
    wait_for(lambda: not pid_alive(worker_pid), 60, f"Ray to stop the dead driver's Train worker (pid {worker_pid})")
    run = rayline.load_run(run_id, settings=settings)
    assert run.status == RunStatus.INTERRUPTED, (run.status, run.error)
    assert run.task("train_torch").status == TaskStatus.INTERRUPTED

    (folder / "go").touch()
    resumed = rayline.resume(run_id, settings=settings)
    assert resumed.status == RunStatus.SUCCEEDED, resumed.error
    model = resumed.result()
    assert model.resumed_from >= 1, model.history  # F21: the start epoch is greater than 0
    assert model.epochs_completed == 4
    assert _progress(folder)[1] == 4
