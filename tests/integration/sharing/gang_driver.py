"""A driver on its own local Ray with 3 logical GPUs: one run of two "trainings" that need 2 GPUs
each, all at once (``@task(gang=...)``). Each places its two workers in the placement group
rayline reserved for it, appends ``<tag> start`` to the ledger ``argv[2]`` once both report a
GPU, waits for ``<ledger>.go-<tag>``, then appends ``<tag> end``. Prints the run's events
(``queued behind …``) and finally its id and status. ``argv[3]`` = ``queues``: admission by
queue (``RAYLINE_QUEUES``) is on."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import ray

import rayline
from rayline import context, flow, task
from rayline.config import Settings
from rayline.sdk.resources import Gang


def two_gpu_workers(args: dict) -> Gang:
    return Gang.of([{"GPU": 1}] * args["workers"], what=f"{args['workers']} workers")


def worker_gpu() -> list:
    return ray.get_gpu_ids()


@task(cpus=0, gang=two_gpu_workers)
def training(tag: str, ledger: str, workers: int = 2) -> int:
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = context.placement_group()
    assert pg is not None, "a gang task runs inside its placement group"
    step = ray.remote(num_cpus=0, num_gpus=1)(worker_gpu)
    gpus = ray.get([step.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i))
                    .remote() for i in range(workers)])  # fmt: skip
    assert all(len(g) == 1 for g in gpus), gpus
    with open(ledger, "a") as f:
        f.write(f"{tag} start\n")
    deadline = time.monotonic() + 120
    while not os.path.exists(f"{ledger}.go-{tag}") and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(ledger, "a") as f:
        f.write(f"{tag} end\n")
    return len(gpus)


@flow
def two_trainings(ledger: str):
    return [training("a", ledger), training("b", ledger)]


if __name__ == "__main__":
    home, ledger, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    ray.init(address="local", num_cpus=2, num_gpus=3, include_dashboard=False, log_to_driver=False)

    def events(kind: str, data: dict) -> None:
        if kind == "queued":
            print(kind, data.get("message"), flush=True)

    settings = Settings(home=Path(home), heartbeat_interval=0.3, lease_ttl=3.0, pool="off")
    run = rayline.run(two_trainings, {"ledger": ledger}, settings=settings, on_event=events)
    print(run.run_id, run.status.value, flush=True)
    ray.shutdown()
