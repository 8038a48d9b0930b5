"""Cancel from anywhere: through the run store, not by signal. Real drivers (the ``rayline``
console script on the shared local Ray, ``--address``) in their own process groups, stopped by
group at the end; tasks coordinate through files (``gated`` writes its pid and waits for a ``go``
marker that never comes).

- a driver started with SIGINT ignored (as ``nohup rayline run ... &`` from a script starts
  it), cancelled by ``rayline cancel``;
- the same cancelled from another PID namespace (``unshare -pf --mount-proc``), where the
  driver's pid is not visible;
- SIGTERM to the driver (how systemd, Kubernetes and cron supervisors stop it).

Each ends CANCELLED with exit code 130, its Ray task's worker gone and the flow's slot free. The
drivers keep the default 5 s lease heartbeat: the cancel is seen by its own half-second poll.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from rayline.store.runs import RunStore
from rayline.store.schema import run_cancels
from rayline.store.slots import FlowSlots, NewRun
from rayline.store.states import RunStatus, TaskStatus
from tests.coordination import ledger, pid_alive, read_pid, wait_for

pytestmark = pytest.mark.usefixtures("ray_session")

ROOT = Path(__file__).resolve().parents[2]
RAYLINE = Path(sys.executable).parent / "rayline"
CHAIN = f"{ROOT / 'tests' / 'integration' / 'flows' / 'faults.py'}:chain"


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAYLINE_RAY_ADDRESS", "RAYLINE_DB_URL")}
    env.update(RAYLINE_HOME=str(home), RAYLINE_HEARTBEAT_INTERVAL="5", RAYLINE_LEASE_TTL="30",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")]))  # fmt: skip
    return env


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a non-interactive shell's `&` does


class Driver:
    """``rayline run chain`` in a session (process group) of its own, SIGINT ignored from exec."""

    def __init__(self, home: Path, folder: Path, ray_address: str, logs: Path):
        logs.mkdir(parents=True, exist_ok=True)
        self.out, self.err = logs / "driver.out", logs / "driver.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [str(RAYLINE), "run", CHAIN, "-p", f"folder={folder}", "--address", ray_address, "--json"],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env_for(home), cwd=str(logs),
                start_new_session=True, preexec_fn=_ignore_sigint,
            )  # fmt: skip

    def stop(self) -> None:
        """Kill what is left of the driver's process group."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


@pytest.fixture
def started(settings, ray_address, tmp_path):
    """A driver in ``gated`` (its pid written): ``(driver, run_id, gated_pid, folder)``."""
    folder = tmp_path / "folder"
    folder.mkdir()
    driver = Driver(settings.resolved_home, folder, ray_address, tmp_path / "logs")
    try:
        gated_pid = wait_for(lambda: read_pid(folder / "gated.pid") or driver.proc.poll() is not None,
                             90, "'gated' to write its pid")  # fmt: skip
        assert driver.proc.poll() is None, f"the driver exited early: {driver.err.read_text()[-3000:]}"
        with RunStore(settings.run_store_url) as store:
            run_id = wait_for(lambda: [r.run_id for r in store.list_runs() if r.status == RunStatus.RUNNING],
                              15, "the run to be RUNNING")[0]  # fmt: skip
            wait_for(lambda: {t.node_id: t.status for t in store.get_tasks(run_id)}["start"] == TaskStatus.SUCCEEDED,
                     15, "task 'start' to be recorded SUCCEEDED")  # fmt: skip
        yield driver, run_id, gated_pid, folder
    finally:
        driver.stop()


def cancel_command(home: Path, run_id: str, *prefix: str) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, str(RAYLINE), "cancel", run_id], capture_output=True, text=True,
                          timeout=120, env=env_for(home), stdin=subprocess.DEVNULL)  # fmt: skip


def assert_cancelled_and_stopped(settings, driver: Driver, run_id: str, gated_pid: int, folder: Path) -> str:
    """The driver exited 130 with CANCELLED, the Ray task's worker is gone, nothing ran after
    ``gated``, and the flow's slot is free. Returns the run's recorded error."""
    code = driver.proc.wait(timeout=60)
    assert code == 130, driver.err.read_text()[-3000:]
    out = json.loads(driver.out.read_text())
    assert out["run_id"] == run_id and out["status"] == "CANCELLED"
    with RunStore(settings.run_store_url) as store:
        run = store.get_run(run_id)
        tasks = {t.node_id: t.status for t in store.get_tasks(run_id)}
        assert run.status == RunStatus.CANCELLED
        assert tasks == {"start": TaskStatus.SUCCEEDED, "gated": TaskStatus.CANCELLED, "finish": TaskStatus.CANCELLED}
        # the slot is free: the next run of the flow may start
        new = NewRun(flow_name=run.flow_name, source=None, params={}, plan_hash=run.plan_hash, plan_json="{}",
                     node_ids=("start",))  # fmt: skip
        assert FlowSlots(store, settings.lease_ttl).reserve(new, overlap="skip").action == "start"
    wait_for(lambda: not pid_alive(gated_pid), 15, f"the cancelled task's worker (pid {gated_pid}) to exit")
    assert ledger(folder, "gated") == 1 and ledger(folder, "finish") == 0
    return run.error or ""


def notice_latency(settings, run_id: str) -> float:
    """Seconds between the request and its acknowledgement by the driver."""
    with RunStore(settings.run_store_url) as store, store.transaction(read=True) as conn:
        row = conn.execute(select(run_cancels).where(run_cancels.c.run_id == run_id)).one()._mapping
    assert row["noticed_at"] is not None, "the driver never acknowledged the request"
    return row["noticed_at"] - row["requested_at"]


def test_rayline_cancel_stops_a_driver_that_ignores_sigint(settings, started):
    driver, run_id, gated_pid, folder = started
    t0 = time.monotonic()
    result = cancel_command(settings.resolved_home, run_id)
    took = time.monotonic() - t0
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"run {run_id}: CANCELLED" in result.stdout
    error = assert_cancelled_and_stopped(settings, driver, run_id, gated_pid, folder)
    assert "cancelled with `rayline cancel`" in error
    latency = notice_latency(settings, run_id)
    print(f"cancel noticed after {latency:.2f} s; `rayline cancel` returned after {took:.1f} s")
    assert latency < 2.0, f"the driver noticed the cancel after {latency:.2f} s"


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-pf", "--mount-proc", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -pf --mount-proc` (root)")
def test_rayline_cancel_from_another_pid_namespace_stops_the_run(settings, started):
    driver, run_id, gated_pid, folder = started
    result = cancel_command(settings.resolved_home, run_id, "unshare", "-pf", "--mount-proc")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"run {run_id}: CANCELLED" in result.stdout and "not running" not in result.stdout
    assert_cancelled_and_stopped(settings, driver, run_id, gated_pid, folder)
    assert notice_latency(settings, run_id) < 2.0


def test_sigterm_to_the_driver_cancels_the_run(settings, started):
    driver, run_id, gated_pid, folder = started
    os.kill(driver.proc.pid, signal.SIGTERM)
    error = assert_cancelled_and_stopped(settings, driver, run_id, gated_pid, folder)
    assert error.startswith("cancelled (SIG"), error  # SIGTERM, or SIGINT where Ray re-raised it


def test_sigint_reaches_a_driver_that_started_with_it_ignored(settings, started):
    driver, run_id, gated_pid, folder = started
    os.kill(driver.proc.pid, signal.SIGINT)
    error = assert_cancelled_and_stopped(settings, driver, run_id, gated_pid, folder)
    assert error == "cancelled (SIGINT)", error
