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

from click.testing import CliRunner

from tests.coordination import wait_for

ROOT = Path(__file__).resolve().parents[3]
QUEUES = """queues:
  - name: default
  - name: spot
    preemptible: true
"""


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
    assert "preempted task" in low_out and low_out.split()[-1] == "SUCCEEDED", low_out
    assert (tmp_path / "high.out").read_text().split()[-1] == "SUCCEEDED"
    monkeypatch.setenv("RAYLINE_HOME", str(home))
    from rayline.cli.main import cli

    shown = CliRunner().invoke(cli, ["runs", "show", low_out.split()[-2], "--json"])
    assert shown.exit_code == 0, shown.output
    tasks = json.loads(shown.output)["tasks"]
    logs = sorted([a["status"] for a in t["attempt_log"]] for t in tasks)
    assert logs == [["PREEMPTED", "SUCCEEDED"], ["SUCCEEDED"]], logs
    assert all(t["status"] == "SUCCEEDED" for t in tasks)
    human = CliRunner().invoke(cli, ["runs", "show", low_out.split()[-2]])
    assert "2 (1 PREEMPTED)" in human.output, human.output
