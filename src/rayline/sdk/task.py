"""``@task``: wrap a function so that calls inside a flow are recorded as nodes."""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, overload

from rayline.errors import DefinitionError, TracingError
from rayline.sdk.mapping import deferred_source, record_map
from rayline.sdk.resources import CachePolicy, Resources, RetryPolicy, as_backoff
from rayline.sdk.spec import TaskSpec, definition_site
from rayline.sdk.tracing import active_trace, caller_location


class Task:
    """A function that becomes a node when called inside a flow, and stays a plain function
    everywhere else (notebooks, unit tests)."""

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        functools.update_wrapper(self, spec.fn)

    @property
    def name(self) -> str:
        return self.spec.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        trace = active_trace()
        if trace is None:
            return self.spec.fn(*args, **kwargs)
        location = caller_location()
        try:
            bound = self.spec.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TracingError(
                f"{location}: flow '{trace.flow_name}', task '{self.name}': {exc}; "
                f"call it as {self.name}{self.spec.signature}"
            ) from None
        return trace.record(self.spec, tuple(bound.arguments.items()), location)

    def map(self, iterable: Iterable[Any], **common: Any) -> Any:
        """Call the task once per item (passed as its first parameter), with ``common``
        keyword arguments shared by every call. Returns one result (or ``Ref``) per item; over a
        value known only at run time (an upstream output, a flow parameter, ``range(n)`` of one)
        one ``Ref`` to the list of results (``rayline.sdk.mapping``)."""
        params = list(self.spec.signature.parameters)
        if not params:
            raise TracingError(f"task '{self.name}' takes no parameters, so it cannot be mapped")
        first = params[0]
        if first in common:
            raise TracingError(
                f"task '{self.name}'.map(): '{first}' receives the mapped items; "
                "do not pass it as a common argument too"
            )
        source = deferred_source(iterable)
        if source is not None:
            return record_map(self, first, source, common)
        return [self(**{first: item}, **common) for item in iterable]

    def with_options(self, **options: Any) -> Task:
        """A copy of this task with some ``@task`` options changed."""
        return Task(_build_spec(self.spec.fn, base=self.spec, **options))

    def __repr__(self) -> str:
        return f"<Task {self.name} at {self.spec.location}>"


_UNSET: Any = object()


def _unknown_options(unknown: Mapping[str, Any]) -> str:
    """'unknown @task option ...' with the closest known names (``num_cpus`` -> ``cpus``)."""
    known = [p for p in inspect.signature(_build_spec).parameters if p not in ("fn", "base", "unknown")]
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name.removeprefix("num_"), known, n=1) or difflib.get_close_matches(name, known, n=1)
        parts.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return f"unknown @task option {', '.join(parts)}; the options are: {', '.join(known)}"


