"""``rayline logs`` and the logs in ``rayline runs show``, with the real console script:

- a task's output is readable after ``kill -9`` of its driver (in-process and on Ray), because
  the log is flushed to the artifact store while the task runs;
- ``rayline logs RUN --follow`` prints output as it arrives and ends when the run ends;
- ``rayline runs show`` prints a failed task's last lines under its error.

Tasks coordinate with the test through files (``printed``, ``go``); every wait has a timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.coordination import wait_for
from tests.e2e.test_driver_faults import RAYLINE, Driver, cli, driver_env, only_run_id

FLOW = Path(__file__).resolve().parent / "flows" / "printing.py"
DOOMED = Path(__file__).resolve().parents[1] / "fixtures" / "doomed.py"


def start_printing(settings, tmp_path: Path, *where: str) -> tuple[Driver, str, Path]:
    """Start ``printing`` in a driver; return once its task printed and its log holds the line."""
    folder = tmp_path / "work"
    folder.mkdir()
    driver = Driver(settings.resolved_home, tmp_path / "driver", f"{FLOW}:printing", "-p", f"folder={folder}", *where)
    try:
        wait_for(lambda: (folder / "printed").exists() or driver.proc.poll() is not None, 90,
                 "'chatty' to print and see its line in its log")
        assert driver.proc.poll() is None, f"the driver exited early: {driver.stderr()[-3000:]}"
        run_id = wait_for(lambda: only_run_id(settings), 10, "the run to be recorded")
    except BaseException:
        (folder / "go").touch()
        driver.stop()
        raise
    return driver, run_id, folder


@pytest.fixture
def where(request) -> tuple[str, ...]:
    """How the driver runs its tasks: in its own process, or on the shared local Ray."""
    return ("--local",) if request.param == "local" else ("--address", request.getfixturevalue("ray_address"))


@pytest.mark.parametrize("where", ["local", "ray"], indirect=True)
def test_a_task_log_is_readable_after_the_driver_was_killed(settings, tmp_path, where):
    args = where
    driver, run_id, folder = start_printing(settings, tmp_path, *args)
    try:
        os.kill(driver.pid, signal.SIGKILL)
        assert driver.proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        (folder / "go").touch()
        driver.stop()
    shown = cli(settings.resolved_home, "logs", run_id, "chatty")
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "chatty says hello\n" in shown.stdout
    every = cli(settings.resolved_home, "logs", run_id)
    assert every.stdout.startswith("==> chatty (attempt 1) <==\nchatty says hello\n"), every.stdout


def test_logs_follow_prints_while_the_run_goes_and_ends_when_it_ends(settings, tmp_path):
    driver, run_id, folder = start_printing(settings, tmp_path, "--local")
    out_path = tmp_path / "follow.out"
    with open(out_path, "w") as out:
        follower = subprocess.Popen([str(RAYLINE), "logs", run_id, "--follow"], stdout=out,
                                    stderr=subprocess.STDOUT, env=driver_env(settings.resolved_home))
    try:
        wait_for(lambda: "chatty#1 | chatty says hello\n" in out_path.read_text(), 30,
                 "--follow to print the line while the task runs")
        assert follower.poll() is None, "--follow ended while the run was RUNNING"
        (folder / "go").touch()
        assert driver.proc.wait(timeout=60) == 0, driver.stderr()[-3000:]
        assert follower.wait(timeout=30) == 0, out_path.read_text()
    finally:
        (folder / "go").touch()
        driver.stop()
        if follower.poll() is None:
            follower.kill()
            follower.wait(timeout=10)
    assert out_path.read_text().endswith("chatty#1 | chatty is done\n"), out_path.read_text()


def test_runs_show_prints_a_failed_tasks_last_lines(settings, tmp_path):
    ran = cli(settings.resolved_home, "run", f"{DOOMED}:doomed_flow", "--local", "--json", timeout=120)
    assert ran.returncode == 1, ran.stderr[-3000:]
    run_id = only_run_id(settings)
    shown = cli(settings.resolved_home, "runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr[-3000:]
    after_error = shown.stdout.split("ValueError: gave up at the end", 1)[1]
    assert f"last lines of its log (all: rayline logs {run_id} doomed):" in after_error
    assert "  | working on step 29\n" in after_error and "working on step 5\n" not in after_error
    assert "Traceback" not in after_error  # `--traceback` and `rayline logs` show it
