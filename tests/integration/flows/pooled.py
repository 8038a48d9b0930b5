"""Flows of small one-CPU tasks, which run on the warm actor pool."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rayline import flow, task


@task
def whoami(i: int) -> int:
    return os.getpid()


@task
def collect(pids: list[int]) -> list[int]:
    return sorted(set(pids))


@flow
def pids():
    return collect(whoami.map(range(12)))


@task
def gated_pid(i: int, folder: str) -> int:
    """Task 0 writes its pid and waits for `go`; the others return at once."""
    if i == 0:
        Path(folder, "ran").open("a").write(f"{os.getpid()}\n")
        Path(folder, "pid").write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while not Path(folder, "go").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no go marker")
            time.sleep(0.02)
    return i


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@flow
def gated_fan(folder: str):
    return total(gated_pid.map(range(9), folder=folder))


@task(timeout=0.5)
def slow(i: int) -> int:
    if i == 3:
        time.sleep(30)
    return i


@flow
def slow_fan():
    return total(slow.map(range(9)))
