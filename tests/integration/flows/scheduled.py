"""Flows for the trigger tests: small, local-executor friendly; `hourly` carries its schedule."""

from __future__ import annotations

from rayline import flow, task
from rayline.triggers import Cron


@task
def count_files(snapshot: str) -> str:
    return f"snapshot {snapshot[:12]}"


@task
def stamp(logical_time: str) -> str:
    return f"ran for {logical_time}"


@flow(schedule=Cron("0 * * * *"))
def hourly(logical_time: str = ""):
    return stamp(logical_time)


@flow
def retrain(snapshot: str = ""):
    return count_files(snapshot)
