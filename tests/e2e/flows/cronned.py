"""Scheduled flows for the cron test: one due every minute (it takes a moment, so that two
ticks at once overlap), one due once a year, one that fails."""

from __future__ import annotations

import time

from rayline import flow, task
from rayline.triggers import Cron


@task
def slow_echo(logical_time: str) -> str:
    time.sleep(1.0)
    return logical_time


@task
def broken(logical_time: str) -> str:
    raise RuntimeError(f"the data for {logical_time} is not there")


@flow(schedule=Cron("* * * * *"))
def minutely(logical_time: str = ""):
    return slow_echo(logical_time)


@flow(schedule=Cron("0 0 1 1 *"))
def yearly(logical_time: str = ""):
    return slow_echo(logical_time)


@flow(schedule=Cron("* * * * *"))
def failing(logical_time: str = ""):
    return broken(logical_time)
