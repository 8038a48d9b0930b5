"""What the flows and schedules page reads: each flow with its triggers (declared in the
schedule files given to ``rayline ui``, and every trigger whose state the scheduler stored),
their next fire times, the flow's last runs, and the last evaluations of its triggers, each
with the reason the scheduler recorded (fired, skipped because busy, queued, …).

Example::

    flows = flows_page(store, entries)
    [(f.name, [t.next_fire for t in f.triggers], [e.reason for e in f.evaluations]) for f in flows]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rayline.display.run_view import RunView, run_view
from rayline.store.runs import RunStore
from rayline.store.trigger_states import TriggerStateRecord, TriggerStates

RECENT_RUNS = 200  # how many of the newest runs the page looks through


@dataclass(frozen=True, slots=True)
class TriggerRow:
    """One schedule or trigger of a flow."""

    trigger_id: str
    kind: str
    describe: str  # "cron 0 3 * * * (Europe/Warsaw)", or the stored id when not declared here
    overlap: str | None
    next_fire: datetime | None
    last_fired_at: datetime | None
    last_run_id: str | None
    declared: bool  # in the schedule files this UI was given

    @property
    def due(self) -> bool:
        from rayline.triggers.trigger import utc_now

        return bool(self.next_fire and self.next_fire <= utc_now())


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One time a trigger fired (or tried to): when, why, and what became of the run."""

    run_id: str
    kind: str
    fired_at: str | None
    logical_time: str | None
    reason: str
    status: str


@dataclass(frozen=True, slots=True)
class FlowRow:
    """A flow with its triggers, latest run and last trigger evaluations."""

    name: str
    source: str | None
    triggers: list[TriggerRow] = field(default_factory=list)
    latest: RunView | None = None
    evaluations: list[Evaluation] = field(default_factory=list)
    runs: int = 0


def flows_page(runs: RunStore, entries: list[Any], evaluations: int = 10) -> list[FlowRow]:
    """Every flow that has runs, declared triggers or stored trigger state, by name."""
    from rayline.triggers.trigger import utc_now

    stored = {s.trigger_id: s for s in TriggerStates(runs).all()}
    records = runs.list_runs(limit=RECENT_RUNS)
    names = {r.flow_name for r in records} | {e.flow_name for e in entries}
    names |= {s.flow_name for s in stored.values()}
    now = utc_now()
    out = []
    for name in sorted(names):
        mine = [r for r in records if r.flow_name == name]
        triggers = [_declared(e, stored.pop(e.trigger_id, None), now) for e in entries
                    if e.flow_name == name]  # fmt: skip
        triggers += [_stored(s) for s in list(stored.values()) if s.flow_name == name]
        latest = run_view(mine[0], runs.get_tasks(mine[0].run_id)) if mine else None
        source = mine[0].source if mine else next((e.target for e in entries if e.flow_name == name), None)
        evals = [_evaluation(r) for r in mine if r.trigger][:evaluations]
        out.append(FlowRow(name, source, triggers, latest, evals, len(mine)))
    return out


def _declared(entry: Any, state: TriggerStateRecord | None, now: datetime) -> TriggerRow:
    trigger = entry.trigger
    nxt = state.next_at if state and state.next_at else (
        trigger.next_after(now) if hasattr(trigger, "next_after") else None)  # fmt: skip
    return TriggerRow(
        trigger_id=entry.trigger_id, kind=trigger.kind, describe=trigger.describe(),
        overlap=getattr(trigger, "overlap", None), next_fire=nxt,
        last_fired_at=state.last_fired_at if state else None,
        last_run_id=state.last_run_id if state else None, declared=True,
    )  # fmt: skip


def _stored(state: TriggerStateRecord) -> TriggerRow:
    return TriggerRow(
        trigger_id=state.trigger_id, kind=state.kind, describe=state.trigger_id.split("|", 1)[-1],
        overlap=None, next_fire=state.next_at, last_fired_at=state.last_fired_at,
        last_run_id=state.last_run_id, declared=False,
    )  # fmt: skip


def _evaluation(r: Any) -> Evaluation:
    t = r.trigger or {}
    reason = str(t.get("reason") or "")
    if r.status.value == "SKIPPED" and r.error:
        reason = f"{reason}; not run: {r.error}" if reason else f"not run: {r.error}"
    return Evaluation(
        run_id=r.run_id, kind=str(t.get("kind") or "trigger"), fired_at=t.get("fired_at"),
        logical_time=t.get("logical_time"), reason=reason, status=r.status.value,
    )  # fmt: skip
