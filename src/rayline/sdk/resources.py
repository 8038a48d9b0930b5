"""Per-task policies: resources, retries, caching. Frozen values, validated on construction."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Resources:
    """What one attempt of a task needs from the cluster.

    ``gpus`` may be fractional (``0.25`` shares a GPU between four tasks). ``memory`` is in bytes.
    ``custom`` maps custom Ray resource names to amounts.
    """

    cpus: float = 1
    gpus: float = 0
    memory: int | None = None
    custom: tuple[tuple[str, float], ...] = ()
    accelerator_type: str | None = None

    def __post_init__(self) -> None:
        for name, value in (("cpus", self.cpus), ("gpus", self.gpus)):
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.gpus > 1 and self.gpus != int(self.gpus):
            raise ValueError(f"gpus above 1 must be a whole number, got {self.gpus!r}")
        if self.memory is not None and (not isinstance(self.memory, int) or self.memory <= 0):
            raise ValueError(f"memory must be a positive number of bytes, got {self.memory!r}")

    @classmethod
    def of(cls, cpus=1, gpus=0, memory=None, resources=None, accelerator_type=None) -> Resources:
        custom = tuple(sorted((str(k), float(v)) for k, v in (resources or {}).items()))
        return cls(cpus, gpus, memory, custom, accelerator_type)

    def demand(self) -> dict[str, float]:
        """Ray resource names to amounts, as a node must offer them."""
        out: dict[str, float] = {}
        if self.cpus:
            out["CPU"] = float(self.cpus)
        if self.gpus:
            out["GPU"] = float(self.gpus)
        if self.memory:
            out["memory"] = float(self.memory)
        for k, v in self.custom:
            out[k] = v
        if self.accelerator_type:
            out[f"accelerator_type:{self.accelerator_type}"] = 0.001
        return out

    def ray_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory:
            opts["memory"] = self.memory
        if self.custom:
            opts["resources"] = dict(self.custom)
        if self.accelerator_type:
            opts["accelerator_type"] = self.accelerator_type
        return opts


@dataclass(frozen=True, slots=True)
class Gang:
    """What a task asks of the cluster beyond its own worker: the Ray Train workers or Tune trials
    it starts from inside, one resource bundle each (Ray names: ``{"CPU": 1, "GPU": 1}``).

    ``atomic``: every bundle at once or none (a Train worker group: admitted through a Ray
    placement group of ``strategy``); otherwise each bundle alone can make progress (Tune trials,
    ``bundles`` being the most that run at once). ``what`` says it for people ("2 workers").
    A task declares its gang with ``@task(gang=fn)``: ``fn(args)`` gets the call's arguments by
    name (constants and flow parameters, defaults filled in; upstream outputs are absent) and
    returns a ``Gang`` or None.

    Example::

        Gang.of([{"CPU": 1, "GPU": 1}] * 2, what="2 workers")
    """

    bundles: tuple[tuple[tuple[str, float], ...], ...]
    atomic: bool = True
    strategy: str = "PACK"
    what: str = ""

    @classmethod
    def of(cls, bundles: Any, *, atomic: bool = True, strategy: str = "PACK", what: str = "") -> Gang:
        rows = []
        for b in bundles:
            row = tuple(sorted((str(k), float(v)) for k, v in dict(b).items() if float(v) > 0))
            if any(v < 0 for _, v in row) or not row:
                raise ValueError(f"a gang bundle needs some resource > 0, got {dict(b)!r}")
            rows.append(row)
        if strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
            raise ValueError(f"strategy is PACK, SPREAD, STRICT_PACK or STRICT_SPREAD, got {strategy!r}")
        return cls(tuple(rows), atomic, strategy, what or f"{len(rows)} bundle(s)")

    def bundle_dicts(self) -> list[dict[str, float]]:
        return [dict(b) for b in self.bundles]

    def totals(self) -> dict[str, float]:
        """Every bundle summed, by Ray resource name."""
        out: dict[str, float] = {}
        for b in self.bundles:
            for k, v in b:
                out[k] = out.get(k, 0.0) + v
        return out


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry ``n`` (1-based): ``min(base * factor**(n-1), max)`` plus jitter."""

    base: float = 1.0
    factor: float = 2.0
    max: float = 60.0
    jitter: float = 0.0

    def delay(self, retry: int) -> float:
        d = min(self.base * self.factor ** (retry - 1), self.max)
        if self.jitter:
            d += random.uniform(0, self.jitter * d)  # noqa: S311 - not cryptographic
        return d


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of the user's exceptions. Worker deaths are retried by Ray (``max_retries``)."""

    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    backoff: Backoff = field(default_factory=Backoff)
    max_worker_retries: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, got {self.retries!r}")

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """Retry when attempts are left, ``exc`` is one of ``retry_on``, and the exception does
        not declare itself permanent (``retryable = False``, e.g. corrupt input data)."""
        if getattr(exc, "retryable", True) is False:
            return False
        return attempt <= self.retries and isinstance(exc, self.retry_on)


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """``enabled``: skip the task when its code hash and input fingerprints match a stored
    result. ``version`` lets a user invalidate the cache by hand."""

    enabled: bool = False
    version: str | None = None


def as_backoff(value: Any) -> Backoff:
    """Accept a ``Backoff``, a number (constant delay) or a mapping of its fields."""
    if isinstance(value, Backoff):
        return value
    if value is None:
        return Backoff()
    if isinstance(value, int | float):
        return Backoff(base=float(value), factor=1.0, max=float(value))
    if isinstance(value, dict):
        return Backoff(**value)
    raise ValueError(f"backoff must be a Backoff, a number of seconds or a mapping, got {value!r}")
