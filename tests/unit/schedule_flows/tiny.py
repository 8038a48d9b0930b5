"""A two-task flow for the scheduler tests: it only has to compile (and, in-process, run)."""

from __future__ import annotations

from rayline import flow, task
from rayline.triggers import Cron


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def label(total: int, logical_time: str) -> str:
    return f"{total} @ {logical_time}"


@flow
def tiny(n: int = 1, logical_time: str = ""):
    return label(add(n, 2), logical_time)


@flow(schedule=Cron("0 3 * * *", tz="Europe/Warsaw", catchup="latest"))
def nightly(n: int = 1):
    return add(n, 1)
