"""The warm actor pool keeps the meaning of resources, retries and timeouts."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import rayline
from rayline.store.states import RunStatus, TaskStatus
from tests.coordination import wait_for
from tests.integration.flows import pooled

pytestmark = pytest.mark.usefixtures("ray_session")


def test_small_tasks_run_on_warm_actors_reused_across_runs(settings):
    first = rayline.run(pooled.pids, settings=settings)
    second = rayline.run(pooled.pids, settings=settings)
    assert first.status == second.status == RunStatus.SUCCEEDED
    a, b = set(first.result()), set(second.result())
    assert 1 <= len(a) <= 2  # one process per CPU-holding actor, never more than the CPUs
    assert a == b  # the same warm processes served the second run


def test_pool_off_runs_plain_tasks(settings):
    settings = settings.model_copy(update={"pool": "off"})
    run = rayline.run(pooled.pids, settings=settings)
    assert run.status == RunStatus.SUCCEEDED


def test_killed_pool_worker_is_restarted_and_the_call_retried(settings, tmp_path):
    """F1 on the pool: the second attempt is recorded, the run succeeds."""
    box = {}
    t = threading.Thread(target=lambda: box.update(run=rayline.run(pooled.gated_fan, settings=settings, folder=str(tmp_path))))
    t.start()
    wait_for(lambda: (tmp_path / "pid").exists(), what="task pid file")
    pid = int((tmp_path / "pid").read_text())
    (tmp_path / "pid").unlink()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: (tmp_path / "pid").exists(), what="the retried task")
    (tmp_path / "go").touch()
    t.join(timeout=60)
    run = box["run"]
    assert run.status == RunStatus.SUCCEEDED and run.result() == sum(range(9))
    task0 = run.task("gated_pid")
    assert task0.attempts == 2
    attempts = [a for a in run.attempts if a.node_id == "gated_pid"]
    assert [a.status for a in attempts] == [TaskStatus.FAILED, TaskStatus.SUCCEEDED]
    assert len((tmp_path / "ran").read_text().split()) == 2


def test_timeout_is_enforced_on_the_pool(settings):
    t0 = time.monotonic()
    run = rayline.run(pooled.slow_fan, settings=settings)
    assert time.monotonic() - t0 < 20
    assert run.status == RunStatus.FAILED
    assert "TaskTimeoutError" in run.task("slow-3").error_type
    assert run.task("slow-2").status == TaskStatus.SUCCEEDED
    assert run.task("total").status == TaskStatus.UPSTREAM_FAILED
