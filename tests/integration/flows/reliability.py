"""Flows used by the reliability tests. Tasks coordinate with the test through files in a
folder passed as a parameter (pid files, `go` markers, execution ledgers) — never sleeps alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rayline import flow, task


class TransientError(Exception):
    pass


def _ledger(folder: str, name: str) -> None:
    with open(os.path.join(folder, f"ran-{name}"), "a") as f:
        f.write(f"{os.getpid()}\n")


def wait_for(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"marker {path} never appeared")
        time.sleep(0.02)


@task
def start(folder: str) -> int:
    _ledger(folder, "start")
    return 10


@task
def gated(x: int, folder: str) -> int:
    """Writes its pid, then waits for the test's `go` marker."""
    _ledger(folder, "gated")
    Path(folder, "gated.pid").write_text(str(os.getpid()))
    wait_for(os.path.join(folder, "go"))
    return x + 1


@task
def finish(x: int, folder: str) -> dict:
    _ledger(folder, "finish")
    return {"value": x * 2}


@flow
def chain(folder: str):
    return finish(gated(start(folder), folder), folder)


@task
def boom(folder: str) -> int:
    _ledger(folder, "boom")
    raise ValueError("bad input row 7")


@task
def after(x: int, folder: str) -> int:
    _ledger(folder, "after")
    return x


@task
def independent(folder: str) -> str:
    _ledger(folder, "independent")
    return "fine"


@flow
def fails_once(folder: str):
    return [after(boom(folder), folder), independent(folder)]


@task(retries=2, retry_on=(TransientError,), backoff={"base": 0.2, "factor": 2.0})
def transient(folder: str) -> str:
    _ledger(folder, "transient")
    runs = len(Path(folder, "ran-transient").read_text().split())
    if runs < 3:
        raise TransientError(f"try {runs} failed")
    return "ok"


@flow
def retried(folder: str):
    return transient(folder)


@task(retries=3, backoff={"base": 0.2, "factor": 2.0})
def always_fails(folder: str) -> int:
    _ledger(folder, "always")
    Path(folder, "always.pid").write_text(str(os.getpid()))
    raise RuntimeError("the service is down")


@flow
def hopeless(folder: str):
    return always_fails(folder)


@task(timeout=0.5)
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@flow
def too_slow(seconds: float = 30.0):
    return sleepy(seconds)


@task(cache=True)
def expensive(x: int, folder: str) -> int:
    _ledger(folder, "expensive")
    return x * 100


@flow
def cached(folder: str, x: int = 3):
    return expensive(start(folder), folder)
