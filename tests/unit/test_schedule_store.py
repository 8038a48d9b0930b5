"""The run store's scheduling tables: flow slots (overlap skip/queue/allow), the queue, the
guarded start, stale holders (F6, F10) and trigger state; and the v1 -> v2 migration."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine

from rayline.errors import FlowBusyError, StoreError
from rayline.store import schema
from rayline.store.runs import RunStore
from rayline.store.slots import FlowSlots, NewRun, SlotGuardedStore
from rayline.store.sql import sqlite_url
from rayline.store.states import RunStatus
from rayline.store.trigger_states import TriggerStates


@pytest.fixture
def store(store_url: str):
    """The run store on SQLite and on PostgreSQL (conftest's ``store_url``)."""
    with RunStore(store_url) as s:
        yield s


@pytest.fixture
def slots(store):
    return FlowSlots(store, lease_ttl=5.0)


def new(key: str | None = None, flow: str = "churn", **kw) -> NewRun:
    return NewRun(flow_name=flow, source="flows/churn.py:churn", params={}, plan_hash="p1",
                  plan_json="{}", node_ids=("load", "train"), run_key=key,
                  trigger={"kind": "cron"}, **kw)  # fmt: skip


def start(slots: FlowSlots, run_id: str) -> int:
    return slots.start(run_id, owner_pid=1, owner_host="elsewhere")


def running(store: RunStore, flow: str = "churn") -> list[str]:
    return [r.run_id for r in store.list_runs(flow_name=flow, status=RunStatus.RUNNING)]


# ------------------------------------------------------------------------------- skip
def test_skip_records_the_second_tick_as_skipped_with_a_reason(store, slots):
    first = slots.reserve(new("churn/cron@1"))
    assert first.action == "start" and first.to_start == [first.run_id]
    start(slots, first.run_id)
    second = slots.reserve(new("churn/cron@2"))
    assert second.action == "skipped" and second.to_start == []
    rec = store.get_run(second.run_id)
    assert rec.status == RunStatus.SKIPPED and rec.run_key == "churn/cron@2"
    assert f"run {first.run_id} is RUNNING" in rec.error and "overlap=skip" in rec.error
    assert rec.trigger["skipped"] == rec.error and store.get_tasks(second.run_id) == []
    assert running(store) == [first.run_id]


def test_the_same_run_key_returns_the_existing_run(slots):
    a = slots.reserve(new("churn/cron@1"))
    b = slots.reserve(new("churn/cron@1"))
    assert (b.action, b.run_id) == ("exists", a.run_id)


def test_the_slot_frees_when_its_run_ends(store, slots):
    a = slots.reserve(new("k1"))
    generation = start(slots, a.run_id)
    store.set_run_status(a.run_id, RunStatus.SUCCEEDED, generation=generation)
    b = slots.reserve(new("k2"))
    assert b.action == "start" and slots.holder("churn") == b.run_id


def test_skipping_without_a_record_leaves_the_key_free(store, slots):
    start(slots, slots.reserve(new("k1")).run_id)
    quiet = slots.reserve(new("snap"), record_skip=False)
    assert (quiet.action, quiet.run_id) == ("skipped", None)
    assert [r.run_key for r in store.list_runs()] == ["k1"]


# ------------------------------------------------------------------------------ queue
def test_queue_keeps_exactly_one_waiting_run_and_skips_the_rest(store, slots):
    a = slots.reserve(new("k1"), overlap="queue")
    start(slots, a.run_id)
    b = slots.reserve(new("k2"), overlap="queue")
    c = slots.reserve(new("k3"), overlap="queue")
    assert (b.action, c.action) == ("queued", "skipped")
    assert store.get_run(b.run_id).status == RunStatus.PENDING
    assert "1 run(s) already queued" in c.reason and slots.queued("churn") == [b.run_id]
    with pytest.raises(StoreError, match="does not hold the flow's slot"):
        start(slots, b.run_id)  # a queued run cannot jump the queue
    assert slots.claim_next("churn") is None  # a is still running
    store.set_run_status(a.run_id, RunStatus.FAILED, generation=2)
    assert slots.claim_next("churn") == b.run_id and slots.queued("churn") == []
    start(slots, b.run_id)
    assert running(store) == [b.run_id]


def test_catch_up_runs_queue_in_logical_order_whatever_the_overlap(store, slots):
    start(slots, slots.reserve(new("live")).run_id)
    got = [slots.reserve(new(f"t{i}", sort_key=float(i)), backlog=True) for i in (3, 1, 2)]
    assert [g.action for g in got] == ["queued"] * 3
    assert slots.queued("churn") == [got[1].run_id, got[2].run_id, got[0].run_id]


def test_a_new_tick_finding_the_slot_free_starts_the_oldest_queued_run_first(store, slots):
    a = slots.reserve(new("k1"), overlap="queue")
    start(slots, a.run_id)
    b = slots.reserve(new("k2"), overlap="queue")
    store.set_run_status(a.run_id, RunStatus.SUCCEEDED, generation=2)
    c = slots.reserve(new("k3"), overlap="queue")
    assert c.promoted == b.run_id and c.action == "queued" and c.to_start == [b.run_id]


def test_allow_starts_every_run(store, slots):
    ids = [slots.reserve(new(f"k{i}"), overlap="allow").run_id for i in range(3)]
    for run_id in ids:
        start(slots, run_id)
    assert sorted(running(store)) == sorted(ids) and slots.holder("churn") is None


# ----------------------------------------------------------------------- guarded start
def test_the_guarded_store_is_what_moves_a_reserved_run_to_running(store, slots):
    got = slots.reserve(new("k1"))
    guarded = SlotGuardedStore(store, slots)
    assert guarded.take_over(got.run_id, owner_pid=1, owner_host="h", lease_ttl=5) == 2
    assert guarded.get_run(got.run_id).status == RunStatus.RUNNING  # everything else delegates
    with pytest.raises(StoreError, match="is RUNNING, not PENDING"):
        guarded.take_over(got.run_id, owner_pid=1, owner_host="h", lease_ttl=5)


def test_a_resume_takes_back_a_free_slot_only_and_never_starts_a_reserved_run(store, slots):
    a = slots.reserve(new("k1"))
    with pytest.raises(StoreError, match="is reserved and has not started"):
        slots.resume(a.run_id, owner_pid=1, owner_host="h", lease_ttl=5)
    start(slots, a.run_id)
    store.set_run_status(a.run_id, RunStatus.FAILED, generation=2, error="boom")
    b = slots.reserve(new("k2"))
    start(slots, b.run_id)
    with pytest.raises(FlowBusyError) as busy:
        slots.resume(a.run_id, owner_pid=1, owner_host="h", lease_ttl=5)
    assert busy.value.held_by == b.run_id and store.get_run(a.run_id).status == RunStatus.FAILED
    store.set_run_status(b.run_id, RunStatus.SUCCEEDED, generation=2)
    assert slots.resume(a.run_id, owner_pid=1, owner_host="h", lease_ttl=5) == 3
    assert slots.holder("churn") == a.run_id and running(store) == [a.run_id]
    assert slots.reserve(new("k3")).action == "skipped"  # the resumed run holds the flow


# ----------------------------------------------------------------- stale holders, F10
def test_a_stale_running_holder_is_interrupted_and_the_slot_passes(store, slots, monkeypatch):
    a = slots.reserve(new("k1"))
    start(slots, a.run_id)  # owner pid 1 on another host: only the heartbeat can tell
    monkeypatch.setattr(time, "time", lambda real=time.time: real() + 6.0)  # past lease_ttl
    b = slots.reserve(new("k2"))
    assert b.action == "start"
    rec = store.get_run(a.run_id)
    assert rec.status == RunStatus.INTERRUPTED and "found by the scheduler" in rec.error


def test_a_clock_jump_back_does_not_make_a_live_holder_look_dead(store, slots, monkeypatch):
    a = slots.reserve(new("k1"))
    start(slots, a.run_id)
    monkeypatch.setattr(time, "time", lambda real=time.time: real() - 3600.0)
    b = slots.reserve(new("k2"))
    assert b.action == "skipped"
    assert store.get_run(a.run_id).status == RunStatus.RUNNING


def test_a_reserved_run_whose_starter_died_goes_back_to_the_head_of_the_queue(store, slots, monkeypatch):
    a = slots.reserve(new("k1"))
    monkeypatch.setattr("rayline.store.leases.pid_alive", lambda pid: False)
    b = slots.reserve(new("k2"), overlap="queue")
    assert b.promoted == a.run_id and b.action == "queued"
    assert slots.holder("churn") == a.run_id


# ------------------------------------------------------------------------ trigger state
def test_trigger_state_round_trips_with_utc_next_fire_times(store):
    states = TriggerStates(store)
    at = datetime(2026, 3, 9, 6, 30, tzinfo=UTC)
    states.put("churn|cron", flow_name="churn", kind="cron", state={"last": 1.5}, next_at=at)
    states.put("churn|cron", flow_name="churn", kind="cron", state={"last": 2.5}, next_at=at,
               last_run_id="abc")  # fmt: skip
    rec = states.get("churn|cron")
    assert rec.state == {"last": 2.5} and rec.next_at == at and rec.last_run_id == "abc"
    with store._engine.connect() as conn:
        raw = conn.exec_driver_sql("SELECT next_at FROM trigger_state").scalar()
    assert raw == at.timestamp()  # stored as UTC epoch seconds
    assert states.get("nope") is None and [r.trigger_id for r in states.all()] == ["churn|cron"]


def test_a_version_1_store_migrates_to_the_current_version_keeping_its_runs(home: Path):
    home.mkdir(parents=True)
    url = sqlite_url(home / "runs.db")
    engine = create_engine(url)
    with engine.begin() as conn:
        md = MetaData()
        schema._define_v1(md)
        md.create_all(conn)
        schema.schema_version.create(conn)
        conn.execute(schema.schema_version.insert().values(id=1, version=1))
        conn.exec_driver_sql("INSERT INTO plans VALUES ('p', '{}', 0)")
        conn.exec_driver_sql("INSERT INTO runs (run_id, flow_name, status, params_json, plan_hash, "
                             "created_at, generation, counters_json) VALUES ('r1', 'f', 'SUCCEEDED', "
                             "'{}', 'p', 0, 1, '{}')")  # fmt: skip
    engine.dispose()
    with RunStore(url) as store:
        assert store.get_run("r1").status == RunStatus.SUCCEEDED
        assert FlowSlots(store).reserve(new("k")).action == "start"
    with sqlite3.connect(home / "runs.db") as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (schema.SCHEMA_VERSION,)
        assert db.execute("SELECT count(*) FROM run_cancels").fetchone() == (0,)  # version 4


def test_a_cancelled_queued_run_is_dropped_from_the_queue(store, slots):
    a = slots.reserve(new("k1"), overlap="queue")
    start(slots, a.run_id)
    b = slots.reserve(new("k2"), overlap="queue")
    store.set_run_status(b.run_id, RunStatus.CANCELLED)
    store.set_run_status(a.run_id, RunStatus.SUCCEEDED, generation=2)
    assert slots.claim_next("churn") is None and slots.queued("churn") == []
