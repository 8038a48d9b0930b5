"""Cron schedules: ``Cron("0 3 * * *", tz="Europe/Warsaw")``, computed with cronsim behind the
small ``Schedule`` interface (``next_after``, ``fire_times``).

Expressions have five fields (minute hour day-of-month month day-of-week; cronsim's six-field
form with seconds first also works), with ``L``, ``#``, ``W``, names (``MON-FRI``) and the
aliases ``@hourly``, ``@daily``/``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``. Day of
month and day of week combine with OR, as in Vixie cron.

Time zones and daylight saving, the documented semantics: a schedule names *local wall-clock
times* in ``tz`` (an IANA name; default UTC, which has no DST). Fire times are computed in that
zone and then handled, stored and compared only as UTC instants.

- Spring forward (a local hour is skipped): a fire time inside the gap fires once, at the first
  valid instant after it (``30 2 * * *`` in America/New_York fires at 03:00 EDT that day).
- Fall back (a local hour repeats): each wall-clock time fires once, at its first occurrence
  (``30 1 * * *`` fires at 01:30 EDT, not again at 01:30 EST). This also holds for schedules
  with several fire times in the repeated hour: for real-time intervals use ``tz="UTC"``.
- So a daily schedule fires exactly once per local day, and the logical time of each run (its
  run key) is the UTC instant it fired for.

Example::

    daily = Cron("30 2 * * *", tz="America/New_York")
    daily.next_after(datetime(2026, 3, 8, 6, 0, tzinfo=UTC))   # 2026-03-08 07:00 UTC (03:00 EDT)
    daily.fire_times(after=t0, until=t1, keep=3)               # ([last three], how many)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from rayline.errors import DefinitionError
from rayline.triggers.policy import Catchup, parse_overlap, select_ticks
from rayline.triggers.trigger import Fire, Poll, from_epoch, iso_utc

__all__ = ["Cron", "Schedule"]

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_SCAN_LIMIT = 2000  # fire times walked one by one before jumping ahead (long downtime)


class Schedule(Protocol):
    """What the scheduler needs from a time-based schedule."""

    def next_after(self, t: datetime) -> datetime:
        """The first fire time strictly after ``t``, aware UTC."""
        ...

    def fire_times(self, after: datetime, until: datetime, keep: int) -> tuple[list[datetime], int | None]:
        """The last ``keep`` fire times in ``(after, until]`` (UTC, oldest first) and how many
        there are in all (None: too many to count)."""
        ...


@dataclass(frozen=True)
class Cron:
    """A cron schedule for a flow: ``@flow(schedule=Cron("0 3 * * *", tz="Europe/Warsaw"))``.

    Args:
        expr: the cron expression (see the module docstring).
        tz: IANA time zone the expression is read in (default UTC).
        overlap: ``skip`` (default), ``queue`` or ``allow`` (see ``policy``).
        catchup: ``none`` (default), ``latest`` or ``all`` (at most ``max_catchup`` runs).
        grace: seconds after its fire time that a tick still counts as on time.
        params: flow parameters for the scheduled runs.

    Raises:
        DefinitionError: a malformed expression, an unknown time zone or policy.
    """

    expr: str
    tz: str = "UTC"
    overlap: str = "skip"
    catchup: str | Catchup = "none"
    max_catchup: int = 10
    grace: float = 60.0
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    kind: ClassVar[str] = "cron"

    def __post_init__(self) -> None:
        text = " ".join(str(self.expr).split())
        expr = _ALIASES.get(text.lower(), text)
        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise DefinitionError(
                f"schedule {self.expr!r}: unknown time zone {self.tz!r}; use an IANA name "
                "such as 'Europe/Warsaw', 'America/New_York' or 'UTC'"
            ) from None
        try:
            CronSim(expr, datetime.now(zone))
        except CronSimError as exc:
            raise DefinitionError(
                f"invalid cron expression {self.expr!r}: {exc}; the form is 'minute hour "
                "day-of-month month day-of-week', e.g. '0 3 * * *' (03:00 every day)"
            ) from None
        if not isinstance(self.grace, int | float) or self.grace <= 0:
            raise DefinitionError(f"schedule {self.expr!r}: grace must be a positive number of seconds")
        object.__setattr__(self, "expr", expr)
        object.__setattr__(self, "overlap", parse_overlap(self.overlap, f"schedule {self.expr!r}: "))
        object.__setattr__(self, "catchup", Catchup.parse(self.catchup, self.max_catchup))
        object.__setattr__(self, "max_catchup", self.policy.max_catchup)
        object.__setattr__(self, "params", dict(self.params))

    # ---------------------------------------------------------------------- the schedule
    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def policy(self) -> Catchup:
        assert isinstance(self.catchup, Catchup)  # set in __post_init__
        return self.catchup

    def next_after(self, t: datetime) -> datetime:
        """The first fire time strictly after ``t`` (aware), as aware UTC."""
        return next(self._forward(t))

    def fire_times(self, after: datetime, until: datetime, keep: int = 1) -> tuple[list[datetime], int | None]:
        """The last ``keep`` fire times in ``(after, until]``, oldest first, and their count.

        A long gap (a scheduler down for months with ``* * * * *``) is not walked minute by
        minute: past ``_SCAN_LIMIT`` fire times the walk jumps close to ``until`` and the count
        is None.
        """
        found: deque[datetime] = deque(maxlen=max(keep, 1))
        count = 0
        for t in self._forward(after):
            if t > until:
                return list(found), count
            found.append(t)
            count += 1
            if count >= _SCAN_LIMIT:
                break
        start = max(after, self._reverse_hint(until, keep))
        found.clear()
        for t in self._forward(start):
            if t > until:
                break
            found.append(t)
        return list(found), None

    def _forward(self, after: datetime) -> Iterator[datetime]:
        after = after.astimezone(UTC)
        for local in CronSim(self.expr, after.astimezone(self.zone)):
            t = local.astimezone(UTC)
            if t <= after:  # cronsim can step back inside a repeated (fall-back) hour
                continue
            if local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset():
                continue  # the second occurrence of a wall-clock time: it already fired
            yield t

    def _reverse_hint(self, until: datetime, keep: int) -> datetime:
        """An instant at or before the ``keep``-th last fire time up to ``until``."""
        it = CronSim(self.expr, until.astimezone(self.zone), reverse=True)
        earliest = until
        for _ in range(max(keep, 1)):
            earliest = min(earliest, next(it).astimezone(UTC))
        return earliest - timedelta(hours=2)  # margin for a DST shift seen in reverse

    # ----------------------------------------------------------------------- the trigger
    @property
    def key(self) -> str:
        return f"cron:{self.expr}@{self.tz}"

    def describe(self) -> str:
        return f"cron '{self.expr}' ({self.tz})"

    def poll(self, now: datetime, state: Mapping[str, Any]) -> Poll:
        """Fire the ticks due at ``now`` after the last one considered (``state["last"]``).

        The first poll of a schedule looks back ``grace`` seconds only, so registering a
        schedule never fires its past.
        """
        last = from_epoch(state.get("last"))
        anchor = last if last is not None else now - timedelta(seconds=self.grace)
        due, count = self.fire_times(anchor, now, keep=self.policy.keep + 100)
        chosen = select_ticks(due, now, self.grace, self.policy)
        fires = tuple(self._fire(t, on_time) for t, on_time in chosen)
        newest = max([anchor, *due])
        note = None
        dropped = (count - len(chosen)) if count is not None else None
        if dropped or (count is None and due):
            missed = f"{dropped}" if dropped is not None else "many"
            note = (f"{missed} missed tick(s) of {self.describe()} not run "
                    f"(catchup={self.policy.mode}); the last one was {iso_utc(due[-1])}")  # fmt: skip
        next_at = self.next_after(max(now, newest))
        return Poll(fires, {"last": newest.timestamp()}, next_at, note)

    def settle(self, state: dict[str, Any], fire: Fire, action: str) -> dict[str, Any]:
        return state  # a tick is decided once fired, whatever the outcome (the key keeps it)

    def _fire(self, t: datetime, on_time: bool) -> Fire:
        logical = iso_utc(t)
        reason = ("scheduled tick" if on_time else
                  f"catch-up (catchup={self.policy.mode}) of a tick missed while no scheduler ran")  # fmt: skip
        info = {
            "kind": "cron", "schedule": self.expr, "tz": self.tz, "logical_time": logical,
            "local_time": t.astimezone(self.zone).isoformat(), "on_time": on_time,
        }  # fmt: skip
        return Fire(
            run_key=f"cron@{logical}",
            reason=reason,
            info=info,
            offer={"logical_time": logical},
            backlog=not on_time,
            sort_key=t.timestamp(),
        )
