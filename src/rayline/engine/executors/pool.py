"""Warm actors for small tasks: the same ``execute_node`` as a Ray task, without the per-task
worker lease and scheduling round trip (a call on a warm actor costs ~1/3 of a task here).

What keeps its meaning:
- *resources*: only nodes that ask for exactly one CPU and nothing else are eligible, and each
  actor holds one CPU (``num_cpus=1``) and runs one call at a time;
- *retries*: user exceptions are retried with backoff inside ``execute_node`` as for tasks; a
  worker death restarts the actor and Ray retries the call (``max_task_retries``), and the
  attempt number Ray reports is recorded as for tasks;
- *timeouts*: the per-attempt alarm runs in the actor's main thread, as in a task;
- *isolation*: one call at a time per process, as Ray's reused task workers; cancelling a run
  kills its pool (queued and running calls stop; the next run starts a fresh pool).

The pool is kept warm between runs of the same driver process (creating actors costs about a
second on 2 cores), in ``_POOLS`` keyed by Ray job: a cache of actor handles, not state that
changes what a run computes. An idle pool gives its CPUs back after ``IDLE_S`` seconds, and
before a run that has nodes the pool cannot take.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

log = logging.getLogger("rayline.pool")

IDLE_S = 5.0
NAMESPACE = "rayline"  # Ray internal-KV namespace for task definitions shipped to the pool
_POOLS: dict[str, WarmPool] = {}
_LOCK = threading.Lock()


def _actor_class(max_task_retries: int) -> Any:
    import ray

    from rayline.engine.worker import NodeCall, execute_node

    class PoolWorker:
        """Runs ``execute_node`` for any task; keeps each task's static part by key. The static
        part is read once per actor from Ray's internal KV store (where the driver put it), so a
        call carries only a key string and the call bytes."""

        def __init__(self) -> None:
            self._statics: dict[str, Any] = {}

        @ray.method(num_returns=2)
        def run(self, key: str, call: bytes, *resolved: Any) -> tuple[Any, dict[str, Any]]:
            static = self._statics.get(key)
            if static is None:
                from ray import cloudpickle
                from ray.experimental.internal_kv import _internal_kv_get

                data = _internal_kv_get(key, namespace=NAMESPACE)
                if data is None:
                    raise RuntimeError(f"rayline pool: the task definition {key} is gone (its run ended)")
                # Written by this job's own driver (WarmPool.submit) into Ray's GCS.
                static = self._statics[key] = cloudpickle.loads(data)  # noqa: S301
            return execute_node(static, NodeCall.unpack(call), *resolved)

        def forget(self) -> None:
            self._statics.clear()

        def pid(self) -> int:
            return os.getpid()

    return ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=max_task_retries)(PoolWorker)


class WarmPool:
    def __init__(self, size: int, max_task_retries: int = 3):
        cls = _actor_class(max_task_retries)
        self.size = size
        self.actors = [cls.remote() for _ in range(size)]
        self._static_keys: set[str] = set()
        self._next = 0
        self.last_used = time.monotonic()
        self.busy = False

    def begin(self) -> None:
        import uuid

        self.busy = True
        self.run_tag = uuid.uuid4().hex[:12]  # keys of one run never meet another run's

    def submit(self, key: str, static: Any, call: bytes, args: list[Any]) -> tuple[Any, Any]:
        if key not in self._static_keys:
            from ray import cloudpickle
            from ray.experimental.internal_kv import _internal_kv_put

            _internal_kv_put(key, cloudpickle.dumps(static), overwrite=True, namespace=NAMESPACE)
            self._static_keys.add(key)
        actor = self.actors[self._next % self.size]
        self._next += 1
        return actor.run.remote(key, call, *args)

    def end(self) -> None:
        from ray.experimental.internal_kv import _internal_kv_del

        for a in self.actors:
            a.forget.remote()  # runs after every queued call of this run (actor order)
        for key in self._static_keys:
            _internal_kv_del(key, namespace=NAMESPACE)
        self._static_keys.clear()
        self.busy = False
        self.last_used = time.monotonic()

    def kill(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception as exc:
                log.debug("kill pool actor: %s", exc)
        self.actors = []


def acquire(size: int) -> WarmPool:
    """The warm pool of this driver's Ray job, (re)built with ``size`` actors if needed."""
    import ray

    job = ray.get_runtime_context().get_job_id()
    with _LOCK:
        pool = _POOLS.get(job)
        if pool is not None and (pool.size != size or not pool.actors):
            pool.kill()
            pool = None
        if pool is None:
            pool = _POOLS[job] = WarmPool(size)
            _start_reaper()
        pool.begin()
        return pool


def release_all() -> None:
    """Give every idle pool's CPUs back now (before work the pool cannot take)."""
    with _LOCK:
        for job, pool in list(_POOLS.items()):
            if not pool.busy:
                pool.kill()
                del _POOLS[job]


def discard(pool: WarmPool) -> None:
    """Kill ``pool`` (its run was cancelled); the next run builds a fresh one."""
    with _LOCK:
        pool.kill()
        for job, p in list(_POOLS.items()):
            if p is pool:
                del _POOLS[job]


_reaper: threading.Thread | None = None


def _start_reaper() -> None:
    global _reaper
    if _reaper is not None and _reaper.is_alive():
        return

    def reap() -> None:
        while True:
            time.sleep(1.0)
            with _LOCK:
                for job, pool in list(_POOLS.items()):
                    if not pool.busy and time.monotonic() - pool.last_used > IDLE_S:
                        pool.kill()
                        del _POOLS[job]
                if not _POOLS:
                    return

    _reaper = threading.Thread(target=reap, name="rayline-pool-reaper", daemon=True)
    _reaper.start()


def eligible(node: Any) -> bool:
    r = node.spec.resources
    if node.spec.runtime_env:  # its worker must start in its own runtime environment
        return False
    return r.cpus == 1 and not r.gpus and r.memory is None and not r.custom and r.accelerator_type is None
