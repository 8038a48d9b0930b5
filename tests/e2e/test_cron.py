"""The installed ``rayline`` command run the way system cron runs it: ``env -i`` with only PATH,
HOME and RAYLINE_* set, no TTY (stdin from /dev/null, output to pipes), two invocations of
``rayline schedule tick`` at once on a due schedule. Exactly one run happens, the log lines are
plain timestamped lines, and the exit codes mean something (0 also when nothing was due).

The same for a crontab line that calls ``rayline run FLOW`` itself: two invocations at once run
the flow once, the other exits 3 naming the run that holds the flow's slot; a holder killed with
SIGKILL or stopped with SIGINT leaves the slot to the next invocation."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from rayline.store.runs import RunStore
from rayline.store.states import RunStatus

RAYLINE = Path(sys.executable).parent / "rayline"
FLOW = Path(__file__).parent / "flows" / "cronned.py"
SLOW = Path(__file__).parent / "flows" / "slow.py"  # flow `slow`: one task that sleeps `seconds`
EXIT_SKIPPED = 3  # documented in `rayline run --help` and the README
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR|CRITICAL) rayline[\w.]*: ")


def cron_like(home: Path, *args: str, db_url: str | None = None) -> subprocess.Popen[str]:
    """Start ``rayline ARGS`` as a crontab line would: an empty environment but for PATH, HOME
    and the RAYLINE_* variables the crontab sets (``RAYLINE_DB_URL`` too, given ``db_url``),
    stdin from /dev/null, no terminal."""
    env = ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={os.environ.get('HOME', '/root')}",
           f"RAYLINE_HOME={home}", "RAYLINE_EXECUTOR=local"]  # fmt: skip
    if db_url is not None:
        env.append(f"RAYLINE_DB_URL={db_url}")
    return subprocess.Popen([*env, str(RAYLINE), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd="/")  # fmt: skip


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def assert_plain_log_lines(err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "expected log lines on stderr"
    for line in lines:
        assert LOG_LINE.match(line), f"not a plain timestamped log line: {line!r}"


def away_from_a_minute_boundary() -> None:
    # Both invocations must see the same most recent tick: never start them across hh:mm:00.
    if datetime.now().second >= 50:
        time.sleep(61 - datetime.now().second)


def test_two_cron_invocations_at_once_make_exactly_one_run(home, store_url):
    """On the default SQLite file and on a team's PostgreSQL (``RAYLINE_DB_URL``)."""
    away_from_a_minute_boundary()
    procs = [cron_like(home, "schedule", "tick", f"{FLOW}:minutely", db_url=store_url) for _ in range(2)]
    results = [finish(p) for p in procs]
    for code, _, err in results:
        assert code == 0, err
        assert_plain_log_lines(err)
    with RunStore(store_url) as store:
        [run] = store.list_runs()
    assert run.status == RunStatus.SUCCEEDED and run.flow_name == "minutely"
    tick = f"minutely cron @ {run.trigger['logical_time']}"
    started, other = sorted((out.strip() for _, out, _ in results), key=lambda o: "start" not in o)
    assert started == f"{tick}: start {run.run_id} -> SUCCEEDED"
    # The other invocation either read the tick as already fired (stored state), or fired it
    # too and got the existing run back from its run key.
    assert other in ("", f"{tick}: exists {run.run_id}")
    assert run.run_key == f"minutely/cron@{run.trigger['logical_time']}"
    assert run.trigger["kind"] == "cron" and run.trigger["reason"] == "scheduled tick"


def test_exit_codes_under_cron_nothing_due_failed_run_and_usage_error(home):
    away_from_a_minute_boundary()
    idle = cron_like(home, "schedule", "tick", f"{FLOW}:yearly")
    failing = cron_like(home / "other", "schedule", "tick", f"{FLOW}:failing")
    usage = cron_like(home, "schedule", "tick", "/no/such/flow.py")
    code, out, err = finish(idle)
    assert (code, out) == (0, "") and "nothing due" in err
    assert_plain_log_lines(err)
    code, out, err = finish(failing)
    assert code == 1 and "start" in out and "-> FAILED" in out
    assert_plain_log_lines(err)
    code, _, err = finish(usage)
    assert code == 2 and "no such file: /no/such/flow.py" in err


