"""The one admission path (``rayline.launch``): every way in loads the flow once and compiles its
plan once per run; ``-p`` values are converted strictly; a run killed before it started can be
resumed and is never adopted by the next ``rayline run``. All in this process (``--local``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import rayline
from rayline.cli.main import cli
from rayline.engine import compiler
from rayline.store.runs import RunStore
from rayline.store.states import RunStatus

COUNTED = Path(__file__).parent / "admission_flows" / "counted.py"


class Counts:
    """Module imports and traces of the counted flow (from its counter file), and calls of
    ``compile_plan`` (a spy that delegates to the real one)."""

    def __init__(self, counter: Path) -> None:
        self.counter = counter
        self.compiles = 0

    def reset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counter.write_text("")
        self.compiles = 0
        for name in [n for n in sys.modules if n.startswith("rayline_flow_counted_")]:
            monkeypatch.delitem(sys.modules, name)  # the next load imports the file afresh

    def loads(self) -> Counter:
        return Counter(self.counter.read_text().split())


@pytest.fixture
def counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path) -> Counts:
    c = Counts(tmp_path / "counter")
    monkeypatch.setenv("RAYLINE_TEST_COUNTER", str(c.counter))
    monkeypatch.delenv("RAYLINE_TEST_FAIL", raising=False)
    for name in ("RAY_ADDRESS", "RAYLINE_RAY_ADDRESS", "RAYLINE_EXECUTOR"):
        monkeypatch.delenv(name, raising=False)
    import rayline.api
    import rayline.launch.admission
    import rayline.launch.launchers  # noqa: F401  (imported before the spy goes in)

    real = compiler.compile_plan

    def spy(*args: Any, **kwargs: Any) -> Any:
        c.compiles += 1
        return real(*args, **kwargs)

    # Wherever a rayline module holds the function under its own name, it calls the spy.
    for module in [m for n, m in sys.modules.items() if n.startswith("rayline")]:
        if getattr(module, "compile_plan", None) is real:
            monkeypatch.setattr(module, "compile_plan", spy)
    c.reset(monkeypatch)
    return c


def cli_ok(*args: str) -> dict:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def via_api() -> str:
    return rayline.run(str(COUNTED), executor="local", overlap="skip").run_id


def via_api_without_overlap() -> str:
    return rayline.run(str(COUNTED), executor="local").run_id


def via_cli_run() -> str:
    return cli_ok("run", str(COUNTED), "--local", "--json", "-q")["run_id"]


def via_cli_trigger() -> str:
    return cli_ok("trigger", str(COUNTED), "--local", "--json")["run_id"]


def via_schedule_tick() -> str:
    return cli_ok("schedule", "tick", str(COUNTED), "--local", "--json", "--now", "2026-01-01T03:00:10Z")["fired"][0]["run_id"]


@pytest.mark.parametrize("start", [via_api, via_api_without_overlap, via_cli_run, via_cli_trigger, via_schedule_tick])
def test_each_way_in_loads_the_flow_once_and_compiles_once(counts: Counts, start: Any, home: Path) -> None:
    run_id = start()
    assert counts.loads() == {"module": 1, "trace": 1}
    assert counts.compiles == 1
    with RunStore(f"sqlite:///{home / 'runs.db'}") as store:
        assert store.get_run(run_id).status == RunStatus.SUCCEEDED


def test_a_resume_loads_the_flow_once_and_compiles_once(counts: Counts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYLINE_TEST_FAIL", "1")
    failed = rayline.run(str(COUNTED), executor="local", overlap="skip")
    assert failed.status == RunStatus.FAILED
    monkeypatch.delenv("RAYLINE_TEST_FAIL")
    counts.reset(monkeypatch)
    resumed = rayline.resume(failed.run_id, executor="local")
    assert resumed.status == RunStatus.SUCCEEDED
    assert counts.loads() == {"module": 1, "trace": 1}
    assert counts.compiles == 1
    counts.reset(monkeypatch)
    monkeypatch.setenv("RAYLINE_TEST_FAIL", "1")
    again = rayline.run(str(COUNTED), executor="local", overlap="skip")
    monkeypatch.delenv("RAYLINE_TEST_FAIL")
    counts.reset(monkeypatch)
    assert cli_ok("resume", again.run_id, "--local", "--json", "-q")["status"] == "SUCCEEDED"
    assert counts.loads() == {"module": 1, "trace": 1}
    assert counts.compiles == 1


KILLED_WHILE_STARTING = """
import os, signal, sys
import rayline

