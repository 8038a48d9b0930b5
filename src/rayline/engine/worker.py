"""What runs on the worker for one node: resolve inputs, check the cache, run the user's
function with retries/backoff/timeout, persist the output, report a small ``meta`` dict.

The value goes to Ray's object store for downstream nodes; only the meta (status, attempts,
digest) travels to the driver. A failed node returns a ``Failed`` marker as its value, so that
downstream nodes see it and report UPSTREAM_FAILED without running.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rayline import context
from rayline.engine.task_output import capture, log_limit
from rayline.errors import SkipRun, TaskTimeoutError
from rayline.sdk.nested import map_nested, nested_values
from rayline.store.artifact_encoding import size_hint
from rayline.store.task_logs import END_NOTE


@dataclass(frozen=True, slots=True)
class Stored:
    """An input or output that lives in the artifact store (adopted on resume, cached, or too
    large to travel through Ray's object store)."""

    digest: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The value of a node that did not succeed."""

    node_id: str


@dataclass(frozen=True, slots=True)
class TaskStatic:
    """What every call of one task shares; shipped to each worker once (with the function)."""

    fn: Callable[..., Any]
    retry: Any  # RetryPolicy
    timeout: float | None
    store: Any  # ArtifactStore (picklable: a path and a key)
    inline_limit: int
    log_limit: int = field(default_factory=log_limit)  # bytes of output kept per attempt


@dataclass(frozen=True, slots=True)
class NodeCall:
    """The per-call payload, small: pickled with every submission."""

    run_id: str
    node_id: str
    template: tuple[tuple[str, Any], ...]
    n_inputs: int
    persist: bool
    cache_base: str | None  # hash of code + constant arguments, when the cache is on
    flow_name: str = ""
    previous: dict[str, Any] | None = None  # watermarks of the flow's last successful run
    lineage: dict[str, Any] | None = None  # what the driver knows of the run (RunLineage.of)
    registry_rows: dict[str, Any] | None = None  # the model registry, for @task(registry=True)
    # (least, most) bytes of an output the executor persists beside the work: the task returns
    # it to Ray's object store at once and the executor writes it (see executors/persister.py);
    # outputs over ``most`` (or the inline limit) travel through the artifact store instead.
    beside: tuple[int, int] | None = None
    digest_needed: bool = False  # a consumer's cache key needs the digest: persist before returning

    def pack(self) -> bytes:
        """Bytes for the wire: C pickle when it can (fast), cloudpickle for closures/lambdas."""
        fields = (self.run_id, self.node_id, self.template, self.n_inputs, self.persist,
                  self.cache_base, self.flow_name, self.previous, self.lineage, self.registry_rows,
                  self.beside, self.digest_needed)
        if _plain(self.template):
            try:
                return pickle.dumps(fields, protocol=5)
            except (pickle.PicklingError, TypeError, AttributeError):
                pass
        from ray import cloudpickle

        return cloudpickle.dumps(fields, protocol=5)

    @classmethod
    def unpack(cls, data: bytes) -> NodeCall:
        # Produced by this run's own driver (NodeCall.pack) and carried by Ray, which itself
        # unpickles every task argument: no new trust boundary.
        return cls(*pickle.loads(data))  # noqa: S301


_PLAIN = (type(None), bool, int, float, str, bytes)


def _plain(value: Any) -> bool:
    """Whether a template holds only plain data (and slots), which C pickle ships safely; any
    other object (a function, a class, an object holding one — e.g. a model_fn defined in a
    flow file) goes through Ray's cloudpickle, which ships by-value modules instead of naming
    them."""
    from rayline.engine.compiler import Slot

    return all(isinstance(v, _PLAIN) or type(v) is Slot for v in nested_values(value))


def code_in(value: Any) -> list[Any]:
    """Functions and classes in a template (and the classes of objects in it): the driver ships
    their modules by value when workers could not import them (a flow file loaded by path)."""
    return [v if callable(v) else type(v) for v in nested_values(value) if not isinstance(v, _PLAIN)]


def execute_node(static: TaskStatic, call: NodeCall, *resolved: Any) -> tuple[Any, dict[str, Any]]:
    """Run one node. ``resolved`` holds the upstream values, then — only when the cache is on —
    the upstream metas (their digests make the cache key).

    Secrets (``rayline.Secret``) in the arguments are resolved here, on the worker, and their
    values masked in the errors and warnings that go back to the driver."""
    from rayline.sdk.secrets import has_secrets, mask_meta, resolve_secrets

    upstream_failed = any(type(v) is Failed for v in resolved[: call.n_inputs])
    if upstream_failed or not has_secrets(call.template):
        return _execute_node(static, call, *resolved)
    started = time.time()
    try:
        template, secrets = resolve_secrets(call.template, call.node_id)
    except Exception as exc:  # missing, or a file others may read: the task fails, never runs
        meta = {"node_id": call.node_id, "status": "FAILED", "pid": os.getpid(), "ray_attempt": _ray_attempt(),
                "attempts": [_attempt(1, started, "FAILED", exc)]}  # fmt: skip
        return Failed(call.node_id), meta
    value, meta = _execute_node(static, dataclasses.replace(call, template=template), *resolved, secrets=secrets)
    return value, mask_meta(meta, secrets)


def _execute_node(static: TaskStatic, call: NodeCall, *resolved: Any,
                  secrets: list[str] | tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    n = call.n_inputs
    values, metas = list(resolved[:n]), resolved[n:]
    for v in values:
        if type(v) is Failed:
            return v, {"node_id": call.node_id, "status": "UPSTREAM_FAILED"}
    store = static.store
    fn = static.fn
    meta: dict[str, Any] = {"node_id": call.node_id, "pid": os.getpid(), "ray_attempt": _ray_attempt()}

    cache_key = None
    if call.cache_base is not None:
        cache_key = _cache_key(call.cache_base, metas)
        meta["cache_key"] = cache_key
        hit = store.cache_get(cache_key)
        if hit is not None:
            meta.update(status="CACHED", digest=hit, attempts=[])
            return Stored(hit), meta

    for i, v in enumerate(values):
        if isinstance(v, Stored):
            values[i] = store.get(v.digest)
    args, kwargs = _bind(fn, call.template, values)

    attempts: list[dict[str, Any]] = []
    meta["attempts"] = attempts
    ctx = context.TaskContext(call.run_id, call.node_id, call.flow_name, meta["ray_attempt"], store,
                              call.previous or {}, lineage=call.lineage or {},
                              registry_rows=call.registry_rows)  # fmt: skip
    attempt = 0
    while True:
        attempt += 1
        started = time.time()
        ctx.attempt = meta["ray_attempt"] - 1 + attempt
        _drop_registry_view(ctx)  # each attempt starts from the driver's rows
        token = context._activate(ctx)
        try:
            with _task_log(static, call, ctx.attempt, secrets) as out, _deadline(static.timeout, call.node_id):
                try:
                    value = fn(*args, **kwargs)
                except Exception as exc:  # the log says how the attempt ended, as a console would
                    tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # from the user's frame
                    out.add_note(END_NOTE + (f"{type(exc).__name__}: {exc}\n" if isinstance(exc, SkipRun)
                                  else "".join(traceback.format_exception(type(exc), exc, tb))[-20000:]))
                    raise
        except SkipRun as exc:  # nothing to do: not a failure, never retried
            _drop_registry_view(ctx)
            attempts.append({**_attempt(attempt, started, "SKIPPED", None), "error_message": str(exc)})
            meta.update(status="SKIPPED", skip_reason=str(exc))
            return Failed(call.node_id), meta
        except Exception as exc:  # the user's code failed: record, maybe retry
            _drop_registry_view(ctx)  # what it wrote to the registry is dropped with it
            rec = _attempt(attempt, started, "FAILED", exc)
            attempts.append(rec)
            if static.retry.should_retry(exc, attempt):
                rec["retry_in"] = static.retry.backoff.delay(attempt)
                time.sleep(rec["retry_in"])
                continue
            meta["status"] = "FAILED"
            return Failed(call.node_id), meta
        finally:
            context._deactivate(token)
        attempts.append(_attempt(attempt, started, "SUCCEEDED", None))
        break

    for k in ("warnings", "counters", "watermarks"):
        if getattr(ctx, k):
            meta[k] = getattr(ctx, k)
    if ctx.registry_view is not None:  # what it registered, promoted, deployed: the driver commits it
        meta["registry_writes"] = ctx.registry_view.writes()
        _drop_registry_view(ctx)
    meta["status"] = "SUCCEEDED"
    if call.persist and store is not None:
        limit = static.inline_limit
        if call.beside is not None:
            limit = min(limit, call.beside[1])
            hint = size_hint(value)
            if hint is not None and call.beside[0] <= hint <= limit:  # the executor persists it
                meta.update(persist="beside", node=_ray_node())
                return value, meta
        try:
            info = store.put(value)
        except Exception as exc:  # the output cannot be serialised or written: the task failed
            rec = attempts[-1]
            rec.update(_attempt(rec["attempt"], rec["started"], "FAILED", exc))
            rec["error_message"] = f"cannot store the output of task '{call.node_id}': {rec['error_message']}"
            meta["status"] = "FAILED"
            return Failed(call.node_id), meta
        meta.update(digest=info.digest, size=info.size, fmt=info.fmt)
        if cache_key is not None:
            store.cache_put(cache_key, info.digest)
        if info.size > limit:
            return Stored(info.digest), meta
    return value, meta


def _drop_registry_view(ctx: context.TaskContext) -> None:
    if ctx.registry_view is not None:
        ctx.registry_view.close()
        ctx.registry_view = None


def _task_log(static: TaskStatic, call: NodeCall, attempt: int, secrets: Any = ()) -> Any:
    """Capture the attempt's stdout/stderr into its log under the artifact store
    (``logs/<run>/<node>/<attempt>.log``, see ``store/task_logs.py``), secret values masked."""
    sink = None
    if static.store is not None:
        from rayline.store.task_logs import TaskLogs

        logs = TaskLogs(static.store)

        def sink(data: bytes, final: bool) -> None:
            if secrets:  # the whole log is rewritten each flush: mask the whole of it
                from rayline.sdk.secrets import mask

                data = mask(bytes(data).decode("utf-8", "surrogateescape"), list(secrets)).encode(
                    "utf-8", "surrogateescape")  # fmt: skip
            logs.write(call.run_id, call.node_id, attempt, data, final=final)

    worker = sys.modules.get("ray._private.worker")
    in_ray = worker is not None and getattr(worker.global_worker, "mode", None) == worker.WORKER_MODE
    return capture(sink, static.log_limit, owns_process=in_ray, fd_level=in_ray)


def _ray_node() -> str | None:
    """The Ray node this runs on (where its output sits in the object store), or None."""
    ray = sys.modules.get("ray")
    try:
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # not inside Ray, or an older Ray
        return None


def _ray_attempt() -> int:
    """1 + how many times Ray already ran this task (worker deaths it retried by itself)."""
    worker = sys.modules.get("ray._private.worker")
    try:
        return int(worker.global_worker.core_worker.get_current_task_attempt_number()) + 1
    except Exception:  # not inside a Ray task (local executor), or an older Ray
        return 1


def _bind(fn: Callable[..., Any], template: tuple[tuple[str, Any], ...], values: list[Any]) -> tuple[tuple, dict]:
    from rayline.engine.compiler import Slot

    def fill(v: Any) -> Any:
        return values[v.index] if isinstance(v, Slot) else v

    arguments = OrderedDict((k, map_nested(v, fill)) for k, v in template)
    bound = inspect.BoundArguments(_signature(fn), arguments)
    return bound.args, bound.kwargs


def _cache_key(base: str, metas: tuple[dict[str, Any], ...]) -> str:
    h = hashlib.sha256(base.encode())
    for m in metas:
        h.update(str(m.get("digest")).encode())
    return h.hexdigest()


def _attempt(n: int, started: float, status: str, exc: BaseException | None) -> dict[str, Any]:
    rec: dict[str, Any] = {"attempt": n, "status": status, "started": started, "ended": time.time()}
    if exc is not None:
        rec["error_type"] = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
        rec["error_message"] = str(exc)[:4000]
        rec["traceback"] = "".join(traceback.format_exception(exc))[-20000:]
    return rec


class _deadline:
    """Raise ``TaskTimeoutError`` inside the user's code after ``seconds`` (main thread only;
    elsewhere the driver's backstop cancels the Ray task)."""

    def __init__(self, seconds: float | None, node_id: str):
        self.seconds = seconds
        self.node_id = node_id
        self.armed = False

    def _fire(self, signum: int, frame: Any) -> None:
        raise TaskTimeoutError(f"task '{self.node_id}' ran past its timeout of {self.seconds:g} s")

    def __enter__(self) -> None:
        if self.seconds and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
            self.armed = True

    def __exit__(self, *exc: Any) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)


@functools.lru_cache(maxsize=1024)
def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(fn)
