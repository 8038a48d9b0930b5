"""A task defined in an importable module (like rayline's built-in tasks)."""

from __future__ import annotations

from rayline import task


@task
def apply(fn, x: int) -> int:
    return fn(x)
