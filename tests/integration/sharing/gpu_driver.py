"""A driver on its own local Ray with one logical GPU: runs a 1-GPU task that records its own
run time in ``argv[2]``, then prints the run id. Used by ``test_accounting.py``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import ray

import rayline
from rayline import flow, task
from rayline.config import Settings


@task(cpus=1, gpus=1, memory=64 * 1024 * 1024)
def hold_the_gpu(path: str) -> float:
    start = time.time()
    time.sleep(1.5)
    took = time.time() - start
    Path(path).write_text(str(took))
    return took


@flow
def gpu_flow(path: str):
    return hold_the_gpu(path)


if __name__ == "__main__":
    home, timing = sys.argv[1], sys.argv[2]
    ray.init(address="local", num_cpus=1, num_gpus=1, include_dashboard=False, log_to_driver=False)
    run = rayline.run(gpu_flow, {"path": timing}, settings=Settings(home=Path(home)))
    print(run.run_id, run.status.value)
    ray.shutdown()
