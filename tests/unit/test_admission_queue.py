"""Admission by queue, priority and quota: the decision over every reservation, and the queues
file."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayline.errors import UsageError
from rayline.launch.admission_queue import cluster_capacity, decide
from rayline.launch.queue_config import QueuesFile, QueueSpec, load_queues
from rayline.store.reservations import Reservation

QUEUES = QueuesFile(queues=(QueueSpec(name="batch", quota={"cpus": 1}), QueueSpec(name="interactive"),
                            QueueSpec(name="two-runs", max_concurrent_runs=1)))  # fmt: skip
CLUSTER = cluster_capacity([{"CPU": 2.0}])


def r(run: str, node: str, *, priority: int = 0, arrival: float = 0.0, seq: int = 0, held: bool = False,
      queue: str = "default", cpus: float = 1.0, gpus: float = 0.0) -> Reservation:  # fmt: skip
    return Reservation(run, node, queue, priority, arrival, seq, cpus, gpus, 0, held)


def test_higher_priority_waiting_work_goes_before_earlier_work():
    rows = [r("low", f"l{i}", arrival=1, seq=i) for i in range(2, 6)] + [r("high", "h", priority=10, arrival=2)]
    rows.sort(key=lambda x: (-x.priority, x.arrival, x.seq))
    held = [r("low", "l0", held=True, arrival=1), r("low", "l1", held=True, arrival=1, seq=1)]
    full = decide(held + rows, CLUSTER, QUEUES.queue, "high")
    assert full.admit == () and full.position == 1
    assert decide(held[:1] + rows, CLUSTER, QUEUES.queue, "high").admit == ("h",)
    low = decide(held[:1] + rows, CLUSTER, QUEUES.queue, "low")
    assert low.admit == () and (low.behind, low.position) == ("high", 1)


def test_equal_priority_goes_in_arrival_order():
    rows = [r("first", "a", arrival=1), r("second", "b", arrival=2), r("first", "c", arrival=1, seq=1)]
    rows.sort(key=lambda x: (-x.priority, x.arrival, x.seq))
    assert decide(rows, CLUSTER, QUEUES.queue, "first").admit == ("a", "c")
    assert decide(rows, CLUSTER, QUEUES.queue, "second").admit == ()


def test_a_queue_at_its_quota_waits_while_another_queue_runs():
    rows = [r("b", "b0", queue="batch", held=True), r("b", "b1", queue="batch", seq=1),
            r("i", "i0", queue="interactive", arrival=5)]  # fmt: skip
    waiting = decide(rows, CLUSTER, QUEUES.queue, "b")
    assert waiting.admit == () and waiting.behind == "queue batch at its quota"
    assert decide(rows, CLUSTER, QUEUES.queue, "i").admit == ("i0",)


def test_max_concurrent_runs_admits_more_of_a_running_run_but_no_new_run():
    rows = [r("a", "a0", queue="two-runs", held=True), r("a", "a1", queue="two-runs", seq=1),
            r("b", "b0", queue="two-runs", arrival=3)]  # fmt: skip
    assert decide(rows, None, QUEUES.queue, "a").admit == ("a1",)
    assert decide(rows, None, QUEUES.queue, "b").admit == ()


def test_gpu_work_waiting_keeps_its_gpu_but_cpu_work_fills_free_cpus():
    rows = [r("g", "gpu", gpus=1, cpus=0, held=True), r("g2", "gpu2", gpus=1, cpus=0, arrival=1),
            r("c", "cpu", arrival=2)]  # fmt: skip
    cluster = cluster_capacity([{"CPU": 2.0, "GPU": 1.0}])
    assert decide(rows, cluster, QUEUES.queue, "g2").position == 1
    assert decide(rows, cluster, QUEUES.queue, "c").admit == ("cpu",)


def test_the_queues_file_is_validated_with_every_problem(tmp_path: Path):
    good = tmp_path / "queues.yaml"
    good.write_text("queues:\n  - name: nightly\n    priority: 10\n    quota: {cpus: 8, gpus: 2}\n"
                    "    max_concurrent_runs: 2\n    preemptible: true\n")  # fmt: skip
    q = load_queues(good).queue("nightly")
    assert (q.priority, q.quota.cpus, q.quota.gpus, q.max_concurrent_runs, q.preemptible) == (10, 8, 2, 2, True)
    assert load_queues(good).queue(None).name == "default"
    with pytest.raises(UsageError, match="queue 'adhoc' is not declared"):
        load_queues(good).queue("adhoc")
    bad = tmp_path / "bad.yaml"
    bad.write_text("queues:\n  - name: a\n    quota: {cpus: -1}\n  - name: a\n    colour: red\n")
    with pytest.raises(UsageError, match=r"(?s)quota.cpus.*colour"):
        load_queues(bad)


def test_the_example_queues_file_is_valid():
    load_queues(Path(__file__).resolve().parents[2] / "configs" / "queues.yaml")


def test_a_task_cancelled_while_queued_is_returned_cancelled_and_frees_its_place(tmp_path: Path):
    """The runner's timeout backstop cancels a node that may still wait in admission."""
    from rayline import flow, task
    from rayline.engine import compiler
    from rayline.engine.executors.local import LocalExecutor
    from rayline.engine.worker import NodeCall, TaskStatic
    from rayline.launch.queued_executor import QueuedExecutor
    from rayline.store.runs import RunStore

    @task
    def one() -> int:
        return 1

    @flow
    def f():
        return one()

    plan = compiler.compile_plan(f.graph(), {}, cluster=None)
    (node,) = plan.nodes
    with RunStore.open(tmp_path) as store:
        run_id, _ = store.create_run(flow_name="f", source=None, params={}, plan_hash=plan.plan_hash,
                                     plan_json=plan.to_json(), node_ids=[node.id], owner_pid=1, owner_host="h")  # fmt: skip
        ex = QueuedExecutor(LocalExecutor(), store, QUEUES, queue="batch", priority=None, lease_ttl=30)
        call = NodeCall(run_id, node.id, node.template, 0, False, None)
        h = ex.submit(node, TaskStatic(node.spec.fn, node.spec.retry, None, None, 0), call, [])
        ex.cancel([h], force=True)
        assert ex.wait([h], timeout=0.1) == [h]
        assert ex.metas([h]) == [{"node_id": node.id, "status": "CANCELLED"}]
        ex.finish()
