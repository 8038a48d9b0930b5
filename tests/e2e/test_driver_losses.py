"""What a driver keeps when it, or the Ray cluster under it, is lost mid-run (issue 12, holes 2
and 7), with the real ``rayline`` console script as the driver:

- ``kill -9`` of a ``rayline run --local`` driver: every task that finished before the kill was
  committed, so ``rayline resume`` runs only the rest (each committed task ran once);
- the Ray head dies mid-run (a ``ray start --head`` this test starts in its own process group and
  kills by that group): the driver notices within its heartbeat, records the run FAILED with the
  reason, prints its JSON and exits 1, instead of hanging for a minute and being ended by Ray.

Tasks coordinate with the test through files (pid files, a ``go`` marker, ``ran-<name>``
ledgers; see ``tests/coordination.py``); every wait has a timeout, never a sleep.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayline.store.states import RunStatus, TaskStatus
from tests.coordination import ledger, pid_alive, read_pid, wait_for
from tests.e2e.test_driver_faults import (
    CHAIN,
    RAYLINE,
    Driver,
    cli,
    driver_env,
    only_run_id,
    run_status,
    task_status,
)

RAY = RAYLINE.parent / "ray"


def run_json(driver: Driver) -> dict:
    """The one JSON object a ``--json`` driver printed on stdout."""
    lines = [ln for ln in driver.stdout().splitlines() if ln.strip()]
    assert len(lines) == 1, f"stdout is not one JSON object: {driver.stdout()!r}\n{driver.stderr()[-3000:]}"
    return json.loads(lines[0])


# ---------------------------------------------------------------------------- hole 2
def test_local_driver_killed_mid_run_commits_finished_tasks_and_resume_runs_only_the_rest(settings, tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    driver = Driver(settings.resolved_home, tmp_path / "logs", CHAIN, "-p", f"folder={folder}", "--local", "--json")
    try:
        # 'gated' runs inside the driver process (no Ray) and waits for the go marker.
        gated_pid = wait_for(lambda: read_pid(folder / "gated.pid") or driver.proc.poll() is not None,
                             60, "'gated' to write its pid")
        assert driver.proc.poll() is None, f"the driver exited early: {driver.stderr()[-3000:]}"
        assert gated_pid == driver.pid
        run_id = wait_for(lambda: only_run_id(settings), 10, "the run to be recorded")
        # The local executor commits 'start' as soon as it finished, before 'gated' runs.
        wait_for(lambda: task_status(settings, run_id, "start") == TaskStatus.SUCCEEDED, 15,
                 "task 'start' to be recorded SUCCEEDED while 'gated' runs")
        os.kill(driver.pid, signal.SIGKILL)
        assert driver.proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        driver.stop()
    assert ledger(folder, "finish") == 0

    (folder / "go").touch()
    resumed = cli(settings.resolved_home, "resume", run_id, "--local", "--json", timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    doc = json.loads(resumed.stdout)
    assert doc["status"] == "SUCCEEDED", doc
    assert ledger(folder, "start") == 1  # committed before the kill: adopted, never re-run
    assert ledger(folder, "gated") == 2  # it was running when the driver died
    assert ledger(folder, "finish") == 1
    assert run_status(settings, run_id) == RunStatus.SUCCEEDED


# ---------------------------------------------------------------------------- hole 7
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        return True
    except OSError:
        return False


def own_ports() -> list[str]:
    """Free ports for the listeners ``ray start`` would otherwise put on fixed defaults (agent
    52365, client server 10001, …), which another Ray on the same machine may hold."""
    names = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "ray-client-server-port")  # fmt: skip
    return [f"--{name}={_free_port()}" for name in names]


class RayHead:
    """``ray start --head --block`` in its own process group, with token authentication (Ray's
    default for ``ray start``) from a token file of its own, which the driver is given too."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.port = _free_port()
        token = workdir / "ray-token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                    # a loaded 2-core CI machine starts the agents slowly; Ray's 30 s is too short
                    "RAY_agent_register_timeout_ms": "180000", "RAY_raylet_start_wait_time_s": "180",
                    "PYTHONUNBUFFERED": "1"}  # so that the log shows "Ray runtime started" at once
        self.log = workdir / "head.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [str(RAY), "start", "--head", "--block", f"--port={self.port}", *own_ports(),
                 "--num-cpus=1", "--include-dashboard=false", f"--temp-dir={workdir / 'ray'}"],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
            )  # fmt: skip
        self.pgid = self.proc.pid  # start_new_session: the head leads its own process group

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        """Until ``ray start`` says the node is up (its GCS listening is not enough: a driver
        that connects before the raylet registered fails)."""
        wait_for(lambda: "Ray runtime started" in self.log.read_text() or self.proc.poll() is not None, 180,
                 "`ray start --head` to report the node started")
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        assert _accepts(self.port)

    def kill(self) -> None:
        """SIGKILL the head's whole process group (GCS, raylet, agents, its workers)."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


@pytest.fixture
def ray_head(tmp_path) -> Iterator[RayHead]:
    # Ray's socket paths must stay short, so its temp dir is not under pytest's long tmp_path.
    workdir = Path(tempfile.mkdtemp(prefix="rl-head-", dir="/tmp"))
    head = RayHead(workdir, driver_env(tmp_path / "home"))
    try:
        head.wait_ready()
        yield head
    finally:
        head.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def test_losing_the_ray_head_mid_run_fails_the_run_with_its_json_and_exit_1(settings, tmp_path, ray_head):
    folder = tmp_path / "work"
    folder.mkdir()
    env = {**driver_env(settings.resolved_home), **{k: ray_head.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}}
    driver = Driver(settings.resolved_home, tmp_path / "logs", CHAIN, "-p", f"folder={folder}",
                    "--address", ray_head.address, "--json", env=env)
    try:
        wait_for(lambda: read_pid(folder / "gated.pid") or driver.proc.poll() is not None, 120,
                 "'gated' to write its pid")
        assert driver.proc.poll() is None, f"the driver exited early: {driver.stderr()[-3000:]}"
        run_id = wait_for(lambda: only_run_id(settings), 10, "the run to be recorded")
        wait_for(lambda: task_status(settings, run_id, "start") == TaskStatus.SUCCEEDED, 15,
                 "task 'start' to be recorded SUCCEEDED")

        killed = time.monotonic()
        ray_head.kill()
        code = driver.proc.wait(timeout=45)  # Ray alone hangs ~60 s, then ends the process
        took = time.monotonic() - killed
    finally:
        (folder / "go").touch()
        driver.stop()

    assert code == 1, (code, driver.stderr()[-3000:])
    assert took < 30, f"the driver took {took:.1f} s to notice the lost head"
    doc = run_json(driver)
    assert doc["run_id"] == run_id and doc["status"] == "FAILED", doc
    assert "lost the Ray cluster" in doc["error"] and f"rayline resume {run_id}" in doc["error"], doc
    assert run_status(settings, run_id) == RunStatus.FAILED
    assert task_status(settings, run_id, "start") == TaskStatus.SUCCEEDED
    assert task_status(settings, run_id, "gated") == TaskStatus.INTERRUPTED
    gated_pid = read_pid(folder / "gated.pid")
    wait_for(lambda: not pid_alive(gated_pid), 60, f"the lost cluster's worker (pid {gated_pid}) to stop")

    # Resumable once compute is back (here: in-process), re-running only what had not finished.
    resumed = cli(settings.resolved_home, "resume", run_id, "--local", "--json", timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["status"] == "SUCCEEDED"
    assert ledger(folder, "start") == 1
    assert ledger(folder, "finish") == 1
