"""Ray executor: each node is one ``ray.remote`` task (options from its ``Resources``) whose
upstream ``ObjectRef``s are top-level arguments, so Ray orders the work and values stay in the
object store. The driver only ever fetches the small meta object of each task.

A node with an atomic gang (``PlannedNode.gang``: ``train_torch``'s workers) is admitted only
when all its bundles fit: the executor creates a placement group of them and passes its
``ready()`` reference as an argument, so Ray starts the task once every bundle is reserved; two
trainings that together do not fit run one after the other instead of each holding half its
workers. The task finds the group in ``rayline.context.placement_group()``; it is removed when
the task ends (or is cancelled).

A large output to persist is written beside the work (``persister.py``): the task returns it to
the object store, its consumers start, and a persister writes it meanwhile; the node counts as
finished (``wait``, ``metas``) once its artifact is committed."""

from __future__ import annotations

import dataclasses
import logging
import re
import socket
import sys
from pathlib import Path
from typing import Any

from rayline.engine.compiler import PlannedNode
from rayline.engine.executors import gangs, persister
from rayline.engine.worker import NodeCall, Stored, TaskStatic, code_in, execute_node

log = logging.getLogger("rayline.executor")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class RayHandle:
    """One node: its value and meta refs; while its output is being persisted beside the work,
    the task's meta and the persister's ``persist_ref``; ``pg``, the placement group of its gang."""

    __slots__ = ("node_id", "value", "meta_ref", "pg", "meta", "persist_ref")

    def __init__(self, node_id: str, value: Any, meta_ref: Any, pg: Any = None):
        self.node_id = node_id
        self.value = value
        self.meta_ref = meta_ref
        self.pg = pg  # the placement group holding the node's gang, if it has one
        self.meta: dict[str, Any] | None = None
        self.persist_ref: Any = None


