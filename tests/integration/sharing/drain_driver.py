"""A driver for the draining-node test, on its own ``ray.cluster_utils.Cluster``: a head and a
worker node of one CPU each, queues on (``RAYLINE_QUEUES``). One run of two looping one-CPU
tasks (one lands on each node; each appends ``<tag> start <step> <node id>`` to the ledger
``argv[2]``); once both run, this driver drains the worker node through Ray's drain API
(reason: preemption). The task there sees ``rayline.context.preempted()``, saves its step and
stops; it is queued again and resumes on the head once the gate ``argv[3]`` lets the other
task end. Prints ``finished RUN STATUS``."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

import rayline
from rayline import context, flow, task
from rayline.config import Settings
from rayline.errors import TaskPreempted


@task(cpus=1)
def loop(tag: str, ledger: str, gate: str) -> int:
    saved = Path(f"{ledger}.{tag}.checkpoint")
    step = int(saved.read_text()) if saved.exists() else 0
    with open(ledger, "a") as f:
        f.write(f"{tag} start {step} {ray.get_runtime_context().get_node_id()}\n")
    deadline = time.monotonic() + 300
    while not os.path.exists(gate) and time.monotonic() < deadline:
        step += 1
        if context.preempted():
            saved.write_text(str(step))
            with open(ledger, "a") as f:
                f.write(f"{tag} preempted {step}\n")
            raise TaskPreempted(f"{tag}: its node is draining")
        time.sleep(0.1)
    return step


@flow
def two_loops(ledger: str, gate: str):
    return [loop("a", ledger, gate), loop("b", ledger, gate)]


def drain_when_both_run(ledger: str, worker_node: str, gcs: str) -> None:
    from ray.core.generated import autoscaler_pb2

    while not (os.path.exists(ledger) and len(Path(ledger).read_text().splitlines()) >= 2):
        time.sleep(0.1)
    client = ray._raylet.GcsClient(address=gcs)
    accepted, why = client.drain_node(worker_node, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
                                      "spot instance reclaimed (test)", int(time.time() * 1000) + 600_000)  # fmt: skip
    print("drain accepted" if accepted else f"drain refused: {why}", flush=True)


if __name__ == "__main__":
    home, ledger, gate = sys.argv[1:4]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    threading.Thread(target=drain_when_both_run, args=(ledger, worker.node_id, cluster.address), daemon=True).start()
    settings = Settings(home=Path(home), heartbeat_interval=0.3, lease_ttl=5.0, pool="off")
    run = rayline.run(two_loops, {"ledger": ledger, "gate": gate}, settings=settings)
    print("finished", run.run_id, run.status.value, flush=True)
    ray.shutdown()
    cluster.shutdown()
