"""Cancel requests through the run store (``store/cancels.py``) and the heartbeat that notices
them, on SQLite and PostgreSQL: a request stands for the lease it was made against, a reserved
run is cancelled at once (freeing its flow's slot), a dead driver's run ends CANCELLED, and a
live driver's heartbeat sees a request within a second."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from rayline.engine.heartbeat import Heartbeat
from rayline.store.cancels import CancelRequests
from rayline.store.runs import RunStore, TaskUpdate
from rayline.store.slots import FlowSlots, NewRun
from rayline.store.states import RunStatus, TaskStatus

HOST = socket.gethostname()


@pytest.fixture
def store(store_url: str):
    with RunStore(store_url) as s:
        yield s


def create(store: RunStore, owner_pid: int | None = None) -> str:
    run_id, _ = store.create_run(flow_name="churn", source=None, params={}, plan_hash="p", plan_json="{}",
                                 node_ids=["load", "train"], owner_pid=owner_pid or os.getpid(),
                                 owner_host=HOST)  # fmt: skip
    return run_id


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_request_stands_for_the_running_lease_only(store):
    run_id = create(store)
    cancels = CancelRequests(store)
    assert cancels.standing(run_id, 1) is None
    after = cancels.request(run_id, "stop it", by="me")
    assert after.status == RunStatus.RUNNING and after.generation == 1
    assert cancels.standing(run_id, 1) == "stop it" and not cancels.noticed(run_id, 1)
    cancels.notice(run_id, 1)
    assert cancels.noticed(run_id, 1)
    store.set_run_status(run_id, RunStatus.CANCELLED, generation=1)
    # a resume takes a new lease, which the old request does not touch
    generation = store.take_over(run_id, owner_pid=os.getpid(), owner_host=HOST, lease_ttl=30)
    assert cancels.standing(run_id, generation) is None


def test_a_reserved_run_is_cancelled_at_once_and_frees_the_flow_slot(store):
    slots = FlowSlots(store)
    new = NewRun(flow_name="churn", source=None, params={}, plan_hash="p", plan_json="{}", node_ids=("a",))
    first = slots.reserve(new, overlap="skip")
    assert first.action == "start"
    after = CancelRequests(store).request(first.run_id, "stop it")
    assert after.status == RunStatus.CANCELLED and "before it started" in (after.error or "")
    assert slots.reserve(new, overlap="skip").action == "start"  # the slot is free


def test_a_finished_run_is_left_as_it_is(store):
    run_id = create(store)
    store.set_run_status(run_id, RunStatus.SUCCEEDED, generation=1)
    assert CancelRequests(store).request(run_id, "stop it").status == RunStatus.SUCCEEDED
    assert CancelRequests(store).standing(run_id, 1) is None


def test_a_dead_drivers_run_with_a_request_ends_cancelled_and_its_lease_is_revoked(store):
    run_id = create(store, owner_pid=dead_pid())
    store.record_tasks(run_id, [TaskUpdate("load", TaskStatus.SUCCEEDED), TaskUpdate("train", TaskStatus.RUNNING)],
                       generation=1)  # fmt: skip
    cancels = CancelRequests(store, lease_ttl=30)
    cancels.request(run_id, "stop it")
    assert cancels.cancel_abandoned(run_id)
    run = store.get_run(run_id)
    assert run.status == RunStatus.CANCELLED and run.generation == 2 and run.error.startswith("stop it")
    assert {t.node_id: t.status for t in store.get_tasks(run_id)} == {
        "load": TaskStatus.SUCCEEDED, "train": TaskStatus.CANCELLED}


def test_a_live_drivers_run_is_not_taken_for_abandoned(store):
    run_id = create(store)
    cancels = CancelRequests(store, lease_ttl=30)
    cancels.request(run_id, "stop it")
    assert not cancels.cancel_abandoned(run_id)
    assert store.get_run(run_id).status == RunStatus.RUNNING


def test_a_reader_finding_a_dead_driver_ends_a_cancelled_run_cancelled_not_interrupted(store):
    run_id = create(store, owner_pid=dead_pid())
    CancelRequests(store).request(run_id, "stop it")
    assert store.mark_interrupted_if_stale(run_id, lease_ttl=30)
    assert store.get_run(run_id).status == RunStatus.CANCELLED


def test_the_heartbeat_notices_a_request_within_a_second_and_acknowledges_it(store):
    run_id = create(store)
    cancels = CancelRequests(store)
    with Heartbeat(store, run_id, 1, interval=5.0) as lease:
        time.sleep(0.3)
        assert lease.cancelled is None
        t0 = time.monotonic()
        cancels.request(run_id, "stop it")
        while lease.cancelled is None and time.monotonic() - t0 < 5:
            time.sleep(0.02)
        latency = time.monotonic() - t0
    assert lease.cancelled == "stop it"
    assert latency < 1.5, f"noticed after {latency:.2f} s"
    assert cancels.noticed(run_id, 1)
