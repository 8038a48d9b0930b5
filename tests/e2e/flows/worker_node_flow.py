"""A flow whose middle task must run on the worker node of ``tests/cluster_nodes.py`` (it asks
for the custom resource ``worker_node``), so its output is written on that node's disk."""

from __future__ import annotations

import socket

from rayline import flow, task


@task
def start(n: int) -> list[int]:
    return list(range(n))


@task(cpus=0, resources={"worker_node": 1})
def on_worker(values: list[int]) -> dict:
    import ray

    return {"total": sum(values), "node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}


@flow
def worker_node(n: int = 4):
    return on_worker(start(n))
