"""A flow with one long task, for cancellation tests."""

from __future__ import annotations

import time

from rayline import flow, task


@task
def first() -> int:
    return 1


@task
def sleepy(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x


@flow
def slow(seconds: float = 60.0):
    return sleepy(first(), seconds)