class KilledWhileStarting:  # the executor's start (Ray coming up) is where the kill lands
    def start(self):
        os.kill(os.getpid(), signal.SIGKILL)

rayline.run(sys.argv[1], executor=KilledWhileStarting(), overlap="skip", n=5)
"""


def reserved_then_killed(counter: Path, home: Path) -> str:
    """A ``rayline.run`` in a child process that is killed after it reserved its run, before the
    run's first task started; returns that run's id."""
    env = {**os.environ, "RAYLINE_TEST_COUNTER": str(counter), "RAYLINE_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-c", KILLED_WHILE_STARTING, str(COUNTED)], env=env, timeout=120)
    assert proc.returncode == -9
    with RunStore(f"sqlite:///{home / 'runs.db'}") as store:
        (stale,) = store.list_runs()
        assert stale.status == RunStatus.PENDING and stale.params == {"n": 5}
        return stale.run_id


def test_a_run_killed_before_it_started_can_be_resumed(counts: Counts, home: Path) -> None:
    stale = reserved_then_killed(counts.counter, home)
    resumed = rayline.resume(stale, executor="local")
    assert resumed.status == RunStatus.SUCCEEDED and resumed.result() == 10


def test_the_next_run_never_adopts_a_run_killed_before_it_started(counts: Counts, home: Path) -> None:
    stale = reserved_then_killed(counts.counter, home)
    mine = rayline.run(str(COUNTED), executor="local", overlap="skip", n=7)
    assert mine.run_id != stale
    assert mine.status == RunStatus.SUCCEEDED and mine.result() == 14
    left = rayline.load_run(stale)
    assert left.status == RunStatus.INTERRUPTED and f"rayline resume {stale}" in (left.error or "")
    assert [t.status.value for t in left.tasks] == ["PENDING"]  # nothing of it ran
    resumed = rayline.resume(stale, executor="local")
    assert resumed.status == RunStatus.SUCCEEDED and resumed.result() == 10


@pytest.mark.parametrize("command", ["run", "trigger"])
@pytest.mark.parametrize("value", ["true", "no", "2.5", "seven", "[1]", "null"])
def test_a_parameter_that_is_not_of_its_type_is_refused_by_name(counts: Counts, command: str, value: str) -> None:
    result = CliRunner().invoke(cli, [command, str(COUNTED), "--local", "-p", f"n={value}"])
    assert result.exit_code == 2, result.output
    assert "parameter 'n' expects int, got" in result.stderr
    assert "Traceback" not in result.output
    assert counts.compiles == 0  # refused before anything was planned or recorded


def test_rayline_run_refuses_a_bool_for_a_number(counts: Counts) -> None:
    with pytest.raises(rayline.errors.UsageError, match="parameter 'n' expects int, got bool"):
        rayline.run(str(COUNTED), executor="local", n=True)


def test_numbers_convert_where_the_type_allows(counts: Counts) -> None:
    assert cli_ok("run", str(COUNTED), "--local", "--json", "-q", "-p", "n=3.0")["status"] == "SUCCEEDED"
    assert rayline.load_run(rayline.list_runs(limit=1)[0].run_id).result() == 6


def one_line_error(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.output
    assert lines and lines[-1].startswith("error: "), result.output
    return lines[-1]


STORE_COMMANDS = [
    ["runs", "list"],
    ["runs", "show", "abc"],
    ["cancel", "abc"],
    ["resume", "abc", "--local"],
    ["run", str(COUNTED), "--local"],
    ["trigger", str(COUNTED), "--local"],
    ["schedule", "tick", str(COUNTED), "--local"],
]


@pytest.mark.parametrize("args", STORE_COMMANDS, ids=lambda a: " ".join(a[:2]).replace(str(COUNTED), "FLOW"))
def test_a_corrupt_store_ends_every_command_with_exit_4_and_one_line(counts: Counts, home: Path, args: list[str]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "runs.db").write_bytes(b"this is not a database, it was damaged" * 100)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 4, result.output
    assert "runs.db" in one_line_error(result)


def test_a_read_only_store_ends_a_run_with_exit_4_and_one_line(counts: Counts, home: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    rayline.run(str(COUNTED), executor="local")  # the store exists
    monkeypatch.setenv("RAYLINE_DB_URL", f"sqlite:///file:{home / 'runs.db'}?mode=ro&uri=true")
    assert CliRunner().invoke(cli, ["runs", "list"]).exit_code == 0  # reading still works
    result = CliRunner().invoke(cli, ["run", str(COUNTED), "--local", "-q"])
    assert result.exit_code == 4, result.output
    assert "readonly" in one_line_error(result)


@pytest.mark.parametrize("as_json", [False, True])
def test_the_loser_of_two_resumes_of_one_run_exits_3_with_one_line(counts: Counts, home: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, as_json: bool) -> None:  # fmt: skip
    monkeypatch.setenv("RAYLINE_TEST_FAIL", "1")
    failed = rayline.run(str(COUNTED), executor="local", overlap="skip")
    monkeypatch.delenv("RAYLINE_TEST_FAIL")
    winner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:  # another process resumed the run first and drives it now (a live pid, a fresh lease)
        with RunStore(f"sqlite:///{home / 'runs.db'}") as store:
            store.take_over(failed.run_id, owner_pid=winner.pid, owner_host=failed.record.owner_host or "",
                            lease_ttl=30.0)  # fmt: skip
        result = CliRunner().invoke(cli, ["resume", failed.run_id, "--local", "-q", *(["--json"] if as_json else [])])
        assert rayline.load_run(failed.run_id).status == RunStatus.RUNNING  # the winner's; untouched
    finally:
        winner.kill()
        winner.wait()
    assert result.exit_code == 3, result.output
    if as_json:
        doc = json.loads(result.stdout)
        assert doc["resumed"] is False and f"pid {winner.pid}" in doc["reason"]
    else:
        assert f"pid {winner.pid}" in one_line_error(result)


def test_a_child_process_starts_a_reserved_run_with_python_m_rayline_launch(counts: Counts, settings: Any) -> None:
    from rayline.launch.admission import plan_run, reserve
    from rayline.launch.flow_files import load_flow
    from rayline.launch.launchers import ProcessLauncher
    from rayline.launch.session import Session
    from rayline.store.slots import FlowSlots

    with Session(settings, executor="local") as session:
        planned = plan_run(session, load_flow(str(COUNTED)), {"n": 4}, trigger={"kind": "manual"})
        got = reserve(FlowSlots(session.runs, settings.lease_ttl), planned, overlap="skip")
    launcher = ProcessLauncher(settings, local=True)
    assert launcher.command(got.run_id)[1:4] == ["-m", "rayline.launch", got.run_id]
    launcher.start(got.run_id)
    (child,) = launcher.children.values()
    assert child.wait(timeout=120) == 0
    done = rayline.load_run(got.run_id, settings=settings)
    assert done.status == RunStatus.SUCCEEDED and done.result() == 8


def test_the_verbs_list_and_cancel_runs(counts: Counts) -> None:
    first = rayline.run(str(COUNTED), executor="local", n=2)
    second = rayline.run(str(COUNTED), executor="local", n=3)
    assert [r.run_id for r in rayline.list_runs(limit=5)] == [second.run_id, first.run_id]
    assert rayline.cancel(first.run_id).status == RunStatus.SUCCEEDED  # finished: left as it is
