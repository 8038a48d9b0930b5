"""Flows used by the fault-injection tests (tests/integration/test_faults.py and
tests/e2e/test_driver_faults.py). Like ``reliability.py``, tasks coordinate with the test through
files in a folder passed as a parameter: ``ran-<name>`` ledgers, pid files, ``go`` markers."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from rayline import flow, task


def _ledger(folder: str, name: str) -> None:
    with open(os.path.join(folder, f"ran-{name}"), "a") as f:
        f.write(f"{os.getpid()}\n")


# -------------------------------------------------- flows for drivers that load this file
# A driver started as `rayline run .../faults.py:FLOW` imports this file under a made-up module
# name that Ray workers cannot import, so the bodies below are self-contained: they call no
# helper function defined in this file (see test_flow_file_with_a_helper_function_runs_on_ray
# in tests/e2e/test_driver_faults.py for why that matters).


@task
def start(folder: str) -> int:
    with open(os.path.join(folder, "ran-start"), "a") as f:
        f.write(f"{os.getpid()}\n")
    return 10


@task
def gated(x: int, folder: str) -> int:
    """Writes its pid, then waits (up to 60 s) for the test's `go` marker."""
    with open(os.path.join(folder, "ran-gated"), "a") as f:
        f.write(f"{os.getpid()}\n")
    Path(folder, "gated.pid").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(folder, "go")):
        if time.monotonic() > deadline:
            raise TimeoutError("the go marker never appeared")
        time.sleep(0.02)
    return x + 1


@task
def finish(x: int, folder: str) -> dict:
    with open(os.path.join(folder, "ran-finish"), "a") as f:
        f.write(f"{os.getpid()}\n")
    return {"value": x * 2}


@flow
def chain(folder: str):
    """``reliability.chain`` with self-contained task bodies."""
    return finish(gated(start(folder), folder), folder)


@task(retries=3, backoff={"base": 1.0, "factor": 2.0})
def always_down(folder: str) -> int:
    """Fails every time; retried after 1 s, 2 s, 4 s, so a cancel can land between attempts."""
    with open(os.path.join(folder, "ran-always_down"), "a") as f:
        f.write(f"{os.getpid()}\n")
    Path(folder, "always_down.pid").write_text(str(os.getpid()))
    raise RuntimeError("the service is down")


@flow
def hopeless_slowly(folder: str):
    return always_down(folder)


# ------------------------------------------------------- unserialisable return values (F15)
@task
def make_lock(folder: str) -> object:
    _ledger(folder, "make_lock")
    return threading.Lock()


@flow
def returns_lock(folder: str):
    return make_lock(folder)


@task
def make_generator(folder: str) -> object:
    _ledger(folder, "make_generator")
    return (i * i for i in range(3))


@task
def consume(values: object, folder: str) -> int:
    _ledger(folder, "consume")
    return sum(values)  # type: ignore[call-overload]


@flow
def returns_generator(folder: str):
    return consume(make_generator(folder), folder)


# ------------------------------------------------------------- placement on two nodes (GPU)
def _where(kind: str, i: int) -> dict:
    import ray

    return {
        "kind": kind,
        "i": i,
        "node": ray.get_runtime_context().get_node_id(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "pid": os.getpid(),
    }


@task(gpus=1)
def on_gpu(i: int) -> dict:
    return _where("gpu", i)


@task
def on_cpu(i: int, folder: str, together: int = 2, seconds: float = 0.3) -> dict:
    """Waits (up to 60 s) until ``together`` CPU tasks have started, then works ``seconds``:
    on a cluster of 1-CPU nodes, the first ``together`` of them must run on different nodes."""
    Path(folder, f"cpu-{i}").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while sum(1 for p in Path(folder).iterdir() if p.name.startswith("cpu-")) < together:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only one CPU task at a time ran; {together} never ran together")
        time.sleep(0.02)
    time.sleep(seconds)
    return _where("cpu", i)


@task
def collect(gpu: list, cpu: list) -> dict:
    return {"gpu": gpu, "cpu": cpu}


@flow
def placement(folder: str):
    """Two GPU tasks and eight CPU tasks, all submitted at once."""
    return collect(on_gpu.map(range(2)), on_cpu.map(range(8), folder=folder))


@task(gpus=2)
def wants_two_gpus() -> int:
    return 2


@flow
def two_gpus():
    return wants_two_gpus()
