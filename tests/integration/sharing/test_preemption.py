"""Preemption with a checkpoint, across two drivers on the shared 2-CPU Ray: a low-priority run
in a preemptible queue holds both CPUs; a high-priority run needs one. The victim task is asked
to stop (``rayline.context.preempted()``), saves its step and stops; its attempt is PREEMPTED,
the high-priority task runs, and the victim resumes from its saved step and finishes.
Coordinated through files, not sleeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.coordination import wait_for

ROOT = Path(__file__).resolve().parents[3]
QUEUES = """queues:
  - name: default
  - name: spot
    preemptible: true
"""


def finished(output: str) -> tuple[str, str]:
    """The run id and status a driver printed (``finished RUN STATUS``), among Ray's log lines."""
    (line,) = [ln.split() for ln in output.splitlines() if ln.startswith("finished ")]
    return line[1], line[2]


def test_a_preempted_task_checkpoints_gives_way_and_resumes_with_its_progress(tmp_path, ray_address, monkeypatch):
    home, ledger, gate = tmp_path / "home", tmp_path / "ledger", tmp_path / "gate"
    (tmp_path / "queues.yaml").write_text(QUEUES)
    env = {**os.environ, "RAY_ADDRESS": ray_address, "RAYLINE_QUEUES": str(tmp_path / "queues.yaml"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}  # fmt: skip
    procs: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> None:
        out = open(tmp_path / f"{name}.out", "w")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=out,
                                      stderr=subprocess.STDOUT))  # fmt: skip

    def lines() -> list[str]:
        return ledger.read_text().splitlines() if ledger.exists() else []

    try:
        start("low", ["tests.integration.sharing.preempt_driver", str(home), str(ledger), str(gate)])
        wait_for(lambda: {"low-0 start 0", "low-1 start 0"} <= set(lines()), 120, "both low tasks to hold the CPUs")
        start("high", ["tests.integration.sharing.queue_driver", str(home), "high", "default", "10", "1",
                       str(ledger), str(gate), "ray"])  # fmt: skip
        wait_for(lambda: "high-0 start" in lines(), 120, "the high-priority task to start")
        (stopped,) = [ln.split() for ln in lines() if " preempted " in ln]
        victim, step = stopped[0], int(stopped[2])
        assert step > 0 and lines()[-1] == "high-0 start"  # the victim waits while high-0 runs
        gate.touch()
        for p in procs:
            assert p.wait(timeout=120) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert f"{victim} start {step}" in lines(), lines()  # resumed from its checkpoint
    low_out = (tmp_path / "low.out").read_text()
    run_id, status = finished(low_out)
    assert "preempted task" in low_out and status == "SUCCEEDED", low_out
    assert (tmp_path / "high.out").read_text().split()[-1] == "SUCCEEDED"
    monkeypatch.setenv("RAYLINE_HOME", str(home))
    from rayline.cli.main import cli

    shown = CliRunner().invoke(cli, ["runs", "show", run_id, "--json"])
    assert shown.exit_code == 0, shown.output
    tasks = json.loads(shown.output)["tasks"]
    logs = sorted([a["status"] for a in t["attempt_log"]] for t in tasks)
    assert logs == [["PREEMPTED", "SUCCEEDED"], ["SUCCEEDED"]], logs
    assert all(t["status"] == "SUCCEEDED" for t in tasks)
    human = CliRunner().invoke(cli, ["runs", "show", run_id])
    assert "2 (1 PREEMPTED)" in human.output, human.output


def test_a_preempted_training_checkpoints_gives_way_and_resumes_from_its_checkpoint(tmp_path, ray_address, monkeypatch):
    """train_torch holds one CPU; a priority-10 task of two CPUs preempts it: the training saves
    a checkpoint at the end of its epoch and stops; once the task is done it resumes from that
    epoch, not from epoch 1."""
    home, ledger, gate = tmp_path / "home", tmp_path / "ledger", tmp_path / "gate"
    (tmp_path / "queues.yaml").write_text(QUEUES)
    env = {**os.environ, "RAY_ADDRESS": ray_address, "RAYLINE_QUEUES": str(tmp_path / "queues.yaml"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}  # fmt: skip
    procs: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> None:
        out = open(tmp_path / f"{name}.out", "w")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=out,
                                      stderr=subprocess.STDOUT))  # fmt: skip

    def epochs() -> list[int]:
        return [int(ln.split()[1]) for ln in ledger.read_text().splitlines() if ln.startswith("epoch")] \
            if ledger.exists() else []

    try:
        start("low", ["tests.integration.sharing.train_preempt_driver", str(home), str(ledger), str(gate)])
        wait_for(lambda: len(epochs()) >= 3, 240, "the training to run three epochs")
        start("high", ["tests.integration.sharing.queue_driver", str(home), "high", "default", "10", "1",
                       str(ledger) + ".high", str(gate), "ray", "2"])  # fmt: skip
        wait_for(lambda: Path(str(ledger) + ".high").exists(), 240, "the two-CPU task to start")
        stopped_at = epochs()[-1]
        assert stopped_at < 30
        gate.touch()
        for p in procs:
            assert p.wait(timeout=300) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    seen = epochs()
    after = seen[seen.index(stopped_at) + 1 :]
    assert after and after[0] == stopped_at + 1 and seen[-1] == 30, seen  # resumed, not restarted
    low_out = (tmp_path / "low.out").read_text()
    assert f"resumed_from {stopped_at} epochs 30" in low_out, low_out
    run_id, status = finished(low_out)
    assert status == "SUCCEEDED"
    monkeypatch.setenv("RAYLINE_HOME", str(home))
    from rayline.cli.main import cli

    shown = json.loads(CliRunner().invoke(cli, ["runs", "show", run_id, "--json"]).output)
    (training,) = [t for t in shown["tasks"] if t["node_id"].startswith("train_torch")]
    assert [a["status"] for a in training["attempt_log"]] == ["PREEMPTED", "SUCCEEDED"]


@pytest.mark.slow  # two raylets take minutes to start on 2 loaded cores; the tests above cover the requeue
def test_a_task_on_a_draining_node_checkpoints_and_resumes_on_another_node(tmp_path):
    home, ledger, gate = tmp_path / "home", tmp_path / "ledger", tmp_path / "gate"
    (tmp_path / "queues.yaml").write_text(QUEUES)
    env = {**os.environ, "RAYLINE_QUEUES": str(tmp_path / "queues.yaml"), "RAYLINE_HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    out = tmp_path / "driver.out"
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.sharing.drain_driver", str(home), str(ledger),
                             str(gate)], cwd=ROOT, env=env, stdout=out.open("w"), stderr=subprocess.STDOUT)  # fmt: skip

    def lines() -> list[list[str]]:
        return [ln.split() for ln in ledger.read_text().splitlines()] if ledger.exists() else []

    try:
        (stopped,) = wait_for(lambda: [ln for ln in lines() if ln[1] == "preempted"], 400, "the drained task to stop")
        gate.touch()
        assert proc.wait(timeout=300) == 0, out.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    tag, step = stopped[0], stopped[2]
    starts = [ln for ln in lines() if ln[0] == tag and ln[1] == "start"]
    assert [s[2] for s in starts] == ["0", step] and starts[0][3] != starts[1][3], starts  # another node
    assert "drain accepted" in out.read_text() and out.read_text().split()[-1] == "SUCCEEDED"
