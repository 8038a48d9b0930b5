"""The CLI's printing helpers: durations, times, counts, and multi-line text kept whole."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from rayline.cli.output import block, counts_text
from rayline.display.time_text import duration_text, format_seconds, short_time


def test_durations_read_in_the_largest_sensible_unit():
    assert [format_seconds(s) for s in (0.25, 59.94, 61, 3725)] == ["0.2 s", "59.9 s", "1 min 1 s", "1 h 2 min"]
    assert duration_text(None) == "-" and duration_text(2) == "2.0 s"


def test_times_are_shown_in_utc_from_a_datetime_or_iso_text():
    when = datetime(2026, 11, 22, 18, 0, 1, tzinfo=timezone(timedelta(hours=1)))
    assert short_time(when) == short_time(when.isoformat()) == "2026-11-22 17:00:01Z"
    assert short_time(None) == "-" and short_time(datetime(2026, 1, 2, tzinfo=UTC)) == "2026-01-02 00:00:00Z"


def test_counts_largest_first():
    assert counts_text({"FAILED": 1, "SUCCEEDED": 3}) == "3 succeeded 1 failed"
    assert counts_text({"FAILED": 1, "SUCCEEDED": 3}, ", ") == "3 succeeded, 1 failed"


def test_block_keeps_every_line_indented_under_the_first():
    text = "schema contract violated (2 problems):\n  column 'age'\n  column 'region'\n"
    assert block("error    ", text).splitlines() == [
        "error    schema contract violated (2 problems):",
        "           column 'age'",
        "           column 'region'",
    ]
