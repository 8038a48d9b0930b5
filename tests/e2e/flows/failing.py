"""A flow whose `boom` task fails (after one retry) unless the file `marker` exists; `after`
depends on it (UPSTREAM_FAILED), `fine` is an independent branch that succeeds."""

from __future__ import annotations

import os

from rayline import flow, task


@task
def fine() -> int:
    return 1


@task(retries=1, backoff=0)
def boom(marker: str) -> int:
    if not (marker and os.path.exists(marker)):
        raise ValueError(f"marker file {marker!r} is missing")
    return 41


@task
def after(x: int, y: int) -> int:
    return x + y


@flow
def failing(marker: str = ""):
    return after(boom(marker), fine())
