"""Preemption's choices: which held work gives way to a waiting task of higher priority, and
how a preempted attempt joins the attempts of the run that ends the task."""

from __future__ import annotations

from rayline.launch.admission_queue import cluster_capacity, decide
from rayline.launch.preemption import choose_victims, with_preempted
from rayline.launch.queue_config import QueuesFile, QueueSpec
from rayline.store.reservations import Reservation

QUEUES = QueuesFile(queues=(QueueSpec(name="default"), QueueSpec(name="spot", preemptible=True)))
CLUSTER = cluster_capacity([{"CPU": 2.0, "GPU": 1.0}])


def r(run: str, node: str, *, priority: int = 0, arrival: float = 0.0, seq: int = 0, held: bool = False,
      queue: str = "default", cpus: float = 1.0, gpus: float = 0.0, preempt: bool = False) -> Reservation:  # fmt: skip
    return Reservation(run, node, queue, priority, arrival, seq, cpus, gpus, 0, held, preempt)


def test_the_latest_lowest_priority_preemptible_work_gives_way_and_no_more_than_needed():
    held = [r("old", "a", queue="spot", held=True, arrival=1), r("new", "b", queue="spot", held=True, arrival=2)]
    high = r("high", "h", priority=10, arrival=3)
    decision = decide([*held, high], CLUSTER, QUEUES.queue, "high")
    assert decision.admit == () and decision.wants == high
    assert [v.node_id for v in choose_victims([*held, high], CLUSTER, QUEUES.queue, high)] == ["b"]


def test_nothing_is_preempted_outside_preemptible_queues_nor_for_equal_priority():
    held = [r("a", "a", held=True), r("b", "b", held=True, seq=1)]
    assert choose_victims(held, CLUSTER, QUEUES.queue, r("high", "h", priority=10)) == []
    spot = [r("a", "a", queue="spot", held=True, priority=5), r("b", "b", queue="spot", held=True, priority=5)]
    assert choose_victims(spot, CLUSTER, QUEUES.queue, r("same", "h", priority=5)) == []


def test_work_already_asked_to_stop_counts_as_freed_and_gpu_work_is_not_hit_by_a_cpu_need():
    held = [r("a", "a", queue="spot", held=True, preempt=True), r("b", "b", queue="spot", held=True, arrival=2)]
    assert choose_victims(held, CLUSTER, QUEUES.queue, r("high", "h", priority=10)) == []
    gpu = [r("g", "g", queue="spot", held=True, cpus=0.0, gpus=1.0), r("c", "c", held=True, cpus=2.0)]
    assert choose_victims(gpu, CLUSTER, QUEUES.queue, r("high", "h", priority=10)) == []
    needs_gpu = r("high", "h", priority=10, cpus=0.0, gpus=1.0)
    assert [v.node_id for v in choose_victims(gpu, CLUSTER, QUEUES.queue, needs_gpu)] == ["g"]


def test_a_run_learns_which_of_its_tasks_were_asked_to_stop():
    rows = [r("low", "a", queue="spot", held=True, preempt=True), r("low", "b", queue="spot", held=True, seq=1)]
    assert decide(rows, CLUSTER, QUEUES.queue, "low").preempt == ("a",)


def test_preempted_attempts_come_first_and_the_final_ones_are_numbered_after_them():
    earlier = [{"attempt": 1, "status": "PREEMPTED", "started": 1.0, "ended": 2.0}]
    meta = {"status": "SUCCEEDED", "attempts": [{"attempt": 1, "status": "SUCCEEDED", "started": 3.0, "ended": 4.0}]}
    out = with_preempted(meta, earlier)
    assert [(a["attempt"], a["status"]) for a in out["attempts"]] == [(1, "PREEMPTED"), (2, "SUCCEEDED")]
    assert with_preempted(meta, []) is meta
