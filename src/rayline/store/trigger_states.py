"""Persisted trigger state: what each schedule or trigger has seen and when it fires next.

One row per trigger (``trigger_id``, e.g. ``churn|cron:0 3 * * *@Europe/Warsaw``): the trigger's
own JSON state (a cron schedule keeps the last logical time it considered; a new-data trigger the
snapshot hashes it saw and fired), its next fire time as UTC epoch seconds, and the last run it
started. A scheduler reads it on every tick and writes it back after firing, so a restarted
scheduler (or a second one, or ``rayline schedule tick`` from system cron) carries on where the
last one stopped.

Example::

    states = TriggerStates(store)
    states.put("churn|cron:0 3 * * *@UTC", flow_name="churn", kind="cron",
               state={"last": 1767236400.0}, next_at=datetime(2026, 1, 2, 3, tzinfo=UTC))
    states.get("churn|cron:0 3 * * *@UTC").next_at   # an aware UTC datetime
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from rayline.store.run_records import from_ts, to_ts
from rayline.store.runs import RunStore
from rayline.store.schema import trigger_state
from rayline.store.sql import to_json

__all__ = ["TriggerStateRecord", "TriggerStates"]

_KEEP: Any = object()


@dataclass(frozen=True, slots=True)
class TriggerStateRecord:
    """One trigger's stored state. Times are aware UTC datetimes."""

    trigger_id: str
    flow_name: str
    kind: str
    state: dict[str, Any]
    next_at: datetime | None
    last_fired_at: datetime | None
    last_run_id: str | None
    updated_at: datetime


class TriggerStates:
    """Read and write ``trigger_state`` rows through a ``RunStore``."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    def get(self, trigger_id: str) -> TriggerStateRecord | None:
        """The stored state of ``trigger_id``, or None if it never ran."""
        stmt = select(trigger_state).where(trigger_state.c.trigger_id == trigger_id)
        with self.store.transaction(read=True) as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _record(row._mapping)

    def all(self) -> list[TriggerStateRecord]:
        """Every stored trigger state, by trigger id."""
        stmt = select(trigger_state).order_by(trigger_state.c.trigger_id)
        with self.store.transaction(read=True) as conn:
            return [_record(r._mapping) for r in conn.execute(stmt)]

    def put(
        self,
        trigger_id: str,
        *,
        flow_name: str,
        kind: str,
        state: dict[str, Any],
        next_at: datetime | None,
        last_fired_at: datetime | None = _KEEP,
        last_run_id: str | None = _KEEP,
    ) -> None:
        """Insert or replace the state of ``trigger_id``; ``last_*`` keep their stored value
        unless given."""
        values: dict[str, Any] = {
            "flow_name": flow_name,
            "kind": kind,
            "state_json": to_json(state, f"the state of trigger {trigger_id}"),
            "next_at": to_ts(next_at),
            "updated_at": time.time(),
        }
        if last_fired_at is not _KEEP:
            values["last_fired_at"] = to_ts(last_fired_at)
        if last_run_id is not _KEEP:
            values["last_run_id"] = last_run_id
        for attempt in range(2):
            try:
                with self.store.transaction() as conn:
                    stmt = update(trigger_state).where(trigger_state.c.trigger_id == trigger_id)
                    if conn.execute(stmt.values(**values)).rowcount == 0:
                        conn.execute(insert(trigger_state).values(trigger_id=trigger_id, **values))
                return
            except IntegrityError:
                if attempt:  # a concurrent tick inserted the row first: the update now finds it
                    raise


def _record(m: Any) -> TriggerStateRecord:
    return TriggerStateRecord(
        trigger_id=m["trigger_id"],
        flow_name=m["flow_name"],
        kind=m["kind"],
        state=json.loads(m["state_json"]),
        next_at=from_ts(m["next_at"]),
        last_fired_at=from_ts(m["last_fired_at"]),
        last_run_id=m["last_run_id"],
        updated_at=from_ts(m["updated_at"]),  # type: ignore[arg-type]
    )
