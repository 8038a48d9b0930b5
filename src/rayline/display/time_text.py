"""Times and durations as people read them, the same in the CLI, the notebook and the web UI."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["duration_text", "format_seconds", "short_time"]


def format_seconds(seconds: float) -> str:
    """``12.3 s``, ``4 min 5 s``, ``2 h 3 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def duration_text(seconds: float | None) -> str:
    """``format_seconds``, or ``-`` when unknown."""
    return format_seconds(seconds) if seconds is not None else "-"


def short_time(when: datetime | str | None) -> str:
    """``2026-11-22 17:00:01Z`` for a timestamp (or its ISO text); ``-`` when unknown."""
    if not when:
        return "-"
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
