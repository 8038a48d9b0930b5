"""Persisting large task outputs beside the work instead of in front of it.

A task whose output is large (``NodeCall.beside``: an array, table or byte string of 1 MiB or
more) returns it to Ray's object store at once, so the tasks that consume it start as they would
in plain Ray (numpy and Arrow values zero-copy). The Ray executor then hands the value's
``ObjectRef`` to the ``Persister`` actor of the node that holds it, which writes it to the
artifact store (``ArtifactStore.put``: streamed into its file, hashed once as it is written,
manifest last) and records its cache entry. The executor reports the task finished to the
runner only when that write is done, so:

- the run store records the task SUCCEEDED, with its digest, once its artifact is committed; a
  driver killed before that leaves the task to be re-run by ``rayline resume``;
- the run succeeds only when every artifact is committed;
- an output that cannot be stored fails its task, as it did when the worker wrote it (its
  consumers may have run by then).

One actor per Ray node and driver job, made on first use (not before: a run whose outputs are
all small never starts one, and its start would steal the CPU of the run's tasks) and kept for
the job's life in
``_PERSISTERS`` (a cache of actor handles, as ``pool.py`` keeps its pools): it holds no CPU (its
work is writing and hashing, which release the GIL, in a few threads), and Ray restarts it and
retries the write if its process dies.
"""

from __future__ import annotations

import os
import threading
import traceback
from typing import Any

THREADS = 4
_PERSISTERS: dict[tuple[str, str | None], Any] = {}
_LOCK = threading.Lock()


class Persister:
    """Writes values it is handed (resolved from their ``ObjectRef``) to an artifact store."""

    def put(self, store: Any, cache_key: str | None, value: Any) -> dict[str, Any]:
        """``{"digest", "size", "fmt"}`` of the stored value, or the error that stopped it."""
        try:
            info = store.put(value)
            if cache_key is not None:
                store.cache_put(cache_key, info.digest)
        except Exception as exc:  # the output cannot be serialised or written
            return {"error_type": f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
                    "error_message": str(exc)[:4000],
                    "traceback": "".join(traceback.format_exception(exc))[-20000:]}  # fmt: skip
        return {"digest": info.digest, "size": info.size, "fmt": info.fmt, "persist_pid": os.getpid()}


def persist(store: Any, value_ref: Any, cache_key: str | None, node: str | None) -> Any:
    """Start writing the value behind ``value_ref`` (held on Ray node ``node``); the returned
    ``ObjectRef`` resolves to ``Persister.put``'s answer."""
    return _actor_for(node).put.remote(store, cache_key, value_ref)


def _actor_for(node: str | None) -> Any:
    import ray

    key = (ray.get_runtime_context().get_job_id(), node)
    with _LOCK:
        actor = _PERSISTERS.get(key)
        if actor is None:
            options: dict[str, Any] = {}
            if node is not None:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True)
            cls = ray.remote(num_cpus=0, max_concurrency=THREADS, max_restarts=-1, max_task_retries=3)(Persister)
            actor = _PERSISTERS[key] = cls.options(**options).remote()
        return actor


def forget(node: str | None = None) -> None:
    """Drop the handles of this job's persisters (all, or ``node``'s); Ray stops an actor once
    no handle to it is left."""
    with _LOCK:
        for key in [k for k in _PERSISTERS if node is None or k[1] == node]:
            del _PERSISTERS[key]


#: Outputs at least this large (``size_hint``) are persisted beside the work.
BESIDE_MIN = 1 << 20


def beside_range() -> tuple[int, int] | None:
    """(least, most) bytes of an output persisted beside the work on this cluster: from 1 MiB
    to a quarter of the smallest node's object store (larger ones travel through the artifact
    store, so an output larger than the object store still reaches its consumer)."""
    import ray

    stores = [n["Resources"].get("object_store_memory", 0) for n in ray.nodes() if n.get("Alive")]
    most = int(min(stores) // 4) if stores else 0
    return (BESIDE_MIN, most) if most >= BESIDE_MIN else None
