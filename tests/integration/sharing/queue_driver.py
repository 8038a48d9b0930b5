"""A driver process for the admission tests: runs ``count`` one-CPU tasks on the cluster at
``RAY_ADDRESS`` (or in this process: ``argv[8]`` is ``ray`` or ``local``) under queue ``argv[3]``
and priority ``argv[4]``. Each task appends
``<tag>-<i> start`` to the ledger, then waits for the gate file (all tasks) or
``<gate>-<tag>-<i>`` (that one); ``argv[9]`` (optional) is each task's CPUs. ``RAYLINE_QUEUES`` names the
queues file; the run's events go to stdout (``queued behind …``)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import rayline
from rayline import flow, task
from rayline.config import Settings
from rayline.sdk.flow import Flow


@task(cpus=1)
def work(tag: str, ledger: str, gate: str) -> str:
    with open(ledger, "a") as f:
        f.write(f"{tag} start\n")
    deadline = time.monotonic() + 120
    while not (os.path.exists(gate) or os.path.exists(f"{gate}-{tag}")) and time.monotonic() < deadline:
        time.sleep(0.05)
    return tag


def make_flow(name: str, count: int, queue: str, priority: int, cpus: float = 1) -> Flow:
    each = work if cpus == 1 else work.with_options(cpus=cpus)

    def body(ledger: str, gate: str):
        return [each(f"{name}-{i}", ledger, gate) for i in range(count)]

    body.__name__ = name
    return flow(queue=queue, priority=priority)(body)


def main() -> None:
    home, name, queue, priority, count, ledger, gate, executor = sys.argv[1:9]
    f = make_flow(name, int(count), queue, int(priority), float(sys.argv[9]) if len(sys.argv) > 9 else 1)

    def events(kind: str, data: dict) -> None:
        if kind in ("queued", "run_started"):
            print(kind, data.get("message", data.get("run_id")), flush=True)

    settings = Settings(home=Path(home), heartbeat_interval=0.3, lease_ttl=3.0, pool="off")
    run = rayline.run(f, {"ledger": ledger, "gate": gate}, settings=settings, on_event=events,
                      executor=None if executor == "ray" else executor)
    print("finished", run.run_id, run.status.value, flush=True)


if __name__ == "__main__":
    main()
