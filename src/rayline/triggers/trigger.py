"""The trigger framework: what every trigger kind implements, and what it hands the scheduler.

A trigger is a frozen value (``Cron``, ``NewData``; drift and metric triggers plug in the same
way) with a stable ``key`` and one method that matters, ``poll(now, state)``. The scheduler calls
it when it is due, with the state it returned last time (JSON, persisted in the run store), and
gets back a ``Poll``: the runs to ask for (``Fire``), the new state, and when to poll again. The
scheduler then reserves each run under the trigger's ``overlap`` policy and tells the trigger the
outcome through ``settle``, so a trigger can decide whether it has "used up" what it saw.

A trigger never starts runs, never sleeps and never reads the clock: ``now`` is passed in (so
tests inject a clock and never sleep), and everything it remembers is in ``state``.

Adding a kind (say, a drift trigger) means: a frozen dataclass with ``kind``, ``overlap``,
``key``, ``describe()``, ``poll()`` and ``settle()``, and a line in ``TRIGGER_KINDS`` so that
``configs/schedules.yaml`` can name it. Example::

    @dataclass(frozen=True)
    class Drift:
        reference: str
        threshold: float = 0.2
        interval: float = 300.0
        overlap: str = "skip"
        kind: ClassVar[str] = "drift"

        @property
        def key(self) -> str:
            return f"drift:{self.reference}>{self.threshold}"

        def describe(self) -> str:
            return f"PSI of {self.reference} above {self.threshold}"

        def poll(self, now, state):
            psi = compute_psi(...)
            fires = ()
            if psi > self.threshold:
                fires = (Fire(run_key=None, reason=f"PSI {psi:.2f} > {self.threshold}",
                              info={"kind": "drift", "psi": psi}),)
            return Poll(fires, state, next_at=now + timedelta(seconds=self.interval))

        def settle(self, state, fire, action):
            return state
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from rayline._lazy import import_object

__all__ = [
    "TRIGGER_KINDS",
    "Fire",
    "Poll",
    "Trigger",
    "from_epoch",
    "iso_utc",
    "trigger_class",
    "utc_now",
]

#: Trigger kinds that a schedules file may name: kind -> "module:Class" (imported on use).
TRIGGER_KINDS: dict[str, str] = {
    "cron": "rayline.triggers.schedule:Cron",
    "new_data": "rayline.triggers.newdata:NewData",
    "drift": "rayline.triggers.drift:Drift",
    "metric": "rayline.triggers.metric:Metric",
}


@dataclass(frozen=True, slots=True)
class Fire:
    """One run a trigger asks for.

    Attributes:
        run_key: the idempotency key (``cron:churn:2026-01-02T03:00:00Z``): a second fire with
            the same key returns the existing run. None: every fire is a new run.
        reason: why, in words; recorded on the run's ``trigger`` JSON.
        info: kind-specific facts recorded on the run (logical time, snapshot hash, files …).
        offer: values the flow receives if it declares a parameter of that name and the
            schedule does not set it (``logical_time`` for cron, ``snapshot`` for new data).
        backlog: a catch-up run: it queues behind a busy slot whatever the overlap policy says.
        record_skip: when the slot is busy, write a SKIPPED run with the reason (False: none).
        skip_takes_key: the SKIPPED run takes ``run_key``, so the tick is decided once (cron).
            False: the key stays free and the same fire can run later (a data snapshot).
        sort_key: epoch seconds that order queued runs (the logical time); default: now.
    """

    run_key: str | None
    reason: str
    info: Mapping[str, Any] = field(default_factory=dict)
    offer: Mapping[str, Any] = field(default_factory=dict)
    backlog: bool = False
    record_skip: bool = True
    skip_takes_key: bool = True
    sort_key: float | None = None


@dataclass(frozen=True, slots=True)
class Poll:
    """What one ``poll`` found: runs to ask for, the state to persist, and when to poll again
    (an aware UTC datetime; None: only when something else wakes the scheduler)."""

    fires: tuple[Fire, ...]
    state: dict[str, Any]
    next_at: datetime | None
    note: str | None = None  # a line worth logging (e.g. ticks dropped by catchup=none)


@runtime_checkable
class Trigger(Protocol):
    """What a trigger kind implements (see the module docstring)."""

    kind: ClassVar[str]
    overlap: str

    @property
    def key(self) -> str:
        """Stable identity within a flow; the stored state is keyed by ``flow|key``."""
        ...

    def describe(self) -> str:
        """One line for ``rayline schedule list``."""
        ...

    def poll(self, now: datetime, state: Mapping[str, Any]) -> Poll:
        """Decide what is due at ``now`` (aware UTC) given the persisted ``state``."""
        ...

    def settle(self, state: dict[str, Any], fire: Fire, action: str) -> dict[str, Any]:
        """The state after ``fire`` was reserved with ``action`` (start, queued, skipped,
        exists)."""
        ...


def trigger_class(kind: str) -> type:
    """The class registered for ``kind`` in ``TRIGGER_KINDS``.

    Raises:
        KeyError: unknown kind (the message lists the known ones).
    """
    target = TRIGGER_KINDS.get(kind)
    if target is None:
        raise KeyError(f"unknown trigger kind {kind!r}; known: {', '.join(sorted(TRIGGER_KINDS))}")
    return import_object(target, "trigger kind")


def utc_now() -> datetime:
    """The current time, aware UTC: the scheduler's default clock."""
    return datetime.now(UTC)


def iso_utc(t: datetime) -> str:
    """``2026-03-08T07:00:00Z`` (seconds; fractions kept only when present)."""
    t = t.astimezone(UTC)
    text = t.isoformat(timespec="microseconds" if t.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def from_epoch(value: float | None) -> datetime | None:
    """The aware UTC datetime of epoch seconds (None stays None)."""
    return None if value is None else datetime.fromtimestamp(value, UTC)
