"""A flow whose first task finds nothing to do and ends the run SKIPPED (context.skip)."""

from __future__ import annotations

from rayline import context, flow, task


@task
def look() -> int:
    context.skip("no new files since the last run")
    return 0


@task
def train(n: int) -> int:
    return n + 1


@flow
def nothing_new():
    return train(look())
