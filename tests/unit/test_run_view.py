"""The read model of a run: built from the run store, errors and tracebacks whole, every attempt
in order; its JSON outputs (document, list row, outcome) are projections of one value."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime, timedelta

import pytest

from rayline.display.run_view import read_run_view
from rayline.store.runs import AttemptUpdate, RunStore, TaskUpdate
from rayline.store.states import RunStatus, TaskStatus

T0 = datetime(2026, 11, 22, 17, 0, tzinfo=UTC)
ERROR = "schema contract violated (2 problems):\n  column 'age': expected int64\n  column 'region' is missing"


@pytest.fixture
def store(tmp_path):
    with RunStore.open(tmp_path) as s:
        yield s


@pytest.fixture
def run_id(store) -> str:
    run_id, _ = store.create_run(flow_name="churn", source="flows/churn.py", params={"day": 2},
                                 plan_hash="p", plan_json="{}", node_ids=["load", "train", "report"],
                                 trigger={"kind": "cron"}, owner_pid=os.getpid(),
                                 owner_host=socket.gethostname())  # fmt: skip
    gen = store.get_run(run_id).generation
    failed = [AttemptUpdate(attempt=n, status=TaskStatus.FAILED, started_at=T0 + timedelta(seconds=n),
                            ended_at=T0 + timedelta(seconds=n + 0.5), error_type="builtins.ValueError",
                            error_message=ERROR, traceback=f"Traceback {n}\n  File x.py\nValueError")
              for n in (1, 2)]  # fmt: skip
    store.record_tasks(run_id, [
        TaskUpdate("load", TaskStatus.SUCCEEDED, digest="ab" * 32, size=10, fmt="pickle", started_at=T0,
                   ended_at=T0 + timedelta(seconds=0.25),
                   attempts=(AttemptUpdate(attempt=1, status=TaskStatus.SUCCEEDED, started_at=T0,
                                           ended_at=T0 + timedelta(seconds=0.25)),)),
        TaskUpdate("train", TaskStatus.FAILED, started_at=T0, ended_at=T0 + timedelta(seconds=2.5),
                   error_type="builtins.ValueError", error_message=ERROR, attempts=tuple(failed)),
        TaskUpdate("report", TaskStatus.UPSTREAM_FAILED, error_message="upstream 'train' failed"),
    ], generation=gen)  # fmt: skip
    store.set_run_status(run_id, RunStatus.FAILED, error=f"task 'train' failed: ValueError: {ERROR}",
                         generation=gen, counters={"warnings": ["2 rows\ndropped"], "counters": {"rows": 5}})
    return run_id


def test_a_run_reads_with_its_tasks_attempts_and_whole_errors(store, run_id):
    view = read_run_view(store, run_id, artifact_root="/data/artifacts")
    assert (view.flow, view.status, view.params, view.trigger) == ("churn", RunStatus.FAILED, {"day": 2}, {"kind": "cron"})
    assert view.counts == {"SUCCEEDED": 1, "FAILED": 1, "UPSTREAM_FAILED": 1}
    assert [t.node_id for t in view.failed_tasks] == ["train"]
    train = view.task("train")
    assert train.error == ERROR and train.error_text == f"ValueError: {ERROR}"
    assert [(a.attempt, a.duration_s, a.error) for a in train.attempt_log] == [(1, 0.5, ERROR), (2, 0.5, ERROR)]
    assert train.attempt_log[-1].traceback.startswith("Traceback 2")
    assert ERROR in view.error and view.warnings == ("2 rows\ndropped",) and view.counters == {"rows": 5}
    load = view.task("load")
    assert load.output is not None and load.output.digest == "ab" * 32 and load.duration_s == 0.25


def test_json_outputs_are_projections_of_one_document(store, run_id):
    view = read_run_view(store, run_id, artifact_root="/data/artifacts")
    doc = json.loads(json.dumps(view.to_json()))
    assert doc["tasks"][1]["attempt_log"][0]["error"] == ERROR
    assert doc["tasks"][0]["output"] == {"digest": "ab" * 32, "size": 10, "format": "pickle"}
    assert doc["artifact_root"] == "/data/artifacts" and doc["trigger"] == {"kind": "cron"}
    row, outcome = view.row(), view.outcome()
    assert row == {k: doc[k] for k in row}
    assert {k: v for k, v in outcome.items() if k != "tasks"} == {k: doc[k] for k in outcome if k != "tasks"}
    assert outcome["tasks"] == [{k: t[k] for k in ("node_id", "status", "attempts")} for t in doc["tasks"]]
    light = read_run_view(store, run_id, attempts=False)
    assert light.row() == row and all(not t.attempt_log for t in light.tasks)
