"""The installed ``rayline`` command run the way system cron runs it: ``env -i`` with only PATH,
HOME and RAYLINE_* set, no TTY (stdin from /dev/null, output to pipes), two invocations of
``rayline schedule tick`` at once on a due schedule. Exactly one run happens, the log lines are
plain timestamped lines, and the exit codes mean something (0 also when nothing was due)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from rayline.engine.states import RunStatus
from rayline.engine.store.runs import RunStore

RAYLINE = Path(sys.executable).parent / "rayline"
FLOW = Path(__file__).parent / "flows" / "cronned.py"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR|CRITICAL) rayline[\w.]*: ")


def cron_like(home: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``rayline ARGS`` as a crontab line would: an empty environment but for PATH, HOME
    and the RAYLINE_* variables the crontab sets, stdin from /dev/null, no terminal."""
    env = ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={os.environ.get('HOME', '/root')}",
           f"RAYLINE_HOME={home}", "RAYLINE_EXECUTOR=local"]  # fmt: skip
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


def test_two_cron_invocations_at_once_make_exactly_one_run(home):
    away_from_a_minute_boundary()
    procs = [cron_like(home, "schedule", "tick", f"{FLOW}:minutely") for _ in range(2)]
    results = [finish(p) for p in procs]
    for code, _, err in results:
        assert code == 0, err
        assert_plain_log_lines(err)
    with RunStore.open(home) as store:
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
