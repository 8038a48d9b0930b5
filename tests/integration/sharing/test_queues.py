"""Queues and priorities across separate driver processes sharing one run store and one 2-CPU
Ray: higher priority goes first, a queue at its quota waits while another runs, and a dead
driver's reservations free themselves with its lease. Coordinated through files, not sleeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.coordination import wait_for

ROOT = Path(__file__).resolve().parents[3]
QUEUES = """queues:
  - name: default
  - name: batch
    quota: {cpus: 1}
  - name: interactive
"""


class Drivers:
    def __init__(self, tmp: Path, address: str | None, executor: str):
        self.executor = executor
        self.tmp, self.home = tmp, tmp / "home"
        self.ledger, self.gate = tmp / "ledger", tmp / "gate"
        (tmp / "queues.yaml").write_text(QUEUES)
        self.env = {**os.environ, "RAY_ADDRESS": address or "", "RAYLINE_QUEUES": str(tmp / "queues.yaml"),
                    "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}  # fmt: skip
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, queue: str, priority: int, count: int) -> subprocess.Popen:
        out = open(self.tmp / f"{name}.out", "w")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([sys.executable, "-m", "tests.integration.sharing.queue_driver", str(self.home), name,
                              queue, str(priority), str(count), str(self.ledger), str(self.gate), self.executor],
                             cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        self.procs.append(p)
        return p

    def output(self, name: str) -> str:
        p = self.tmp / f"{name}.out"
        return p.read_text() if p.exists() else ""

    def starts(self) -> list[str]:
        return self.ledger.read_text().split() if self.ledger.exists() else []

    def started(self) -> list[str]:
        return [w for w in self.starts() if w != "start"]

    def finish(self, timeout: float = 120) -> None:
        self.gate.touch()
        for p in self.procs:
            p.wait(timeout=timeout)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def drivers(tmp_path):
    """Drivers that run their tasks in their own process (queues' quotas need no cluster)."""
    d = Drivers(tmp_path, None, "local")
    yield d
    d.stop()


@pytest.fixture
def ray_drivers(tmp_path, ray_address):
    """Drivers on the shared 2-CPU Ray."""
    d = Drivers(tmp_path, ray_address, "ray")
    yield d
    d.stop()


def test_a_high_priority_run_starts_before_the_rest_of_a_low_priority_run(ray_drivers):
    drivers = ray_drivers
    drivers.start("low", "default", 0, 6)
    wait_for(lambda: len(drivers.started()) == 2, 90, "two low tasks to hold both CPUs")
    drivers.start("high", "default", 10, 1)
    wait_for(lambda: "queued behind" in drivers.output("high"), 90, "the high run to say it is queued")
    assert "position 1" in drivers.output("high")
    first = drivers.started()
    for tag in first:  # free the two CPUs: one goes to the high run, the other to the next low task
        (drivers.tmp / f"gate-{tag}").touch()
    wait_for(lambda: len(drivers.started()) == 4, 90, "two more tasks to start")
    assert "high-0" in drivers.started()[2:], drivers.started()
    drivers.finish()
    order = drivers.started()
    assert sorted(order) == sorted([f"low-{i}" for i in range(6)] + ["high-0"])
    assert all("SUCCEEDED" in drivers.output(n) for n in ("low", "high"))


def test_a_queue_at_its_quota_waits_while_another_queue_runs(drivers):
    drivers.start("batch", "batch", 0, 2)
    wait_for(lambda: drivers.started() == ["batch-0"] or drivers.started() == ["batch-1"], 90, "one batch task")
    wait_for(lambda: "queue batch at its quota" in drivers.output("batch"), 30, "batch to wait for its quota")
    drivers.start("inter", "interactive", 0, 1)
    wait_for(lambda: "inter-0" in drivers.started(), 90, "the interactive task to start")
    assert len([w for w in drivers.started() if w.startswith("batch")]) == 1
    drivers.finish()
    assert len(drivers.started()) == 3


def test_a_dead_drivers_reservation_is_freed_after_its_lease(drivers):
    dead = drivers.start("dead", "batch", 0, 1)
    wait_for(lambda: drivers.started() == ["dead-0"], 90, "the doomed driver's task to start")
    drivers.start("next", "batch", 0, 1)
    wait_for(lambda: "queued behind" in drivers.output("next"), 60, "the next run to wait")
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait()
    wait_for(lambda: "next-0" in drivers.started(), 60, "the next run to start after the lease expired")
    drivers.gate.touch()
    drivers.procs[1].wait(timeout=60)
    assert "SUCCEEDED" in drivers.output("next")


FLOW_FILE = """
from rayline import flow, task


@task
def one() -> int:
    return 1


@flow(queue="interactive", priority=3)
def labelled():
    return one()
"""


def test_run_takes_queue_and_priority_from_the_flow_or_the_command_line(tmp_path, home, monkeypatch):
    import json

    from click.testing import CliRunner

    from rayline.cli.main import cli
    from rayline.launch.session import Session

    (tmp_path / "queues.yaml").write_text(QUEUES)
    (tmp_path / "labelled.py").write_text(FLOW_FILE)
    monkeypatch.setenv("RAYLINE_QUEUES", str(tmp_path / "queues.yaml"))
    cli_run = CliRunner()
    target = str(tmp_path / "labelled.py")
    assert cli_run.invoke(cli, ["run", target, "--local", "-q"]).exit_code == 0
    assert cli_run.invoke(cli, ["run", target, "--local", "-q", "--queue", "batch", "--priority", "9"]).exit_code == 0
    unknown = cli_run.invoke(cli, ["run", target, "--local", "-q", "--queue", "nope"])
    assert unknown.exit_code == 2 and "queue 'nope' is not declared" in unknown.output
    with Session(executor="local") as session, session.runs.transaction(read=True) as conn:
        rows = conn.exec_driver_sql("SELECT queue, priority FROM runs WHERE queue IS NOT NULL "
                                    "ORDER BY created_at").fetchall()  # fmt: skip
        left = conn.exec_driver_sql("SELECT count(*) FROM admission_reservations").scalar()
    assert [tuple(r) for r in rows] == [("interactive", 3), ("batch", 9)]
    assert left == 0  # a run's reservations go when its loop ends
    usage = json.loads(cli_run.invoke(cli, ["usage", "--by", "queue", "--json"]).output)
    assert sorted(r["key"] for r in usage) == ["batch", "interactive"]
