"""An executor that sends each node to the one it wraps only once admission lets it.

With queues configured (``queue_config``), ``drive`` wraps the run's executor in a
``QueuedExecutor``: ``submit`` only records the node; each ``wait`` first collects what finished
on the wrapped executor, then takes one admission turn (``AdmissionBook.turn``, one transaction
for the whole batch) for the nodes whose inputs are all done, submits the admitted ones (their
upstream handles swapped for the wrapped executor's), and waits on what runs, polling at most
every 0.5 s while this run's work waits. When its place changes it reports
``queued behind <run> (position N)`` (an event for the progress lines, a run event for
``rayline runs show``). The Runner does not know it is there.

In a preemptible queue it takes a turn every 0.5 s while its tasks run, to hear whether
higher-priority work asked for their resources (``preemption.py``): such a task is asked to
stop, cancelled after the queue's grace period if it has not, and waits again; its PREEMPTED
attempt goes before the attempts of the run that ends it (``metas``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rayline.engine.accounting import node_held
from rayline.engine.compiler import PlannedNode
from rayline.engine.worker import NodeCall, Stored, TaskStatic
from rayline.launch import preemption
from rayline.launch.admission_queue import AdmissionBook, Decision, cluster_capacity
from rayline.launch.queue_config import QueuesFile, QueueSpec

POLL_S = 0.5
#: At most this many of a run's ready tasks wait in the reservations table at once (the rest wait
#: here, behind them in plan order): every turn reads every waiting row, so a 1,000-task fan-out
#: would otherwise cost a quadratic number of row reads.
WINDOW = 64


@dataclass(eq=False)
class QueuedHandle:
    """A node submitted to the ``QueuedExecutor``; ``inner`` once admission let it go."""

    node_id: str
    seq: int
    node: PlannedNode
    static: TaskStatic
    call: NodeCall
    inputs: list[Any]
    inner: Any = None
    finished: bool = False
    cancelled: bool = False
    asked: bool = False  # its reservation is in the table
    ended: list[str] = field(default_factory=list)
    submitted: float = 0.0  # when ``inner`` was submitted
    stopping: float | None = None  # when it was asked to stop (preemption)
    cancel_sent: bool = False
    preempted: list[dict[str, Any]] = field(default_factory=list)  # its PREEMPTED attempts
    meta: dict[str, Any] | None = None  # its worker's meta, once fetched


class QueuedExecutor:
    """Wraps an executor (``engine.executors.base.Executor``) with admission by queue."""

    def __init__(self, inner: Any, store: Any, queues: QueuesFile, *, queue: str | None,
                 priority: int | None, lease_ttl: float, on_event: Any = None):  # fmt: skip
        self.inner = inner
        self.name = inner.name
        self.sequential = inner.sequential
        self.store = store
        self.queues = queues
        self.spec: QueueSpec = queues.queue(queue)
        self.priority = self.spec.priority if priority is None else int(priority)
        self.lease_ttl = lease_ttl
        self.on_event = on_event or (lambda kind, data: None)
        self._book: AdmissionBook | None = None
        self._handles: list[QueuedHandle] = []
        self._done: list[str] = []
        self._requeue: list[str] = []
        self._said: tuple[str | None, int | None] = (None, None)

    # ----------------------------------------------------------- delegated
    def start(self) -> None:
        self.inner.start()

    def cluster_nodes(self) -> list[dict[str, float]] | None:
        return self.inner.cluster_nodes()

    def prepare(self, nodes: list[PlannedNode]) -> None:
        self.inner.prepare(nodes)

    def lost(self) -> str | None:
        return self.inner.lost()

    def release(self, handles: list[Any]) -> None:
        self.inner.release([h.inner for h in handles if h.inner is not None])

    def metas(self, handles: list[Any]) -> list[dict[str, Any]]:
        ran = iter(self.inner.metas([h.inner for h in handles if h.inner is not None and h.meta is None]))
        return [{"node_id": h.node_id, "status": "CANCELLED"} if h.inner is None
                else preemption.with_preempted(h.meta if h.meta is not None else next(ran), h.preempted)
                for h in handles]  # fmt: skip

    def finish(self) -> None:
        try:
            if self._book is not None:
                self._book.close()
        finally:
            self._book = None
            self.inner.finish()

    # ----------------------------------------------------------- admission
    def submit(self, node: PlannedNode, static: TaskStatic, call: NodeCall, inputs: list[Any]) -> QueuedHandle:
        if self._book is None:
            self._book = AdmissionBook(self.store, call.run_id, self.spec, self.priority, self.lease_ttl,
                                       self.queues.queue, cluster_capacity(self.inner.cluster_nodes()))  # fmt: skip
        h = QueuedHandle(node.id, len(self._handles), node, static, call, list(inputs))
        self._handles.append(h)
        return h

    def cancel(self, handles: list[Any], *, force: bool = False) -> None:
        running = [h.inner for h in handles if h.inner is not None and not h.finished]
        for h in handles:
            if h.inner is not None and not h.finished:  # the runner no longer waits for it
                h.finished = True
                self._done.append(h.node_id)
            if h.inner is None and not h.cancelled:
                h.cancelled = True
                if h.asked:
                    self._done.append(h.node_id)
        if running:
            self.inner.cancel(running, force=force)

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        never = [h for h in handles if h.cancelled and h.inner is None]  # cancelled while queued
        if never:
            return never
        while True:
            finished = self._collect(handles, 0.0)
            if finished:
                return finished
            waiting = self._admit() or self.spec.preemptible
            running = [h for h in handles if h.inner is not None and not h.finished]
            left = deadline - time.monotonic()
            if running:
                finished = self._collect(handles, max(min(left, POLL_S if waiting else left), 0.0))
                if finished or left <= 0:
                    return finished
            elif left <= 0:
                return []
            else:
                time.sleep(min(left, POLL_S))

    def _collect(self, handles: list[QueuedHandle], timeout: float) -> list[QueuedHandle]:
        by_inner = {id(h.inner): h for h in handles if h.inner is not None}
        if not by_inner:
            return []
        done = [by_inner[id(i)] for i in self.inner.wait([h.inner for h in by_inner.values()], timeout)]
        fresh = [h for h in done if h.meta is None]
        for h, meta in zip(fresh, self.inner.metas([h.inner for h in fresh]) if fresh else [], strict=True):
            h.meta = meta  # what ``metas`` gives the runner: fetched once
        done = [h for h in done if not self._stopped(h)]
        for h in done:
            if not h.finished:
                h.finished = True
                self._done.append(h.node_id)
        return done

    def _stopped(self, h: QueuedHandle) -> bool:
        """``h`` ended after it was asked to stop (or stopped itself with ``TaskPreempted``, e.g.
        on a draining node): unless it finished its work anyway, record its PREEMPTED attempt
        and queue it again (True)."""
        meta = h.meta or {}
        if meta.get("status") in ("SUCCEEDED", "CACHED", "SKIPPED", "UPSTREAM_FAILED"):
            return False
        last = (meta.get("attempts") or [{}])[-1]
        if h.stopping is None and last.get("error_type") != "rayline.errors.TaskPreempted":
            return False  # it failed on its own (a task on a draining node stops by itself)
        h.meta = None
        run_id = h.call.run_id
        h.preempted.append(preemption.preempted_attempt(meta, h.submitted, None))
        preemption.forget(run_id, h.node_id)
        self.inner.release([h.inner])
        h.inner, h.stopping, h.cancel_sent = None, None, False
        self._requeue.append(h.node_id)
        message = f"task {h.node_id} preempted: queued again, it resumes once admitted"
        self.on_event("preempted", {"run_id": run_id, "node_id": h.node_id, "message": message})
        self.store.record_event(run_id, "preempted", message=message)
        return True

    def _preempt(self, node_ids: tuple[str, ...]) -> None:
        """Ask these running tasks to stop; cancel those past the queue's grace period."""
        now = time.monotonic()
        for h in self._handles:
            if h.inner is None or h.finished:
                continue
            if h.node_id in node_ids and h.stopping is None and self.inner.name == "ray":
                h.stopping = now
                preemption.ask_to_stop(h.call.run_id, h.node_id)
                self.on_event("preempting", {"run_id": h.call.run_id, "node_id": h.node_id,
                                             "message": f"asking task {h.node_id} to stop for higher-priority work"})
            if h.stopping is not None and not h.cancel_sent and now - h.stopping >= self.spec.preempt_grace_s:
                h.cancel_sent = True
                self.inner.cancel([h.inner], force=True)

    def _admit(self) -> bool:
        """One admission turn; True while some of this run's ready work still waits."""
        ready = [h for h in self._handles if h.inner is None and not h.cancelled and self._inputs_done(h)]
        asked = sum(1 for h in ready if h.asked)
        new = [h for h in ready if not h.asked][: max(WINDOW - asked, 0)]
        if not ready and not self._done and not self._requeue and not self.spec.preemptible:
            return False
        assert self._book is not None
        decision = self._book.turn([(h.node_id, h.seq, self._demand(h.node)) for h in new], self._done,
                                   self._requeue)  # fmt: skip
        self._done, self._requeue = [], []
        for h in new:
            h.asked = True
        admitted = set(decision.admit)
        for h in ready:
            if h.node_id in admitted:
                inputs = [i if isinstance(i, Stored) else i.inner for i in h.inputs]
                h.inner = self.inner.submit(h.node, h.static, h.call, inputs)
                h.submitted = time.time()
        if decision.preempt or any(h.stopping is not None for h in self._handles):
            self._preempt(decision.preempt)
        self._report(decision, self._book.run_id)
        return len(admitted) < len(ready)

    def _demand(self, node: PlannedNode) -> tuple[float, float, int | None]:
        """What ``node`` reserves: its own resources and its whole gang's (``node_held``), but
        never more than the cluster has: a Tune sweep's concurrent trials beyond it just run
        fewer at once (a gang that can never fit was refused before the run started)."""
        cpus, gpus, memory = node_held(node)
        cap = self._book.capacity if self._book is not None else None
        if cap is None:
            return cpus, gpus, memory
        memory = int(min(memory, cap["memory_bytes"])) if memory and cap["memory_bytes"] else memory
        return min(cpus, cap["cpus"]), min(gpus, cap["gpus"]), memory

    @staticmethod
    def _inputs_done(h: QueuedHandle) -> bool:
        return all(isinstance(i, Stored) or i.finished for i in h.inputs)

    def _report(self, decision: Decision, run_id: str) -> None:
        said = (decision.behind, decision.position)
        if said == self._said:
            return
        self._said = said
        if decision.position is None:
            return
        message = f"queued behind {decision.behind} (position {decision.position})"
        self.on_event("queued", {"run_id": run_id, "behind": decision.behind,
                                 "position": decision.position, "message": message})  # fmt: skip
        self.store.record_event(run_id, "queued", message=message)


def queue_gate(session: Any, plan: Any, executor: Any, on_event: Any = None) -> Any:
    """``executor`` wrapped in a ``QueuedExecutor`` when queues are configured
    (``$RAYLINE_QUEUES``); else ``executor`` itself, and admission costs nothing."""
    from rayline.launch.queue_config import configured_queues

    queues = configured_queues()
    if queues is None:
        return executor
    graph = plan.graph
    return QueuedExecutor(executor, session.runs, queues, queue=getattr(graph, "queue", None),
                          priority=getattr(graph, "priority", None), lease_ttl=session.settings.lease_ttl,
                          on_event=on_event)  # fmt: skip
