"""Schedules and triggers that start flows by themselves: cron, new data, manual; drift and
metric triggers plug into the same ``Trigger`` interface.

Declare them on a flow, or list them in ``configs/schedules.yaml`` (see ``catalog``)::

    from rayline import flow
    from rayline.triggers import Cron, NewData

    @flow(schedule=[Cron("0 3 * * *", tz="Europe/Warsaw"), NewData("data/incoming/*.parquet")])
    def churn(logical_time: str = ""):
        ...

Run them from system cron (``* * * * * rayline schedule tick flows/churn.py``) or with the
long-running ``rayline scheduler flows/churn.py``; ``rayline schedule list`` shows each one's
next fire time and last run; ``rayline trigger flows/churn.py --reason ...`` fires by hand.

Modules: ``schedule`` (Cron, DST semantics), ``policy`` (overlap, catch-up), ``newdata``,
``manual``, ``trigger`` (the interface), ``catalog`` (where schedules come from), ``scheduler``
(tick and loop). Runs are started by ``rayline.launch``, never here. Nothing is imported until
used.
"""

from __future__ import annotations

from rayline._lazy import lazy_exports

_LAZY = {
    "Cron": "rayline.triggers.schedule",
    "Schedule": "rayline.triggers.schedule",
    "NewData": "rayline.triggers.newdata",
    "take_snapshot": "rayline.triggers.newdata",
    "Manual": "rayline.triggers.manual",
    "trigger_flow": "rayline.triggers.manual",
    "Catchup": "rayline.triggers.policy",
    "Overlap": "rayline.triggers.policy",
    "Fire": "rayline.triggers.trigger",
    "Poll": "rayline.triggers.trigger",
    "Trigger": "rayline.triggers.trigger",
    "TRIGGER_KINDS": "rayline.triggers.trigger",
    "Scheduler": "rayline.triggers.scheduler",
    "Fired": "rayline.triggers.scheduler",
    "Entry": "rayline.triggers.catalog",
    "load_entries": "rayline.triggers.catalog",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
__all__ = sorted(_LAZY)