class RayExecutor:
    """Runs nodes as Ray tasks on the cluster at ``address`` (or rayline's own local Ray started
    on demand: see ``engine/ray_cluster.py``; ``ray_dir`` holds its token, default
    ``Settings().ray_dir``)."""

    name = "ray"
    sequential = False

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        object_store_memory: int | None = None,
        pool: str = "auto",
        ray_dir: Path | None = None,
    ):
        self.address = address
        self.num_cpus = num_cpus
        self.object_store_memory = object_store_memory
        self.pool_policy = pool
        self.ray_dir = ray_dir
        self._pool: Any = None
        self._pooled: set[str] = set()
        self._remotes: dict[Any, Any] = {}
        self._by_value: set[str] = set()
        self.started_ray = False
        self._gcs: tuple[str, int] | None = None
        self._lost: str | None = None
        self._beside: tuple[int, int] | None = None
        self._store: Any = None  # the artifact store the persisters write to (from the statics)

    def start(self) -> None:
        from rayline.config import Settings
        from rayline.engine.ray_cluster import connect

        ray_dir = self.ray_dir or Settings().ray_dir
        if connect(self.address, ray_dir=ray_dir, num_cpus=self.num_cpus,
                   object_store_memory=self.object_store_memory):  # fmt: skip
            self.started_ray = True
        self._gcs = _gcs_address()
        self._beside = persister.beside_range()

    def lost(self) -> str | None:
        """Why the cluster is gone: its head's GCS refuses connections (or does not answer within
        a second). Ray notices the same only after a minute, and then ends this process from
        native code, so the run would be left RUNNING with nothing reported."""
        if self._gcs is None:
            self._gcs = _gcs_address()
            if self._gcs is None:
                return None
        host, port = self._gcs
        try:
            socket.create_connection((host, port), timeout=1.0).close()
        except OSError as exc:
            self._lost = (f"lost the Ray cluster: its head (GCS at {host}:{port}) cannot be reached "
                          f"({exc.strerror or type(exc).__name__})")  # fmt: skip
            return self._lost
        self._lost = None
        return None

    def cluster_nodes(self) -> list[dict[str, float]] | None:
        import ray

        return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]

    def prepare(self, nodes: list[PlannedNode]) -> None:
        """Decide which nodes run on warm actors (see ``pool.py``). Policy ``auto``: when every
        node is eligible and there are at least 8 of them; ``on``: every eligible node; ``off``:
        never. A run with nodes the pool cannot take first gives idle pools' CPUs back."""
        import ray

        from rayline.engine.executors import pool

        self._pooled = set()
        ok = [n for n in nodes if pool.eligible(n)]
        use = self.pool_policy == "on" or (
            self.pool_policy == "auto" and len(ok) == len(nodes) and len(ok) >= 8
        )
        if len(ok) != len(nodes) or not use:
            pool.release_all()
        if not use or not ok:
            return
        size = min(int(ray.cluster_resources().get("CPU", 0)), len(ok), 8)
        if size < 1:
            return
        self._pool = pool.acquire(size)
        self._pooled = {n.id for n in ok}

    def finish(self) -> None:
        if self._pool is not None and self._lost is None:  # a lost cluster took the pool with it
            self._pool.end()
        self._pool = None
        self._pooled = set()

    def _remote_for(self, node: PlannedNode, static: TaskStatic, gang: bool = False) -> Any:
        key = (id(static), gang, tuple(sorted((k, repr(v)) for k, v in node.ray_options.items())))
        remote = self._remotes.get(key)
        if remote is None:
            import ray

            self._pickle_by_value(static.fn)
            base = self._remotes.get((id(static), gang))
            if base is None:
                base = self._remotes[(id(static), gang)] = ray.remote(_entry_for(static, node.spec.name, gang))
            remote = self._remotes[key] = base.options(num_returns=2, **node.ray_options)
        return remote

    def _pickle_by_value(self, fn: Any) -> None:
        """Ship the user's module by value when a fresh worker could not import it by name
        (a flow file loaded from a path, a notebook, ``__main__``)."""
        mod_name = getattr(fn, "__module__", None)
        if not mod_name or mod_name in self._by_value or mod_name.startswith("rayline."):
            return
        module = sys.modules.get(mod_name)
        path = getattr(module, "__file__", None) or ""
        if "site-packages" in path or path.startswith(sys.prefix):
            return
        from ray import cloudpickle  # Ray pickles task functions with its own copy

        try:
            cloudpickle.register_pickle_by_value(module)
        except (ValueError, TypeError):  # builtins / already registered / not a module
            pass
        self._by_value.add(mod_name)

    def submit(self, node: PlannedNode, static: TaskStatic, call: NodeCall, inputs: list[Any]) -> RayHandle:
        self._pickle_by_value(static.fn)
        for obj in code_in(call.template):  # e.g. a model_fn from the flow file, for a built-in task
            self._pickle_by_value(obj)
        if call.persist and not call.digest_needed and self._beside is not None and static.store is not None:
            call = dataclasses.replace(call, beside=self._beside)
            self._store = static.store
        values = [i if isinstance(i, Stored) else i.value for i in inputs]
        metas = []
        if call.cache_base is not None:  # upstream digests make the cache key
            metas = [{"status": "SUCCEEDED", "digest": i.digest} if isinstance(i, Stored) else i.meta_ref for i in inputs]
        if node.id in self._pooled:
            key = f"static/{self._pool.run_tag}/{id(static)}"
            value_ref, meta_ref = self._pool.submit(key, static, call.pack(), [*values, *metas])
        elif node.gang is not None and node.gang.atomic:
            pg = gangs.placement_group_for(node, call.run_id)
            remote = self._remote_for(node, static, gang=True)
            value_ref, meta_ref = remote.remote(call.pack(), pg, pg.ready(), *values, *metas)
            return RayHandle(node.id, value_ref, meta_ref, pg)
        else:
            value_ref, meta_ref = self._remote_for(node, static).remote(call.pack(), *values, *metas)
        return RayHandle(node.id, value_ref, meta_ref)

    def wait(self, handles: list[RayHandle], timeout: float) -> list[RayHandle]:
        """Handles whose task finished and whose output, if persisted beside the work, is
        committed; returns when all of them are, or after ``timeout``. A task that finishes
        meanwhile asking for that (``persist: beside`` in its meta) gets its write started at
        once, and is returned when the write is done."""
        import time

        import ray

        deadline = time.monotonic() + timeout
        waiting = {(h.persist_ref if h.persist_ref is not None else h.meta_ref): h for h in handles}
        done: list[RayHandle] = []
        while waiting:
            ready, _ = ray.wait(list(waiting), num_returns=1, timeout=max(deadline - time.monotonic(), 0))
            if not ready:
                break
            ready, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=0)  # all ready now
            finished = [waiting.pop(r) for r in ready]
            for h in self._start_persists([h for h in finished if h.persist_ref is None and h.meta is None]):
                waiting[h.persist_ref] = h
            done += [h for h in finished if h.persist_ref is None or h.persist_ref not in waiting]
            if time.monotonic() >= deadline:
                break
        return done

    def _start_persists(self, finished: list[RayHandle]) -> list[RayHandle]:
        """Read the metas of tasks that just finished (kept on their handles for ``metas``);
        start writing the outputs that ask to be persisted beside the work; those handles."""
        import ray
        from ray import exceptions as rex

        try:
            metas = ray.get([h.meta_ref for h in finished], timeout=60)
        except (rex.RayError, rex.GetTimeoutError):
            metas = []
            for h in finished:
                metas.append(self._meta(h))
        started = []
        for h, meta in zip(finished, metas, strict=True):
            h.meta = meta
            if meta.get("persist") == "beside":
                h.persist_ref = persister.persist(self._store, h.value, meta.get("cache_key"), meta.get("node"))
                started.append(h)
        return started

    def metas(self, handles: list[RayHandle]) -> list[dict[str, Any]]:
        import ray
        from ray import exceptions as rex

        gangs.remove_groups(handles)
        plain = [h for h in handles if h.meta is None]
        try:
            got = dict(zip(map(id, plain), ray.get([h.meta_ref for h in plain], timeout=60), strict=True))
        except (rex.RayError, rex.GetTimeoutError):
            got = {id(h): self._meta(h) for h in plain}
        return [got[id(h)] if h.meta is None else h.meta if h.persist_ref is None else self._persisted_meta(h)
                for h in handles]  # fmt: skip

    def _persisted_meta(self, handle: RayHandle) -> dict[str, Any]:
        """The task's meta with its artifact's digest, or FAILED if the output was not stored."""
        import ray
        from ray import exceptions as rex

        meta = dict(handle.meta or {})
        meta.pop("persist", None)
        meta.pop("node", None)
        try:
            stored = ray.get(handle.persist_ref, timeout=60)
        except rex.TaskCancelledError:
            return {**meta, "status": "CANCELLED"}
        except (rex.RayError, rex.GetTimeoutError) as exc:
            persister.forget(handle.meta.get("node") if handle.meta else None)
            cause = getattr(exc, "cause", None) or exc
            stored = {"error_type": f"ray.{type(cause).__name__}", "error_message": _infra_message(type(cause).__name__, str(cause))}
        if "digest" in stored:
            meta.update(digest=stored["digest"], size=stored["size"], fmt=stored["fmt"])
            return meta
        attempts = [dict(a) for a in meta.get("attempts", [])] or [{"attempt": 1, "started": None}]
        attempts[-1].update(status="FAILED", error_type=stored["error_type"], traceback=stored.get("traceback"),
                            error_message=f"cannot store the output of task '{handle.node_id}': {stored['error_message']}")
        return {**meta, "status": "FAILED", "attempts": attempts}

    def _meta(self, handle: RayHandle) -> dict[str, Any]:
        import ray
        from ray import exceptions as rex

        try:
            return ray.get(handle.meta_ref, timeout=60)
        except rex.TaskCancelledError:
            return {"node_id": handle.node_id, "status": "CANCELLED"}
        except (rex.RayError, ray.exceptions.GetTimeoutError) as exc:
            cause = getattr(exc, "cause", None) or exc
            kind = type(cause).__name__
            text = str(cause) if cause is not exc else str(exc)
            return {
                "node_id": handle.node_id,
                "status": "FAILED",
                "infrastructure": True,
                "attempts": [
                    {
                        "attempt": 1,
                        "status": "FAILED",
                        "error_type": f"ray.{kind}",
                        "error_message": _infra_message(kind, text),
                    }
                ],
            }

    def cancel(self, handles: list[RayHandle], *, force: bool = False) -> None:
        import ray

        if self._pool is not None and any(h.node_id in self._pooled for h in handles):
            if force or len(handles) > 1:  # a cancelled run (or a timed-out call): stop the pool
                from rayline.engine.executors import pool

                pool.discard(self._pool)
                self._pool = None
                handles = [h for h in handles if h.node_id not in self._pooled]
        for h in handles:
            try:
                if h.persist_ref is not None:  # the task finished; its output is being written
                    ray.cancel(h.persist_ref)
                else:
                    ray.cancel(h.meta_ref, force=force, recursive=True)
            except Exception as exc:  # already finished, or its owner is gone
                log.debug("cancel %s: %s", h.node_id, exc)
        gangs.remove_groups(handles)

    def release(self, handles: list[RayHandle]) -> None:
        for h in handles:
            h.value = None


