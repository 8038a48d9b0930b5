"""A scheduled flow for the web UI's flows page: daily at 03:00 UTC, one quick task."""

from __future__ import annotations

from rayline import flow, task
from rayline.triggers import Cron


@task
def stamp(logical_time: str) -> str:
    return logical_time or "by hand"


@flow(schedule=Cron("0 3 * * *"))
def ui_scheduled(logical_time: str = ""):
    return stamp(logical_time)