# ------------------------------------------------------------------- `rayline run` under cron
def stamped_lines(err: str) -> None:
    """Every stderr line is plain and starts with a UTC timestamp (log or progress line)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "expected lines on stderr"
    for line in lines:
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \S", line) and "\x1b[" not in line, line


def wait_for_running_run(home: Path, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (home / "runs.db").exists():
            with RunStore.open(home) as store:
                running = store.list_runs(status=RunStatus.RUNNING)
            if running:
                return running[0]
        time.sleep(0.1)
    raise AssertionError(f"no RUNNING run within {timeout:g} s")


def test_two_cron_invocations_of_rayline_run_at_once_run_the_flow_once(home, store_url):
    """On the default SQLite file and on a team's PostgreSQL (``RAYLINE_DB_URL``)."""
    procs = [cron_like(home, "run", str(SLOW), "--local", "-p", "seconds=4", db_url=store_url)
             for _ in range(2)]  # fmt: skip
    results = [finish(p) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, EXIT_SKIPPED], [(c, out, err[-2000:]) for c, out, err in results]
    (_, ran_out, ran_err), (_, skip_out, skip_err) = sorted(results, key=lambda r: r[0])
    with RunStore(store_url) as store:
        runs = store.list_runs()
    ran = [r for r in runs if r.status != RunStatus.SKIPPED]
    skipped = [r for r in runs if r.status == RunStatus.SKIPPED]
    assert len(ran) == 1 and len(skipped) == 1, [(r.run_id, r.status) for r in runs]
    [run], [skip] = ran, skipped
    assert run.status == RunStatus.SUCCEEDED and run.flow_name == "slow"
    assert run.trigger["overlap"] == "skip"  # the flow declares no schedule: the default policy
    assert ran_out.startswith(f"run {run.run_id} (slow): SUCCEEDED")
    # One clear line on stdout naming the flow and the run holding its slot; nothing ran.
    # (the holder is PENDING between taking the slot and starting its executor)
    line = (rf"run {skip.run_id} \(slow\): SKIPPED, nothing ran: flow 'slow' is busy: "
            rf"run {run.run_id} is (RUNNING|PENDING) \(overlap=skip\)")
    assert re.fullmatch(line, skip_out.strip()), skip_out
    assert skip.trigger["held_by"] == run.run_id and skip.ended_at is not None
    with RunStore(store_url) as store:
        assert store.get_tasks(skip.run_id) == []
    assert_plain_log_lines(skip_err)
    assert "WARNING" in skip_err and run.run_id in skip_err
    stamped_lines(ran_err)


def test_rayline_run_skipped_under_cron_says_so_in_json(home):
    holder = cron_like(home, "run", str(SLOW), "--local", "-p", "seconds=30")
    try:
        running = wait_for_running_run(home)
        code, out, err = finish(cron_like(home, "run", str(SLOW), "--local", "-p", "seconds=0", "--json"))
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert code == EXIT_SKIPPED, err
    doc = json.loads(out)
    assert doc["status"] == "SKIPPED" and doc["flow"] == "slow" and doc["held_by"] == running.run_id
    assert doc["reason"] == f"flow 'slow' is busy: run {running.run_id} is RUNNING (overlap=skip)"
    assert doc["tasks"] == [] and doc["run_id"] != running.run_id


def test_a_killed_or_interrupted_holder_leaves_the_slot_to_the_next_cron_invocation(home):
    killed = cron_like(home, "run", str(SLOW), "--local", "-p", "seconds=60")
    first = wait_for_running_run(home)
    os.kill(killed.pid, signal.SIGKILL)  # `env` execs rayline: this is the driver itself
    assert finish(killed)[0] == -signal.SIGKILL
    code, out, err = finish(cron_like(home, "run", str(SLOW), "--local", "-p", "seconds=0.1"))
    assert code == 0 and "SUCCEEDED" in out, err

    stopped = cron_like(home, "run", str(SLOW), "--local", "-p", "seconds=60")
    wait_for_running_run(home)
    stopped.send_signal(signal.SIGINT)
    code, out, err = finish(stopped)
    assert code == 130 and "CANCELLED" in out, err
    code, out, err = finish(cron_like(home, "run", str(SLOW), "--local", "-p", "seconds=0.1"))
    assert code == 0 and "SUCCEEDED" in out, err

    with RunStore.open(home) as store:
        statuses = [r.status for r in reversed(store.list_runs())]
        assert store.get_run(first.run_id).status == RunStatus.INTERRUPTED  # found dead, taken over
    assert statuses == [RunStatus.INTERRUPTED, RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.SUCCEEDED]
