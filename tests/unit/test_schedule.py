"""Cron schedules and the catch-up policy, without a store: fire-time arithmetic, daylight
saving (F9) and which missed ticks run after downtime (F8's selection rule)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from rayline.errors import DefinitionError
from rayline.triggers.policy import Catchup, select_ticks
from rayline.triggers.schedule import Cron

NY = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires(cron: Cron, start: datetime, end: datetime) -> list[datetime]:
    out, t = [], start
    while (t := cron.next_after(t)) <= end:
        out.append(t)
    return out


# ------------------------------------------------------------------------------ F9: DST
@pytest.mark.parametrize("expr", ["30 2 * * *", "30 1 * * *"])
@pytest.mark.parametrize("window", [(utc(2026, 3, 1), utc(2026, 3, 15)), (utc(2026, 10, 25), utc(2026, 11, 8))])
def test_a_daily_schedule_fires_exactly_once_per_local_day_across_dst(expr, window):
    cron = Cron(expr, tz="America/New_York")
    times = fires(cron, *window)
    per_day = Counter(t.astimezone(NY).date() for t in times)
    days = (window[1] - window[0]).days
    assert len(per_day) in (days - 1, days, days + 1)
    assert set(per_day.values()) == {1}, per_day
    assert all(t.tzinfo is UTC for t in times)  # handled and stored as UTC instants


def test_spring_forward_slot_in_the_gap_fires_once_at_the_next_valid_instant():
    cron = Cron("30 2 * * *", tz="America/New_York")
    day = fires(cron, utc(2026, 3, 7, 12), utc(2026, 3, 9, 12))
    # 2026-03-08 02:30 does not exist in New York; 03:00 EDT (07:00 UTC) is the next instant.
    assert day == [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]
    assert day[0].astimezone(NY).strftime("%H:%M %Z") == "03:00 EDT"


def test_fall_back_repeated_time_fires_only_at_its_first_occurrence():
    cron = Cron("30 1 * * *", tz="America/New_York")
    day = fires(cron, utc(2026, 10, 31, 12), utc(2026, 11, 2, 12))
    assert day == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]  # 01:30 EDT, then next day
    assert day[0].astimezone(NY).strftime("%H:%M %Z") == "01:30 EDT"


def test_starting_inside_the_repeated_hour_does_not_fire_its_time_again():
    cron = Cron("30 1 * * *", tz="America/New_York")
    # 06:10 UTC is 01:10 EST, after 01:30 EDT already fired: cronsim steps back to 01:30 EDT
    # (05:30 UTC, in the past) and offers 01:30 EST; neither may fire.
    assert cron.next_after(utc(2026, 11, 1, 6, 10)) == utc(2026, 11, 2, 6, 30)
    every_half_hour = Cron("*/30 1 * * *", tz="America/New_York")
    assert fires(every_half_hour, utc(2026, 11, 1, 4), utc(2026, 11, 1, 12)) == [
        utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 5, 30)]  # fmt: skip


def test_next_after_is_strictly_later_and_utc():
    cron = Cron("0 3 * * *", tz="Europe/Warsaw")
    t = cron.next_after(utc(2026, 1, 1, 2, 0))  # 03:00 CET is 02:00 UTC: strictly after
    assert t == utc(2026, 1, 2, 2, 0) and t.tzinfo is UTC
    assert cron.next_after(t - timedelta(microseconds=1)) == t


# ------------------------------------------------------------------------ expressions
def test_aliases_and_whitespace_are_normalised():
    assert Cron("@daily").expr == "0 0 * * *"
    assert Cron("  0   3 *  * MON-FRI ").expr == "0 3 * * MON-FRI"
    assert Cron("@hourly").key == "cron:0 * * * *@UTC"


@pytest.mark.parametrize("kwargs, match", [
    ({"expr": "61 * * * *"}, "invalid cron expression '61 \\* \\* \\* \\*'.*Bad minute"),
    ({"expr": "0 3 * *"}, "invalid cron expression"),
    ({"expr": "0 3 * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"expr": "0 3 * * *", "overlap": "sometimes"}, "overlap='sometimes' is not a policy"),
    ({"expr": "0 3 * * *", "catchup": "most"}, "catchup='most' is not a policy"),
    ({"expr": "0 3 * * *", "catchup": "all", "max_catchup": 0}, "max_catchup must be a positive"),
])  # fmt: skip
def test_bad_schedules_fail_at_definition_with_a_fix(kwargs, match):
    with pytest.raises(DefinitionError, match=match):
        Cron(**kwargs)


def test_a_long_downtime_is_not_walked_tick_by_tick():
    minutely = Cron("* * * * *")
    last, count = minutely.fire_times(utc(2025, 1, 1), utc(2026, 1, 1, 12, 0, 30), keep=3)
    assert last == [utc(2026, 1, 1, 11, 58), utc(2026, 1, 1, 11, 59), utc(2026, 1, 1, 12, 0)]
    assert count is None  # too many to count
    few, n = minutely.fire_times(utc(2026, 1, 1, 12), utc(2026, 1, 1, 12, 5), keep=2)
    assert few == [utc(2026, 1, 1, 12, 4), utc(2026, 1, 1, 12, 5)] and n == 5


# ------------------------------------------------------------------- F8: catch-up rule
HOURS = [utc(2026, 1, 1, h) for h in range(10, 16)]  # 10:00 … 15:00


@pytest.mark.parametrize("catchup, expected", [
    (Catchup("none"), []),
    (Catchup("latest"), [(HOURS[-1], False)]),
    (Catchup("all", 3), [(t, False) for t in HOURS[-3:]]),
    (Catchup("all", 50), [(t, False) for t in HOURS]),
])  # fmt: skip
def test_missed_ticks_follow_the_catchup_policy(catchup, expected):
    now = utc(2026, 1, 1, 15, 20)  # every tick is more than a minute late: missed
    assert select_ticks(HOURS, now, 60, catchup) == expected


def test_an_on_time_tick_always_fires_and_counts_against_max_catchup():
    now = utc(2026, 1, 1, 15, 0, 20)
    assert select_ticks(HOURS, now, 60, Catchup("none")) == [(HOURS[-1], True)]
    assert select_ticks(HOURS, now, 60, Catchup("latest")) == [(HOURS[-1], True)]
    assert select_ticks(HOURS, now, 60, Catchup("all", 3)) == [
        (HOURS[-3], False), (HOURS[-2], False), (HOURS[-1], True)]  # fmt: skip


def test_the_first_poll_never_fires_the_past():
    cron = Cron("0 * * * *", catchup="all")
    first = cron.poll(utc(2026, 1, 1, 15, 20), {})
    assert first.fires == () and first.next_at == utc(2026, 1, 1, 16)
    on_time = cron.poll(utc(2026, 1, 1, 15, 0, 30), {})
    assert [f.info["logical_time"] for f in on_time.fires] == ["2026-01-01T15:00:00Z"]
    assert on_time.fires[0].run_key == "cron@2026-01-01T15:00:00Z"
    assert on_time.state == {"last": utc(2026, 1, 1, 15).timestamp()}


def test_daily_counts_one_local_date_per_fire_over_a_year():
    cron = Cron("30 2 * * *", tz="America/New_York")
    times = fires(cron, utc(2026, 1, 1, 12), utc(2027, 1, 1, 12))
    dates = [t.astimezone(NY).date() for t in times]
    assert len(dates) == len(set(dates)) == (date(2027, 1, 1) - date(2026, 1, 1)).days
