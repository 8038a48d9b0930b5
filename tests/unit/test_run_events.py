"""A run's history of events, and marking a task's output lost: which tasks go back to PENDING,
what happens to the run, and that a live driver's run only gets the event."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from rayline.store.runs import RunStore, TaskUpdate
from rayline.store.states import RunStatus, TaskStatus

PLAN = json.dumps({"nodes": [{"id": "load", "inputs": []}, {"id": "double", "inputs": ["load"]},
                             {"id": "total", "inputs": ["double"]}, {"id": "count", "inputs": ["load"]}]})
NODES = ("load", "double", "total", "count")
DIGESTS = {n: f"{i:x}" * 64 for i, n in enumerate(NODES, start=1)}


@pytest.fixture
def store(tmp_path: Path):
    with RunStore.open(tmp_path) as s:
        yield s


def finished_run(store: RunStore, *, status: RunStatus = RunStatus.SUCCEEDED) -> str:
    run_id, _ = store.create_run(flow_name="f", source="f.py", params={}, plan_hash="p", plan_json=PLAN,
                                 node_ids=list(NODES), owner_pid=os.getpid(), owner_host=socket.gethostname())
    store.record_tasks(run_id, [TaskUpdate(n, TaskStatus.SUCCEEDED, digest=d) for n, d in DIGESTS.items()],
                       generation=1)
    if status.terminal:
        store.set_run_status(run_id, status, generation=1)
    return run_id


def test_a_lost_output_sends_its_task_and_dependants_back_to_pending(store: RunStore):
    run_id = finished_run(store)
    assert store.mark_output_lost(run_id, "double", DIGESTS["double"], "checksum mismatch",
                                  lease_ttl=30.0, found_by="a test")
    states = {t.node_id: t.status for t in store.get_tasks(run_id)}
    assert states == {"load": TaskStatus.SUCCEEDED, "double": TaskStatus.PENDING,
                      "total": TaskStatus.PENDING, "count": TaskStatus.SUCCEEDED}
    run = store.get_run(run_id)
    assert run.status == RunStatus.INTERRUPTED and run.generation == 2
    assert "output of task 'double' lost: checksum mismatch (found by a test)" in run.error
    [event] = store.get_events(run_id)
    assert (event.kind, event.node_id, event.digest) == ("output_lost", "double", DIGESTS["double"])
    assert store.tasks_with_digests([DIGESTS["double"], DIGESTS["count"]]) == [(run_id, "count", DIGESTS["count"])]
    assert store.referenced_digests() == set(DIGESTS.values())


def test_a_live_drivers_run_only_gets_the_event(store: RunStore):
    run_id = finished_run(store, status=RunStatus.RUNNING)  # owned by this (live) process
    assert not store.mark_output_lost(run_id, "total", DIGESTS["total"], "gone", lease_ttl=30.0,
                                      found_by="a test")
    assert store.get_run(run_id).status == RunStatus.RUNNING
    assert all(t.status == TaskStatus.SUCCEEDED for t in store.get_tasks(run_id))
    assert [e.node_id for e in store.get_events(run_id)] == ["total"]
