"""The manual trigger: run a flow now, on purpose, and record who asked and why.

``rayline trigger flows/churn.py --reason "relabelled data"`` is ``rayline run`` through the
trigger machinery: ``trigger_flow`` asks ``rayline.launch`` to admit the run under the flow's
overlap policy (the one its declared schedule uses, ``skip`` when it has none; ``--overlap``
overrides), so a manual run never starts next to a scheduled run of the same flow under
``skip``/``queue``, and the run's ``trigger`` JSON says ``{"kind": "manual", "reason": ...,
"user": ..., "host": ..., "fired_at": ...}``. With a ``key`` the trigger is idempotent: a second
trigger with the same key returns the first run (``<flow>/manual@<key>``).

Example::

    result = trigger_flow("flows/churn.py", {"lr": 0.1}, reason="new labels", executor="local")
    result.reservation.action        # "start", "queued", "skipped" or "exists"
    result.run.status                # the run's record when it ran here (or was found)
"""

from __future__ import annotations

import getpass
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from rayline.config import Settings
from rayline.launch.flow_files import FlowFile, load_flow_file
from rayline.store.slots import Reservation
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
    """What ``trigger_flow`` did: the reservation, the run's record if it ran (or was found),
    and the runs started here."""

    reservation: Reservation
    run: Any = None
    started: list[str] = field(default_factory=list)


def trigger_flow(
    flow: str | FlowFile,
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
    """Admit a run of ``flow`` (``path.py[:flow]``, ``path.yaml``, or a loaded ``FlowFile``)
    and, with ``wait``, run it here (waiting for the slot if it was queued); without, start it
    in a detached child process.

    Raises:
        DefinitionError: the flow does not load or compile with ``params``.
    """
    from rayline.launch.admission import admit, choose_overlap, plan_run
    from rayline.launch.launchers import InProcessLauncher, ProcessLauncher
    from rayline.launch.session import Session

    flow_file = flow if isinstance(flow, FlowFile) else load_flow_file(flow)
    graph = flow_file.graph
    now = utc_now()
    fire = Manual(reason, key).fire(now)
    trigger = {**fire.info, "reason": reason, "fired_at": iso_utc(now)}
    run_key = f"{graph.name}/{fire.run_key}" if fire.run_key else None
    with Session(settings, executor="local") as session:
        settings = session.settings
        planned = plan_run(session, graph, params or {}, run_key=run_key, trigger=trigger, sort_key=fire.sort_key)
        if wait:
            launcher: Any = InProcessLauncher(settings, executor, address)
        else:
            launcher = ProcessLauncher(settings, local=executor == "local", address=address)
        done = admit(session, planned, overlap=choose_overlap(overlap, flow_file.declared_overlap),
                     launcher=launcher, wait=wait, raise_own=False, poll_interval=poll_interval)  # fmt: skip
        got = done.reservation
        log.info("manual trigger of flow '%s' (%s): %s%s", graph.name, reason, got.action,
                 f" run {got.run_id}" if got.run_id else "")  # fmt: skip
        record = session.runs.get_run(got.run_id) if got.run_id and wait else None
    started = [r for r, _ in launcher.finished] if wait else got.to_start
    return ManualResult(got, record, started)
