"""Gang admission with logical GPUs: a task that needs several bundles at once starts only when
all of them fit (a Ray placement group), so two 2-GPU trainings on 3 GPUs run one after the
other, never half each; and a training that can never fit is refused before it runs (exit 2).
Coordinated through files, not sleeps."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.coordination import wait_for

ROOT = Path(__file__).resolve().parents[3]
QUEUES = "queues:\n  - name: default\n"


def _start(tmp: Path, mode: str) -> tuple[subprocess.Popen, Path, Path]:
    home, ledger, out = tmp / "home", tmp / "ledger", tmp / "driver.out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]), "RAYLINE_HOME": str(home)}
    env.pop("RAY_ADDRESS", None)
    if mode == "queues":
        (tmp / "queues.yaml").write_text(QUEUES)
        env["RAYLINE_QUEUES"] = str(tmp / "queues.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.sharing.gang_driver", str(home), str(ledger), mode],
                            cwd=ROOT, env=env, stdout=out.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
    return proc, ledger, out


def _lines(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []


@pytest.mark.parametrize("mode", ["plain", "queues"])
def test_two_two_gpu_trainings_on_three_gpus_run_one_after_the_other(tmp_path, mode):
    proc, ledger, out = _start(tmp_path, mode)
    try:
        first = wait_for(lambda: _lines(ledger)[:1], 180, "one training to hold its two GPUs")[0].split()[0]
        other = "b" if first == "a" else "a"
        if mode == "queues":
            wait_for(lambda: "queued behind" in out.read_text(), 60, "the other training to say it waits")
        Path(f"{ledger}.go-{first}").touch()
        wait_for(lambda: f"{other} start" in _lines(ledger), 120, "the other training to start after the first")
        Path(f"{ledger}.go-{other}").touch()
        assert proc.wait(timeout=120) == 0, out.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _lines(ledger) == [f"{first} start", f"{first} end", f"{other} start", f"{other} end"]
    assert out.read_text().split()[-1] == "SUCCEEDED"


FLOW = """
from rayline import flow
from rayline.tasks import train_torch


@flow
def gpu_training():
    return train_torch([{"x": 1.0, "y": 0}], model_fn="torch.nn:Linear", label="y", num_workers=2, use_gpu=True)
"""


def test_a_gpu_training_on_a_cluster_without_gpus_exits_2_before_it_runs(ray_session, ray_address, home, tmp_path):
    from rayline.cli.main import cli

    (tmp_path / "gpu_training.py").write_text(FLOW)
    t0 = time.perf_counter()
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "gpu_training.py"), "--address", ray_address])
    took = time.perf_counter() - t0
    assert result.exit_code == 2, result.output
    assert "task 'train_torch' asks for 2 workers of {CPU=1, GPU=1} each" in result.output
    assert "it has GPU=0" in result.output
    assert took < 10, took  # the check itself is the unit test's < 1 s; this is the whole command
