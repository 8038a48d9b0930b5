"""A flow whose task prints, waits until its own log holds that line (the log is flushed while
the task runs), writes the marker ``printed`` and then waits for ``go`` before printing its last
line. (``tests/fixtures/doomed.py`` holds a task that prints and fails.)"""

from __future__ import annotations

import time
from pathlib import Path

from rayline import context, flow, task
from rayline.store.task_logs import TaskLogs


def _wait(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what}")
        time.sleep(0.05)


@task
def chatty(folder: str) -> int:
    print("chatty says hello", flush=True)
    ctx = context.current()
    logs = TaskLogs(ctx.store)
    _wait(lambda: "chatty says hello" in (logs.read(ctx.run_id, ctx.node_id, ctx.attempt) or ""),
          "the line to reach the task's log")
    Path(folder, "printed").touch()
    _wait(lambda: Path(folder, "go").exists(), "the go marker")
    print("chatty is done")
    return 1


@flow
def printing(folder: str):
    return chatty(folder)
