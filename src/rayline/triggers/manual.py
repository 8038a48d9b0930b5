"""The manual trigger: run a flow now, on purpose, and record who asked and why.

``rayline trigger flows/churn.py --reason "relabelled data"`` is ``rayline run`` through the
trigger machinery: the run is reserved under the flow's overlap policy (the one its declared
schedule uses, ``skip`` when it has none; ``--overlap`` overrides), so a manual run never starts
next to a scheduled run of the same flow under ``skip``/``queue``, and the run's ``trigger``
JSON says ``{"kind": "manual", "reason": ..., "user": ..., "host": ..., "fired_at": ...}``.
With a ``key`` the trigger is idempotent: a second trigger with the same key returns the first
run (``<flow>/manual@<key>``).

(``rayline run`` takes the flow's slot the same way, through ``launch.run_in_slot``; a trigger
adds the record of who asked and why, an idempotency key and ``--no-wait``.)

Example::

    result = trigger_flow("flows/churn.py", {"lr": 0.1}, reason="new labels", executor="local")
    result.reservation.action        # "start", "queued", "skipped" or "exists"
    result.run.status                # the finished Run when it ran here
"""

from __future__ import annotations

import getpass
import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from rayline.config import Settings
from rayline.store.runs import RunStore
from rayline.store.slots import FlowSlots, Reservation
from rayline.store.states import RunStatus
from rayline.triggers.launch import InProcessLauncher, ProcessLauncher, planned_run
from rayline.triggers.trigger import Fire, iso_utc, utc_now

log = logging.getLogger("rayline.triggers")

__all__ = ["Manual", "ManualResult", "trigger_flow"]


@dataclass(frozen=True)
class Manual:
    """A manual fire: why, and an optional idempotency key."""

    reason: str = "manual trigger"
    key: str | None = None
    kind: ClassVar[str] = "manual"

    def fire(self, now: datetime) -> Fire:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (containers) or no login name
            user = "unknown"
        info = {"kind": "manual", "user": user, "host": socket.gethostname(), "key": self.key}
        return Fire(run_key=f"manual@{self.key}" if self.key else None, reason=self.reason, info=info,
                    sort_key=now.timestamp())  # fmt: skip


@dataclass(frozen=True)
class ManualResult:
    """What ``trigger_flow`` did: the reservation, and the ``Run`` if it ran (or was found)."""

    reservation: Reservation
    run: Any = None
    started: list[str] = field(default_factory=list)


def trigger_flow(
    target: str,
    params: Mapping[str, Any] | None = None,
    *,
    reason: str = "manual trigger",
    key: str | None = None,
    overlap: str | None = None,
    settings: Settings | None = None,
    executor: Any = None,
    address: str | None = None,
    wait: bool = True,
    poll_interval: float = 1.0,
) -> ManualResult:
    """Reserve a run of the flow at ``target`` (``path.py[:flow]`` or ``path.yaml``) and, with
    ``wait``, run it here (waiting for the slot if it was queued); without, start it in a
    detached child process.

    Raises:
        DefinitionError: the flow does not load or compile with ``params``.
    """
    from rayline.api import load_flow, load_run
    from rayline.triggers.catalog import declared_triggers

    settings = settings or Settings()
    settings.resolved_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    graph = load_flow(target)
    if overlap is None:
        declared = declared_triggers(target)
        overlap = declared[0].trigger.overlap if declared else "skip"
    now = utc_now()
    fire = Manual(reason, key).fire(now)
    trigger = {**fire.info, "reason": reason, "fired_at": iso_utc(now)}
    new = planned_run(graph, params or {}, run_key=f"{graph.name}/{fire.run_key}" if fire.run_key else None,
                      trigger=trigger, sort_key=fire.sort_key,
                      persist_all=settings.persist == "all")  # fmt: skip
    with RunStore(settings.run_store_url) as store:
        slots = FlowSlots(store, settings.lease_ttl)
        got = slots.reserve(new, overlap=overlap)
        log.info("manual trigger of flow '%s' (%s): %s%s", graph.name, reason, got.action,
                 f" run {got.run_id}" if got.run_id else "")  # fmt: skip
        if not wait:
            detached = ProcessLauncher(settings, local=executor == "local", address=address)
            for run_id in got.to_start:
                detached.start(run_id)
            return ManualResult(got, None, got.to_start)
        launcher = InProcessLauncher(settings, executor, address)
        for run_id in got.to_start:
            launcher.start(run_id)
        if got.action == "queued" and got.run_id:
            _wait_for_turn(slots, store, graph.name, got.run_id, launcher, poll_interval)
    run = load_run(got.run_id, settings=settings) if got.run_id else None
    return ManualResult(got, run, [r for r, _ in launcher.finished])


def _wait_for_turn(slots: FlowSlots, store: RunStore, flow: str, run_id: str,
                   launcher: InProcessLauncher, poll_interval: float) -> None:  # fmt: skip
    """Start queued runs of ``flow`` here as the slot frees, until ``run_id`` has run (or was
    started by another process)."""
    log.info("run %s is queued; waiting for the flow's slot", run_id)
    while store.get_run(run_id).status == RunStatus.PENDING:
        nxt = slots.claim_next(flow)
        if nxt is None:
            time.sleep(poll_interval)
            continue
        launcher.start(nxt)