def _entry_for(static: TaskStatic, name: str, gang: bool = False) -> Any:
    def entry(call: bytes, *resolved: Any) -> tuple[Any, dict[str, Any]]:
        return execute_node(static, NodeCall.unpack(call), *resolved)

    def gang_entry(call: bytes, pg: Any, _ready: Any, *resolved: Any) -> tuple[Any, dict[str, Any]]:
        from rayline import context

        token = context._hold_gang(pg)  # every bundle is reserved: Ray waited for pg.ready()
        try:
            return execute_node(static, NodeCall.unpack(call), *resolved)
        finally:
            context._drop_gang(token)

    entry = gang_entry if gang else entry
    entry.__name__ = entry.__qualname__ = name.replace("-", "_").replace(".", "_")
    entry.__module__ = "rayline.engine.executors.ray"
    return entry


def _gcs_address() -> tuple[str, int] | None:
    """Host and port of the connected cluster's GCS, or None (not connected, Ray Client)."""
    import ray

    if not ray.is_initialized():
        return None
    from ray.util.client import ray as client

    if client.is_connected():  # ray://: the GCS is the server's business, maybe not reachable here
        return None
    try:
        host, _, port = ray.get_runtime_context().gcs_address.rpartition(":")
        return host.strip("[]"), int(port)
    except (AttributeError, ValueError, TypeError):
        return None


def _infra_message(kind: str, text: str) -> str:
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()]
    # RayTaskError text starts with a "ray::task() (pid=…)" header; the cause is the last line.
    first = lines[-1] if lines else kind
    hints = {
        "WorkerCrashedError": "the worker process died (killed, or crashed in native code) and Ray's retries ran out",
        "OutOfMemoryError": "the task was killed by Ray's memory monitor; give it more `memory=` or process less at once",
        "ObjectStoreFullError": "the object store is full; lower the output size or raise object_store_memory",
        "OwnerDiedError": "the driver that owned an input died; `rayline resume` the run",
        "NodeDiedError": "the node running the task died",
        "GetTimeoutError": "the task's result could not be fetched in time",
    }
    return f"{hints.get(kind, 'Ray failed to run the task')}: {first[:500]}"
