"""A driver for the preemption test: a run of two one-CPU tasks in the preemptible queue
``spot`` (priority 0) on the cluster at ``RAY_ADDRESS``. Each task counts steps until the gate file
exists; when ``rayline.context.preempted()`` turns true it saves its step (its checkpoint),
appends ``<tag> preempted <step>`` to the ledger and raises ``TaskPreempted``. Every attempt
starts from the saved step and appends ``<tag> start <step>``. Prints ``finished RUN STATUS``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import rayline
from rayline import context, flow, task
from rayline.config import Settings
from rayline.errors import TaskPreempted


@task(cpus=1)
def count_steps(tag: str, ledger: str, gate: str) -> int:
    saved = Path(f"{ledger}.{tag}.checkpoint")
    step = int(saved.read_text()) if saved.exists() else 0
    with open(ledger, "a") as f:
        f.write(f"{tag} start {step}\n")
    deadline = time.monotonic() + 180
    while not os.path.exists(gate) and time.monotonic() < deadline:
        step += 1
        if context.preempted():
            saved.write_text(str(step))
            with open(ledger, "a") as f:
                f.write(f"{tag} preempted {step}\n")
            raise TaskPreempted(f"{tag} stopped at step {step}")
        time.sleep(0.05)
    return step


@flow(queue="spot")
def spot(ledger: str, gate: str):
    return [count_steps(f"low-{i}", ledger, gate) for i in range(2)]


def main() -> None:
    home, ledger, gate = sys.argv[1:4]

    def events(kind: str, data: dict) -> None:
        if kind in ("queued", "preempting", "preempted"):
            print(kind, data.get("message"), flush=True)

    settings = Settings(home=Path(home), heartbeat_interval=0.3, lease_ttl=3.0, pool="off")
    run = rayline.run(spot, {"ledger": ledger, "gate": gate}, settings=settings, on_event=events)
    print("finished", run.run_id, run.status.value, flush=True)


if __name__ == "__main__":
    main()