def _build_spec(
    fn: Callable[..., Any],
    *,
    base: TaskSpec | None = None,
    cpus: float = _UNSET,
    gpus: float = _UNSET,
    memory: int | None = _UNSET,
    resources: dict[str, float] | None = _UNSET,
    accelerator_type: str | None = _UNSET,
    retries: int = _UNSET,
    worker_retries: int = _UNSET,
    retry_on: Iterable[type[BaseException]] = _UNSET,
    backoff: Any = _UNSET,
    timeout: float | None = _UNSET,
    cache: bool = _UNSET,
    persist: bool = _UNSET,
    name: str | None = _UNSET,
    runtime_env: dict[str, Any] | None = _UNSET,
    gang: Callable[[dict[str, Any]], Any] | None = _UNSET,
    registry: bool = _UNSET,
    **unknown: Any,
) -> TaskSpec:
    location = definition_site(fn)
    b = base or TaskSpec(name=getattr(fn, "__name__", "task"), fn=fn, location=location)
    if unknown:
        raise DefinitionError(f"{location}: task '{b.name}': {_unknown_options(unknown)}")

    def pick(value: Any, current: Any) -> Any:
        return current if value is _UNSET else value

    try:
        r = b.resources
        res = Resources.of(
            cpus=pick(cpus, r.cpus),
            gpus=pick(gpus, r.gpus),
            memory=pick(memory, r.memory),
            resources=pick(resources, dict(r.custom)),
            accelerator_type=pick(accelerator_type, r.accelerator_type),
        )
        retry_on_t = tuple(pick(retry_on, b.retry.retry_on))
        for exc in retry_on_t:
            if not (isinstance(exc, type) and issubclass(exc, BaseException)):
                raise ValueError(f"retry_on must list exception classes, got {exc!r}")
        retry = RetryPolicy(
            retries=pick(retries, b.retry.retries),
            retry_on=retry_on_t,
            backoff=as_backoff(pick(backoff, b.retry.backoff)),
            max_worker_retries=pick(worker_retries, b.retry.max_worker_retries),
        )
        t = pick(timeout, b.timeout)
        if t is not None and (not isinstance(t, int | float) or t <= 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {t!r}")
        env = pick(runtime_env, b.runtime_env)
        if env is not None and not isinstance(env, Mapping):
            raise ValueError(f"runtime_env must be a mapping (Ray's runtime environment), got {env!r}")
        env = copy.deepcopy(dict(env)) if env else None  # checked in full at compile time
        gang_fn = pick(gang, b.gang)
        if gang_fn is not None and not callable(gang_fn):
            raise ValueError(f"gang must be a function of the call's arguments, got {gang_fn!r}")
        task_name = pick(name, None) or b.name
        if not isinstance(task_name, str) or not task_name.replace("_", "a").replace("-", "a").replace(".", "a").isalnum():
            raise ValueError(f"name must be letters, digits, '_', '-' or '.', got {task_name!r}")
    except (ValueError, TypeError) as exc:
        raise DefinitionError(f"{location}: task '{b.name}': {exc}") from None
    return replace(
        b,
        name=task_name,
        resources=res,
        retry=retry,
        cache=CachePolicy(enabled=bool(pick(cache, b.cache.enabled))),
        timeout=t,
        persist=bool(pick(persist, b.persist)),
        runtime_env=env,
        gang=gang_fn,
        registry=bool(pick(registry, b.registry)),
        _memo=dict(b._memo) if base is not None and base.fn is fn else {},
    )


@overload
def task(fn: Callable[..., Any], /) -> Task: ...
@overload
def task(**options: Any) -> Callable[[Callable[..., Any]], Task]: ...


def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Declare a task.

    Options: ``cpus=1, gpus=0`` (fractional allowed), ``memory=None`` (bytes),
    ``resources={}`` (custom Ray resources), ``retries=0``, ``retry_on=(Exception,)``,
    ``worker_retries=3`` (Ray re-runs after a worker/node death; 0 for tasks whose crash means
    bad input),
    ``backoff=`` (seconds, a mapping or a ``Backoff``), ``timeout=None`` (seconds per attempt),
    ``cache=False``, ``persist=False``, ``name=None``,
    ``runtime_env=None`` (Ray's runtime environment for this task's own worker: ``pip``,
    ``env_vars``, ``working_dir``, ``image_uri``; see ``rayline.sdk.runtime_env``),
    ``gang=None`` (``fn(args) -> Gang``: the workers or trials the task starts from inside, so
    that the compile-time check and admission see them; ``rayline.sdk.resources.Gang``).
    ``registry=False`` (the task uses the model registry: ``open_registry()`` in it gives a copy
    of the driver's, whose changes the driver commits with the task's success; a Ray worker
    never opens the database).

    Example::

        @task(retries=2, retry_on=(ConnectionError,))
        def fetch(url: str) -> bytes: ...
    """

    def wrap(f: Callable[..., Any]) -> Task:
        if isinstance(f, Task):
            return f.with_options(**options)
        if not callable(f):
            raise DefinitionError(f"@task expects a function, got {f!r}")
        return Task(_build_spec(f, **options))

    return wrap(fn) if fn is not None else wrap


def unwrap_task(obj: Any, *, location: str = "<unknown>") -> Task:
    """A ``Task`` for ``obj``: itself, or a plain function wrapped with default options."""
    if isinstance(obj, Task):
        return obj
    if callable(obj):
        return Task(_build_spec(obj))
    raise DefinitionError(f"{location}: {obj!r} is not a task or a function")


__all__ = ["Task", "task", "unwrap_task", "caller_location"]
