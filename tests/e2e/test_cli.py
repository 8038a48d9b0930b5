"""The ``rayline`` command line, end to end: exit codes, JSON output, progress lines, runs,
graph and cancel. Most tests use ``--local`` (in-process executor, no Ray) through click's
``CliRunner`` (not a TTY, so progress is plain lines); a few run the installed console script.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rayline.cli.main import cli
from rayline.cli.progress import LineProgress

FLOWS = Path(__file__).parent / "flows"
RAYLINE = Path(sys.executable).parent / "rayline"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
COMMANDS = [[], ["run"], ["resume"], ["runs"], ["runs", "list"], ["runs", "show"], ["cancel"], ["graph"]]


@pytest.fixture(autouse=True)
def _isolated(home, monkeypatch):
    """A fresh RAYLINE_HOME (conftest's ``home``), inherited by subprocesses; no cluster."""
    for name in ("RAY_ADDRESS", "RAYLINE_RAY_ADDRESS", "RAYLINE_DEBUG", "RAYLINE_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    return home


def rayline(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def run_json(*args: object) -> tuple[int, dict]:
    result = rayline("run", *args, "--local", "--json")
    return result.exit_code, json.loads(result.stdout)


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def wait_for_status(run_id_or_none: str | None, status: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = json.loads(rayline("runs", "list", "--json").stdout or "[]")
        for r in runs:
            if (run_id_or_none is None or r["run_id"] == run_id_or_none) and r["status"] == status:
                return r
        time.sleep(0.2)
    raise AssertionError(f"no run reached {status} within {timeout} s")


def start_driver(*args: str) -> subprocess.Popen:
    return subprocess.Popen([str(RAYLINE), "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())


# ---------------------------------------------------------------------------- run
def test_run_success_exits_0_and_prints_exactly_one_json_object():
    result = rayline("run", FLOWS / "number_flow.py", "--local", "--json", "-p", "n=5")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # nothing but the one object on stdout
    assert set(data) == {"run_id", "status", "flow", "error", "tasks"}
    assert data["status"] == "SUCCEEDED" and data["flow"] == "numbers" and data["error"] is None
    assert len(data["tasks"]) == 4
    for t in data["tasks"]:
        assert set(t) == {"node_id", "status", "attempts"}
        assert t["status"] == "SUCCEEDED" and t["attempts"] == 1


def test_run_prints_summary_on_stdout_and_plain_progress_lines_on_stderr():
    result = rayline("run", FLOWS / "number_flow.py", "--local")
    assert result.exit_code == 0, result.output
    assert re.search(r"run \w+ \(numbers\): SUCCEEDED in [\d.]+ s", result.stdout)
    assert "4 succeeded" in result.stdout
    assert "outputs: stored under" in result.stdout
    assert re.search(rf"^{STAMP} run \w+ started: flow numbers, 4 tasks$", result.stderr, re.M)
    assert re.search(rf"^{STAMP} run \w+ SUCCEEDED in [\d.]+ s \(4 succeeded\)$", result.stderr, re.M)


def test_run_with_warnings_exits_0_and_lists_them():
    result = rayline("run", FLOWS / "warned.py", "--local")
    assert result.exit_code == 0, result.output
    assert "SUCCEEDED_WITH_WARNINGS" in result.stdout
    assert "2 corrupt files set aside" in result.stdout
    assert re.search(rf"^{STAMP} run \w+ task ingest warning: 2 corrupt files set aside$", result.stderr, re.M)
    run_id = re.search(r"run (\w+) \(warned\)", result.stdout).group(1)
    shown = json.loads(rayline("runs", "show", run_id, "--json").stdout)
    assert shown["warnings"] == ["ingest: 2 corrupt files set aside"]
    assert shown["counters"] == {"quarantined": 2}


def test_a_run_that_skips_itself_exits_0_not_the_busy_flow_code():
    result = rayline("run", FLOWS / "nothing_new.py", "--local")
    assert result.exit_code == 0, result.output  # 3 is only for "the flow was busy"
    assert "SKIPPED" in result.stdout and "nothing ran" not in result.stdout
    code, data = run_json(FLOWS / "nothing_new.py")
    assert code == 0 and data["status"] == "SKIPPED"
    assert {t["node_id"]: t["status"] for t in data["tasks"]} == {"look": "SKIPPED", "train": "SKIPPED"}


def test_param_values_are_read_as_yaml_and_converted_to_the_annotation():
    from rayline import api

    code, data = run_json(FLOWS / "number_flow.py", "-p", "scale=2", "-p", "label=123", "-p", "loud=yes")
    assert code == 0, data
    # scale int 2 -> float, label "123" stays a str, loud "yes" -> True
    assert api.load_run(data["run_id"]).result() == "123: 28.0"


def test_failing_flow_exits_1_and_marks_downstream_upstream_failed():
    code, data = run_json(FLOWS / "failing.py")
    assert code == 1
    assert data["status"] == "FAILED"
    assert "boom" in data["error"] and "marker file" in data["error"]
    tasks = {t["node_id"]: t for t in data["tasks"]}
    boom = next(n for n in tasks if n.startswith("boom"))
    after = next(n for n in tasks if n.startswith("after"))
    fine = next(n for n in tasks if n.startswith("fine"))
    assert tasks[boom]["status"] == "FAILED" and tasks[boom]["attempts"] == 2  # retried once
    assert tasks[after]["status"] == "UPSTREAM_FAILED"
    assert tasks[fine]["status"] == "SUCCEEDED"


def test_failure_summary_prints_the_command_that_resumes():
    result = rayline("run", FLOWS / "failing.py", "--local")
    assert result.exit_code == 1
    run_id = re.search(r"run (\w+) \(failing\): FAILED", result.stdout).group(1)
    assert f"rayline resume {run_id}" in result.stdout
    assert "error: task 'boom" in result.stdout
    # plain progress: one line for the retry, one for the failure, the final line
    assert re.search(rf"^{STAMP} run {run_id} task boom\S* attempt 1 failed: ValueError: marker file .*retried",
                     result.stderr, re.M)
    assert re.search(rf"^{STAMP} run {run_id} task boom\S* FAILED: ValueError", result.stderr, re.M)
    assert re.search(rf"^{STAMP} run {run_id} FAILED in ", result.stderr, re.M)


def test_resume_reruns_what_failed_and_succeeds(tmp_path):
    marker = tmp_path / "marker"
    code, first = run_json(FLOWS / "failing.py", "-p", f"marker={marker}")
    assert code == 1
    marker.touch()
    result = rayline("resume", first["run_id"][:8], "--local", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run_id"] == first["run_id"] and data["status"] == "SUCCEEDED"
    assert all(t["status"] in ("SUCCEEDED", "CACHED") for t in data["tasks"])


def test_resume_while_another_run_holds_the_flow_exits_3_and_changes_nothing(tmp_path, home):
    from rayline.store.runs import RunStore
    from rayline.store.slots import FlowSlots, NewRun

    code, first = run_json(FLOWS / "failing.py", "-p", f"marker={tmp_path / 'marker'}")
    assert code == 1  # `rayline run` ran it under the flow's slot (overlap skip)
    with RunStore.open(home) as store:  # another run of the flow is going, in this (live) process
        slots = FlowSlots(store)
        got = slots.reserve(NewRun(flow_name="failing", source=None, params={}, plan_hash="p",
                                   plan_json="{}", node_ids=("boom",)))  # fmt: skip
        slots.start(got.run_id, owner_pid=os.getpid(), owner_host=socket.gethostname())
    (tmp_path / "marker").touch()
    result = rayline("resume", first["run_id"], "--local", "--json")
    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    assert data["resumed"] is False and data["held_by"] == got.run_id
    assert f"run {got.run_id} is RUNNING" in data["reason"]
    plain = rayline("resume", first["run_id"], "--local")
    assert plain.exit_code == 3 and "flow 'failing' is busy" in plain.stderr
    with RunStore.open(home) as store:
        assert store.get_run(first["run_id"]).status.value == "FAILED"


def test_resume_of_an_unknown_run_is_a_usage_error():
    result = rayline("resume", "nosuchrun", "--local")
    assert result.exit_code == 2
    assert "nosuchrun" in result.stderr and "rayline runs list" in result.stderr


def test_set_overrides_a_task_option_for_one_node():
    code, data = run_json(FLOWS / "failing.py", "--set", "boom.retries=0")
    assert code == 1
    boom = next(t for t in data["tasks"] if t["node_id"].startswith("boom"))
    assert boom["attempts"] == 1


def test_set_for_an_unknown_node_is_a_definition_error():
    result = rayline("run", FLOWS / "failing.py", "--local", "--set", "nosuch.retries=1")
    assert result.exit_code == 2
    assert "nosuch" in result.stderr


def test_unknown_param_exits_2_naming_it():
    result = rayline("run", FLOWS / "number_flow.py", "--local", "-p", "bogus=1")
    assert result.exit_code == 2
    assert "unknown parameter 'bogus'" in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_missing_required_param_exits_2():
    result = rayline("run", FLOWS / "required.py", "--local", "--json")
    assert result.exit_code == 2
    assert "missing required parameter 'n'" in result.stderr
    assert result.stdout == ""


def test_param_of_the_wrong_type_exits_2():
    result = rayline("run", FLOWS / "required.py", "--local", "-p", "n=abc")
    assert result.exit_code == 2
    assert "parameter 'n' expects int" in result.stderr


def test_malformed_param_is_a_usage_error():
    result = rayline("run", FLOWS / "number_flow.py", "--local", "-p", "n5")
    assert result.exit_code == 2
    assert "expected NAME=VALUE" in result.stderr


def test_malformed_set_is_a_usage_error():
    result = rayline("run", FLOWS / "number_flow.py", "--local", "--set", "retries=3")
    assert result.exit_code == 2
    assert "NODE.OPTION=VALUE" in result.stderr


def test_branching_on_a_result_exits_2_with_file_and_line():
    path = FLOWS / "branching.py"
    result = rayline("run", path, "--local")
    assert result.exit_code == 2
    assert f"branching.py:{line_of(path, 'if n:')}" in result.stderr
    assert "branching" in result.stderr and "Traceback" not in result.output


def test_missing_flow_file_exits_2():
    result = rayline("run", FLOWS / "nope.py", "--local")
    assert result.exit_code == 2
    assert "no such flow file" in result.stderr


def test_local_and_address_together_are_a_usage_error():
    result = rayline("run", FLOWS / "number_flow.py", "--local", "--address", "ray://x:1")
    assert result.exit_code == 2


def test_unexpected_error_prints_one_line_and_the_debug_hint(monkeypatch):
    from rayline import api as rayline_api

    def broken(*a, **k):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(rayline_api, "run", broken)
    result = rayline("run", FLOWS / "number_flow.py", "--local")
    assert result.exit_code == 1
    assert "error: unexpected RuntimeError: disk on fire" in result.stderr
    assert "RAYLINE_DEBUG=1" in result.stderr and "Traceback" not in result.stderr
    monkeypatch.setenv("RAYLINE_DEBUG", "1")
    result = rayline("run", FLOWS / "number_flow.py", "--local")
    assert result.exit_code == 1 and "Traceback" in result.stderr


# ---------------------------------------------------------------------------- runs
def test_runs_list_json_newest_first_with_filters():
    _, ok = run_json(FLOWS / "number_flow.py")
    _, bad = run_json(FLOWS / "failing.py")
    result = rayline("runs", "list", "--json")
    assert result.exit_code == 0
    runs = json.loads(result.stdout)
    assert [r["run_id"] for r in runs] == [bad["run_id"], ok["run_id"]]
    assert runs[1]["counts"] == {"SUCCEEDED": 4} and runs[1]["flow"] == "numbers"
    failed = json.loads(rayline("runs", "list", "--json", "--status", "failed").stdout)
    assert [r["run_id"] for r in failed] == [bad["run_id"]]
    by_flow = json.loads(rayline("runs", "list", "--json", "--flow", "numbers").stdout)
    assert [r["run_id"] for r in by_flow] == [ok["run_id"]]
    assert len(json.loads(rayline("runs", "list", "--json", "--limit", "1").stdout)) == 1


def test_runs_list_plain_columns_when_not_a_terminal():
    _, ok = run_json(FLOWS / "number_flow.py")
    result = rayline("runs", "list")
    assert result.exit_code == 0
    header, row = result.stdout.splitlines()[:2]
    assert header.split() == ["RUN", "FLOW", "STATUS", "STARTED", "DURATION", "TASKS"]
    assert row.split()[:3] == [ok["run_id"], "numbers", "SUCCEEDED"]


def test_runs_show_json_includes_every_attempt():
    _, bad = run_json(FLOWS / "failing.py")
    result = rayline("runs", "show", bad["run_id"][:6], "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run_id"] == bad["run_id"] and data["status"] == "FAILED"
    boom = next(t for t in data["tasks"] if t["node_id"].startswith("boom"))
    assert [a["attempt"] for a in boom["attempt_log"]] == [1, 2]
    assert all(a["status"] == "FAILED" and "marker file" in a["error"] for a in boom["attempt_log"])
    assert boom["attempt_log"][0]["traceback"]


def test_runs_show_prints_header_and_task_table():
    _, bad = run_json(FLOWS / "failing.py")
    result = rayline("runs", "show", bad["run_id"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"run      {bad['run_id']}" in out and "status   FAILED" in out
    assert re.search(r"^boom\S*\s+FAILED\s+2\s+[\d.]+ s\s+ValueError: marker file", out, re.M)
    assert re.search(r"^after\S*\s+UPSTREAM_FAILED", out, re.M)
    assert f"rayline resume {bad['run_id']}" in out


def test_a_multi_line_error_is_shown_whole_by_run_and_runs_show():
    problems = ["schema contract violated (2 problems):",
                "file part-3.parquet: column 'age': expected int64, found string",
                "file part-7.parquet: column 'region' is missing"]
    result = rayline("run", FLOWS / "multiline_error.py", "--local")
    assert result.exit_code == 1, result.output
    run_id = re.search(r"run (\w+) \(multiline_error\): FAILED", result.stdout).group(1)
    assert all(p in result.stdout for p in problems), result.stdout
    assert all(p in result.stderr for p in problems), result.stderr  # the progress lines too
    shown = rayline("runs", "show", run_id)
    assert shown.exit_code == 0, shown.output
    after_table = shown.stdout.split("\ncheck: FAILED after 1 attempt\n", 1)[1]
    assert all(p in after_table for p in problems), shown.stdout
    assert f"rayline runs show {run_id} --traceback" in shown.stdout and "Traceback" not in shown.stdout
    traced = rayline("runs", "show", run_id, "--traceback")
    assert "Traceback (most recent call last)" in traced.stdout and 'raise ValueError("\\n".join(PROBLEMS))' in traced.stdout
    data = json.loads(rayline("runs", "show", run_id, "--json").stdout)
    check = next(t for t in data["tasks"] if t["node_id"] == "check")
    for text in (data["error"], check["error"], check["attempt_log"][0]["error"]):
        assert all(p in text for p in problems), text
    code, ran = run_json(FLOWS / "multiline_error.py")
    assert code == 1 and all(p in ran["error"] for p in problems)
    shown = json.loads(rayline("runs", "show", ran["run_id"], "--json").stdout)
    assert ran == {**{k: shown[k] for k in ran}, "tasks": [{k: t[k] for k in ran["tasks"][0]} for t in shown["tasks"]]}


def test_runs_show_unknown_id_exits_2():
    result = rayline("runs", "show", "doesnotexist")
    assert result.exit_code == 2
    assert "doesnotexist" in result.stderr


# ---------------------------------------------------------------------------- graph
def test_graph_mermaid_contains_the_nodes():
    result = rayline("graph", f"{FLOWS / 'two_flows.py'}:training", "--format", "mermaid")
    assert result.exit_code == 0, result.output
    for name in ("load", "train", "evaluate"):
        assert name in result.stdout
    assert result.stdout.lstrip().startswith(("flowchart", "graph"))


def test_graph_text_and_dot():
    text = rayline("graph", f"{FLOWS / 'two_flows.py'}:loading")
    assert text.exit_code == 0 and "load" in text.stdout
    dot = rayline("graph", f"{FLOWS / 'two_flows.py'}:training", "--format", "dot")
    assert dot.exit_code == 0 and "digraph" in dot.stdout


def test_graph_of_a_file_with_two_flows_asks_to_pick_one():
    result = rayline("graph", FLOWS / "two_flows.py")
    assert result.exit_code == 2
    assert "training" in result.stderr and "loading" in result.stderr


def test_graph_does_not_import_ray():
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from rayline.cli.main import cli\n"
        f"r = CliRunner().invoke(cli, ['graph', {str(FLOWS / 'number_flow.py')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'ray' not in sys.modules, 'graph imported ray'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# ---------------------------------------------------------------------------- cancel
def test_cancel_of_a_run_whose_driver_died_marks_it_cancelled():
    driver = start_driver(str(FLOWS / "slow.py"), "--local", "-p", "seconds=60")
    try:
        run = wait_for_status(None, "RUNNING")
    finally:
        driver.kill()
        driver.wait(timeout=30)
    result = rayline("cancel", run["run_id"])
    assert result.exit_code == 0, result.output
    assert "marked CANCELLED" in result.stdout
    shown = json.loads(rayline("runs", "show", run["run_id"], "--json").stdout)
    assert shown["status"] == "CANCELLED"
    # what had not finished is CANCELLED (`first` may have finished before the kill)
    states = {t["node_id"]: t["status"] for t in shown["tasks"]}
    assert states["sleepy"] == "CANCELLED" and states["first"] in ("SUCCEEDED", "CANCELLED"), states


def test_cancel_interrupts_a_live_driver_which_records_cancelled():
    driver = start_driver(str(FLOWS / "slow.py"), "--local", "-p", "seconds=60")
    try:
        run = wait_for_status(None, "RUNNING")
        time.sleep(1.0)  # let the driver get into the long task
        result = rayline("cancel", run["run_id"])
        assert result.exit_code == 0, result.output
        assert "CANCELLED" in result.stdout
        assert driver.wait(timeout=30) == 130
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert "rayline resume" in driver.stdout.read()


def test_cancel_of_a_finished_run_says_so():
    _, ok = run_json(FLOWS / "number_flow.py")
    result = rayline("cancel", ok["run_id"])
    assert result.exit_code == 0
    assert "already finished: SUCCEEDED" in result.stdout


# ---------------------------------------------------------------------------- help, version, script
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "rayline")
def test_every_command_has_help_with_an_example(command):
    result = rayline(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Example" in result.stdout


def test_version():
    result = rayline("--version")
    assert result.exit_code == 0 and "0.1.0" in result.stdout


def test_console_script_runs_a_flow_with_json_on_stdout_only():
    proc = subprocess.run(
        [str(RAYLINE), "run", str(FLOWS / "number_flow.py"), "--local", "--json", "-p", "n=2"],
        capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "SUCCEEDED"
    assert re.search(rf"^{STAMP} run {data['run_id']} started", proc.stderr, re.M)


def test_console_script_exit_codes():
    usage = subprocess.run([str(RAYLINE), "run", str(FLOWS / "number_flow.py"), "--local", "-p", "x"],
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2
    failed = subprocess.run([str(RAYLINE), "run", str(FLOWS / "failing.py"), "--local", "-q"],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "rayline resume" in failed.stdout
    assert failed.stderr == ""


def test_console_script_on_a_terminal_draws_a_live_display_on_stderr():
    import pty
    import threading

    master, slave = pty.openpty()
    proc = subprocess.Popen([str(RAYLINE), "run", str(FLOWS / "slow.py"), "--local", "-p", "seconds=0.5"],
                            stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=120)
    reader.join(timeout=5)
    os.close(master)
    assert proc.returncode == 0
    drawn = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in drawn and "2/2 done" in drawn  # rich redraws in place
    assert "SUCCEEDED" in out and "\x1b[" not in out  # the summary on stdout stays plain


# ---------------------------------------------------------------------------- progress
class _Plan:
    class graph:  # noqa: N801 - stands in for Plan.graph
        name = "demo"

    nodes = ["a", "b", "c"]


def test_line_progress_reports_start_failures_retries_ticks_and_end():
    import io

    out = io.StringIO()
    p = LineProgress(out, interval=0.05)
    with p:
        p.on_event("run_started", {"run_id": "r1", "plan": _Plan(), "adopted": {}})
        p.on_event("task_started", {"node_id": "a"})
        p.on_event("task_finished", {"node_id": "a", "status": "SUCCEEDED", "meta": {}})
        attempts = [{"attempt": 1, "status": "FAILED", "error_type": "IOError", "error_message": "x",
                     "retry_in": 0.5},
                    {"attempt": 2, "status": "FAILED", "error_type": "IOError", "error_message": "y"}]
        p.on_event("task_finished", {"node_id": "b", "status": "FAILED", "meta": {"attempts": attempts}})
        p.on_event("task_finished", {"node_id": "c", "status": "UPSTREAM_FAILED", "meta": {}})
        time.sleep(0.2)
        p.on_event("run_finished", {"run_id": "r1", "status": "FAILED", "error": "task 'b' failed"})
    lines = out.getvalue().splitlines()
    assert all(re.match(STAMP + " ", line) for line in lines)
    text = "\n".join(lines)
    assert "run r1 started: flow demo, 3 tasks" in text
    assert "task b attempt 1 failed: IOError: x; retried after 0.5 s" in text
    assert "task b FAILED: IOError: y" in text
    assert "task c" not in text  # upstream failures are counted, not listed
    assert re.search(r"run r1 progress: 3/3 done", text)
    assert re.search(r"run r1 FAILED in [\d.]+ s \(1 succeeded, 1 failed, 1 upstream_failed\): "
                     r"task 'b' failed$", lines[-1])


def test_live_progress_renders_without_error():
    import io

    from rich.console import Console

    from rayline.cli.progress import LiveProgress

    p = LiveProgress(io.StringIO())
    p.on_event("run_started", {"run_id": "r1", "plan": _Plan(), "adopted": {"a": "d"}})
    p.on_event("task_started", {"node_id": "b"})
    p.on_event("task_finished", {"node_id": "c", "status": "FAILED",
                                 "meta": {"attempts": [{"attempt": 1, "status": "FAILED",
                                                        "error_type": "KeyError", "error_message": "k"}]}})
    buf = io.StringIO()
    Console(file=buf, width=100).print(p.render())
    rendered = buf.getvalue()
    assert "r1" in rendered and "2/3 done" in rendered
    assert "RUNNING" in rendered and "KeyError: k" in rendered


def test_a_malformed_event_never_breaks_the_run():
    import io

    p = LineProgress(io.StringIO())
    p.on_event("task_finished", {})  # no node_id: ignored, not raised into the runner
    p.on_event("run_started", {"run_id": "r", "plan": None})
    assert p.total == 0
