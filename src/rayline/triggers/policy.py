"""Overlap and catch-up policies: what happens when a fire finds its flow busy, and what happens
to ticks that were missed while no scheduler ran.

Overlap (per trigger; enforced by the run store's flow slot, see ``store/slots.py``):

- ``skip`` (default for schedules): a run of the flow is PENDING or RUNNING under a live lease,
  so the new tick is recorded as a SKIPPED run whose ``error`` says why.
- ``queue`` (default for new-data triggers): one run may wait (PENDING) for the running one; a
  fire that finds the queue full is skipped.
- ``allow``: runs start whatever else runs (no slot).

Catch-up (per schedule). A tick is *on time* when the scheduler sees it at most ``grace``
seconds after its fire time (default 60 s: ``rayline schedule tick`` from a system crontab
entry ``* * * * *`` is always on time). Ticks older than that were *missed* (the scheduler was
down); on restart:

- ``none`` (default): missed ticks are dropped; the schedule carries on with the next one.
- ``latest``: one run, for the most recent missed tick.
- ``all``: a run for each missed tick, at most ``max_catchup`` (the most recent ones), queued so
  they run one at a time, oldest first, under ``skip`` and ``queue``.

Example::

    Cron("0 * * * *", catchup="all", max_catchup=24)  # a day of hourly ticks at most
    Catchup.parse("latest")                            # Catchup(mode='latest', max_catchup=10)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from rayline.errors import DefinitionError

__all__ = ["Catchup", "Overlap", "parse_overlap", "select_ticks"]


class Overlap(StrEnum):
    """What a fire does when its flow already has a run going."""

    SKIP = "skip"
    QUEUE = "queue"
    ALLOW = "allow"


def parse_overlap(value: Any, where: str = "") -> str:
    """``value`` as an overlap policy name.

    Raises:
        DefinitionError: not one of skip, queue, allow.
    """
    try:
        return Overlap(str(value).lower()).value
    except ValueError:
        raise DefinitionError(
            f"{where}overlap={value!r} is not a policy; use skip (default), queue or allow"
        ) from None


@dataclass(frozen=True, slots=True)
class Catchup:
    """Which missed ticks run after downtime: ``none``, ``latest`` or ``all`` (≤ max_catchup)."""

    mode: str = "none"
    max_catchup: int = 10

    def __post_init__(self) -> None:
        if self.mode not in ("none", "latest", "all"):
            raise DefinitionError(f"catchup={self.mode!r} is not a policy; use none, latest or all")
        if not isinstance(self.max_catchup, int) or self.max_catchup < 1:
            raise DefinitionError(f"max_catchup must be a positive integer, got {self.max_catchup!r}")

    @classmethod
    def parse(cls, value: Any, max_catchup: int = 10) -> Catchup:
        """A ``Catchup`` from a name (``"all"``) or an existing ``Catchup``."""
        if isinstance(value, Catchup):
            return value
        return cls(str(value).lower(), max_catchup)

    @property
    def keep(self) -> int:
        """How many of the most recent due ticks a scheduler needs to look at."""
        return self.max_catchup if self.mode == "all" else 1


def select_ticks(
    due: Sequence[datetime], now: datetime, grace: float, catchup: Catchup
) -> list[tuple[datetime, bool]]:
    """The due ticks to fire, oldest first, each with whether it is on time.

    ``due`` are the most recent fire times in (last considered, now], oldest first. On-time
    ticks (within ``grace`` of ``now``) always fire; missed ones as ``catchup`` says.

    Example::

        select_ticks([t9, t10, t11], now=t11 + 5 s, grace=60, catchup=Catchup("none"))
        # [(t11, True)]
    """
    cutoff = now - timedelta(seconds=grace)
    on_time = [t for t in due if t >= cutoff]
    missed = [t for t in due if t < cutoff]
    if catchup.mode == "none":
        chosen: list[datetime] = []
    elif catchup.mode == "latest":
        chosen = missed[-1:] if not on_time else []
    else:  # all: the most recent missed ticks, so that at most max_catchup fire in all
        room = max(catchup.max_catchup - len(on_time), 0)
        chosen = missed[len(missed) - room :] if room else []
    return [(t, False) for t in chosen] + [(t, True) for t in on_time]
