"""The ``Runner``: executes a ``Plan`` through an executor and records every state change.

All nodes are submitted up front in topological order, upstream handles as arguments, so Ray
orders the work; the driver loop only waits for small meta objects, records them in batches
(one transaction per loop turn), marks the descendants of a failed node UPSTREAM_FAILED while
independent branches finish, enforces timeouts as a backstop, and turns Ctrl-C, SIGTERM or a
cancel requested through the run store (``Heartbeat.cancelled``) into CANCELLED.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from rayline.engine.accounting import with_usage
from rayline.engine.compiler import Plan, PlannedNode
from rayline.engine.conditions import not_taken
from rayline.engine.executors.base import Executor
from rayline.engine.expand import base_node_id, expand_ready
from rayline.engine.heartbeat import Heartbeat
from rayline.engine.lineage import RunLineage
from rayline.engine.task_records import (
    Report,
    error_line,
    old_code_hashes,
    refused_meta,
    timeout_meta,
    update_from_meta,
)
from rayline.engine.worker import NodeCall, Stored, TaskStatic
from rayline.errors import LeaseLostError, StoreError
from rayline.store.model_writes import ModelWriteConflict, model_rows
from rayline.store.run_events import find_lost_outputs
from rayline.store.runs import TaskUpdate
from rayline.store.states import RunStatus, TaskStatus

log = logging.getLogger("rayline.runner")

EventSink = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class RunOutcome:
    run_id: str
    status: RunStatus
    created: bool = True


class Runner:
    def __init__(
        self,
        run_store: Any,
        artifacts: Any,
        executor: Executor,
        *,
        lease_ttl: float = 30.0,
        heartbeat_interval: float = 5.0,
        inline_limit: int = 1024 * 1024 * 1024,
        on_event: EventSink | None = None,
    ):
        self.store = run_store
        self.artifacts = artifacts
        self.executor = executor
        self.lease_ttl = lease_ttl
        self.heartbeat_interval = heartbeat_interval
        self.inline_limit = inline_limit
        self.on_event = on_event or (lambda kind, data: None)

    # ------------------------------------------------------------------ entry points
    def run(self, plan: Plan, *, run_key: str | None = None, trigger: dict[str, Any] | None = None) -> RunOutcome:
        run_id, created = self.store.create_run(
            flow_name=plan.graph.name,
            source=plan.graph.source,
            params=plan.jsonable_params(),
            plan_hash=plan.plan_hash,
            plan_json=plan.to_json(),
            node_ids=[n.id for n in plan.nodes],
            run_key=run_key,
            trigger=trigger,
            owner_pid=os.getpid(),
            owner_host=socket.gethostname(),
        )
        if not created:
            existing = self.store.get_run(run_id)
            return RunOutcome(run_id, existing.status, created=False)
        status = self._execute(plan, run_id, generation=1, adopted={})
        return RunOutcome(run_id, status)

    def resume(self, plan: Plan, run_id: str) -> RunOutcome:
        run = self.store.get_run(run_id)
        tasks = self.store.get_tasks(run_id)
        lost = find_lost_outputs(self.store, self.artifacts, run_id, tasks)  # each one an event
        if run.status.ok and not lost:
            return RunOutcome(run_id, run.status, created=False)
        adopted: dict[str, str] = {}
        code = {n.id: n.spec.code_hash for n in plan.nodes}
        old_plan = old_code_hashes(self.store.get_plan(run.plan_hash))
        redo = lost.union(*(plan.descendants(n) for n in lost))  # lost, and what depends on it
        for t in tasks:
            base = base_node_id(t.node_id)  # an item of a map (square[3]) is its map's code
            if (
                t.status.ok
                and t.digest
                and base in code
                and old_plan.get(base, code[base]) == code[base]
                and t.node_id not in redo
                and base not in redo
            ):
                adopted[t.node_id] = t.digest
        generation = self.store.take_over(run_id, owner_pid=os.getpid(), owner_host=socket.gethostname(),
                                          lease_ttl=self.lease_ttl)
        self.on_event("resume", {"run_id": run_id, "adopted": sorted(adopted)})
        status = self._execute(plan, run_id, generation=generation, adopted=adopted)
        return RunOutcome(run_id, status)

    # ------------------------------------------------------------------ the loop
    def _execute(self, plan: Plan, run_id: str, *, generation: int, adopted: dict[str, str]) -> RunStatus:
        ex = self.executor
        states: dict[str, TaskStatus] = {}
        pending_updates: list[TaskUpdate] = []
        handles: dict[str, Any] = {}
        waiting_on: dict[str, int] = {}
        deadlines: dict[str, float] = {}
        timed_out: set[str] = set()
        first_error: str | None = None
        skip_reason: str | None = None
        branch: set[str] = set()  # SKIPPED because a condition was false, and their descendants
        for nid in adopted:
            states[nid] = TaskStatus.SUCCEEDED
        try:
            previous = self._previous_watermarks(plan.graph.name, run_id)
            record = self.store.get_run(run_id)
            report, lineage = Report(record.counters), RunLineage(plan, record)
            self.on_event("run_started", {"run_id": run_id, "plan": plan, "adopted": dict(adopted)})
        except KeyboardInterrupt as exc:  # the run is ours already: record the cancel
            return self._cancel(plan, run_id, generation, {}, states, [], _interrupted(exc))
        with Heartbeat(self.store, run_id, generation, self.heartbeat_interval, ex) as lease:
            try:
                reset = [TaskUpdate(node_id=n.id, status=TaskStatus.PENDING) for n in plan.nodes if n.id not in adopted]
                if reset and adopted:
                    self.store.record_tasks(run_id, reset, generation=generation)
                ex.prepare([n for n in plan.nodes if n.id not in adopted])
                statics: dict[int, TaskStatic] = {}
                digests, pending = dict(adopted), {}

                def submit_ready() -> None:
                    # Every node whose inputs were submitted; a map node once its iterable is
                    # stored (engine/expand.py), its items inserted as task records first.
                    nonlocal plan, order, lineage
                    plan, new = expand_ready(plan, lambda u: states.get(u, TaskStatus.PENDING).ok, digests, self.artifacts)
                    if new:
                        self.store.record_tasks(run_id, [], generation=generation, new=new)
                        self.on_event("tasks_added", {"node_ids": new})
                        lineage = RunLineage(plan, record)
                    order = {n.id: i for i, n in enumerate(plan.nodes)}
                    for node in plan.nodes:
                        if node.id in handles or node.id in adopted or node.mapped or node.id in states:
                            continue
                        if any(u not in handles and u not in adopted for u in node.inputs):
                            continue
                        if node.spec.registry and not all(states.get(u, TaskStatus.PENDING).ok for u in node.inputs):
                            continue  # it reads the registry once its upstream tasks committed theirs
                        inputs = [handles[u] if u in handles else Stored(adopted[u]) for u in node.inputs]
                        static = statics.get(id(node.spec))
                        if static is None:
                            static = statics[id(node.spec)] = self._static(node)
                        call = self._call(node, run_id, plan.graph.name, previous, lineage.of(node.id),
                                          digest_needed=any(plan.node(d).spec.cache.enabled
                                                            for d in plan.downstream.get(node.id, ())))
                        if node.spec.registry:  # the registry's rows as of now travel with the call
                            with self.store.transaction(read=True) as conn:
                                call = replace(call, registry_rows=model_rows(conn))
                        handles[node.id] = pending[node.id] = ex.submit(node, static, call, inputs)
                        left = sum(1 for u in node.inputs if not states.get(u, TaskStatus.PENDING).ok)
                        waiting_on[node.id] = left
                        if left == 0:
                            self._ready(node, pending_updates, deadlines)

                order: dict[str, int] = {}
                submit_ready()
                while pending:
                    if lease.lost:
                        ex.cancel(list(pending.values()), force=True)
                        raise lease.lost
                    if lease.compute_lost:
                        return self._compute_lost(plan, run_id, generation, lease.compute_lost, states, pending_updates)
                    if lease.cancelled:
                        return self._cancel(plan, run_id, generation, handles, states, pending_updates, lease.cancelled)
                    with lease.interruptible() if ex.sequential else nullcontext():
                        done = [h for h in ex.wait(list(pending.values()), timeout=0.1) if h.node_id in pending]
                    done.sort(key=lambda h: order[h.node_id])  # parents before children
                    for h in done:
                        pending.pop(h.node_id)
                    for h, meta in zip(done, ex.metas(done), strict=True):
                        nid = h.node_id
                        status = TaskStatus(meta.get("status", "FAILED"))
                        if nid in timed_out:
                            status = TaskStatus.FAILED
                            meta = timeout_meta(plan.node(nid), meta)
                        if states.get(nid) in (TaskStatus.UPSTREAM_FAILED, TaskStatus.SKIPPED):
                            continue
                        update = with_usage(update_from_meta(nid, status, meta), plan.node(nid))
                        if status.ok and meta.get("registry_writes"):  # committed with its success
                            try:
                                self.store.record_tasks(run_id, [*pending_updates, update], generation=generation,
                                                        model_writes=meta["registry_writes"])  # fmt: skip
                                pending_updates, update = [], None
                            except ModelWriteConflict as e:
                                status, meta = TaskStatus.FAILED, refused_meta(meta, str(e))
                                update = with_usage(update_from_meta(nid, status, meta), plan.node(nid))
                        states[nid] = status
                        if meta.get("digest"):
                            digests[nid] = meta["digest"]
                        report.add(nid, meta)
                        if update is not None:
                            pending_updates.append(update)
                        self.on_event("task_finished", {"node_id": nid, "status": status, "meta": meta})
                        if status == TaskStatus.UPSTREAM_FAILED:
                            continue
                        if status.ok:
                            for d in plan.downstream.get(nid, ()):
                                if d in waiting_on:
                                    waiting_on[d] -= 1
                                    if waiting_on[d] == 0 and d in pending:
                                        self._ready(plan.node(d), pending_updates, deadlines)
                        else:
                            skipped = status == TaskStatus.SKIPPED
                            if skipped and not_taken(meta):  # a condition was false: not a skip of the run
                                branch.add(nid)
                            elif skipped:
                                skip_reason = skip_reason or f"task '{nid}': {meta.get('skip_reason', '')}"
                            else:
                                first_error = first_error or error_line(nid, meta)
                            after = TaskStatus.SKIPPED if skipped else TaskStatus.UPSTREAM_FAILED
                            why = f"upstream '{nid}' {'skipped' if skipped else 'did not succeed'}"
                            # Not yet finished, or finished in this same batch (Ray fails a
                            # child together with its parent): either way it never ran.
                            doomed = [d for d in plan.descendants(nid) if d not in states or not states[d].terminal]
                            if nid in branch:
                                branch.update(doomed)
                            for d in doomed:
                                states[d] = after
                                pending_updates.append(TaskUpdate(node_id=d, status=after, error_message=why))
                                self.on_event("task_finished", {"node_id": d, "status": after, "meta": {}})
                            ex.cancel([pending.pop(d) for d in doomed if d in pending])
                    now = time.monotonic()
                    for nid in [n for n, t in deadlines.items() if t < now and n in pending and n not in timed_out]:
                        timed_out.add(nid)
                        ex.cancel([pending[nid]], force=True)
                    if pending_updates:
                        self.store.record_tasks(run_id, pending_updates, generation=generation)
                        pending_updates = []
                    if done:
                        submit_ready()
            except KeyboardInterrupt as exc:
                return self._cancel(plan, run_id, generation, handles, states, pending_updates,
                                    lease.cancelled or _interrupted(exc))
            except LeaseLostError:
                raise
            except BaseException as exc:
                self._crash(run_id, generation, exc, handles, states)
                raise
            finally:
                ex.release(list(handles.values()))
                ex.finish()

        finals = [states.get(n.id, TaskStatus.PENDING) for n in plan.nodes if n.id not in branch]
        ok = all(s.ok for s in finals)
        final = RunStatus.FAILED
        if ok:
            final = RunStatus.SUCCEEDED_WITH_WARNINGS if report.warnings else RunStatus.SUCCEEDED
        elif all(s.ok or s == TaskStatus.SKIPPED for s in finals):
            final, first_error = RunStatus.SKIPPED, skip_reason
        self.store.set_run_status(run_id, final, error=first_error, generation=generation, counters=report.as_dict(ok))
        self.on_event("run_finished", {"run_id": run_id, "status": final, "error": first_error})
        return final

    def _ready(self, node: PlannedNode, updates: list[TaskUpdate], deadlines: dict[str, float]) -> None:
        # Ready = every input is done, so Ray can start it now (it may still queue for a CPU).
        updates.append(TaskUpdate(node_id=node.id, status=TaskStatus.RUNNING, started_at=datetime.now(UTC)))
        self.on_event("task_started", {"node_id": node.id})
        spec = node.spec
        if spec.timeout and not self.executor.sequential:  # a sequential one waits its turn first
            tries = spec.retry.retries + 1
            backoff = sum(spec.retry.backoff.delay(i) for i in range(1, tries))
            deadlines[node.id] = time.monotonic() + tries * spec.timeout + backoff + 10.0

    def _static(self, node: PlannedNode) -> TaskStatic:
        spec = node.spec
        return TaskStatic(spec.fn, spec.retry, spec.timeout, self.artifacts, self.inline_limit)

    def _previous_watermarks(self, flow_name: str, run_id: str) -> dict[str, Any]:
        for r in self.store.list_runs(limit=50, flow_name=flow_name):
            if r.run_id != run_id and r.status.ok:
                return dict(r.counters.get("watermarks", {}))
        return {}

    def _call(self, node: PlannedNode, run_id: str, flow_name: str = "", previous: dict | None = None,
              lineage: dict | None = None, *, digest_needed: bool = False) -> NodeCall:
        cache_base = None
        if node.spec.cache.enabled:
            h = hashlib.sha256(node.spec.code_hash.encode())
            h.update(repr(node.template).encode())
            h.update(str(node.spec.cache.version).encode())
            cache_base = h.hexdigest()
        return NodeCall(
            run_id=run_id,
            node_id=node.id,
            template=node.template,
            n_inputs=len(node.inputs),
            persist=node.persist,
            cache_base=cache_base,
            flow_name=flow_name,
            previous=previous or None, lineage=lineage, digest_needed=digest_needed,
        )

    def _cancel(self, plan, run_id, generation, handles, states, updates, why: str) -> RunStatus:
        self.executor.cancel(list(handles.values()))
        for n in plan.nodes:
            if not states.get(n.id, TaskStatus.PENDING).terminal:
                states[n.id] = TaskStatus.CANCELLED
                updates.append(TaskUpdate(node_id=n.id, status=TaskStatus.CANCELLED, ended_at=datetime.now(UTC)))
        self.store.record_tasks(run_id, updates, generation=generation)
        self.store.set_run_status(run_id, RunStatus.CANCELLED, error=why, generation=generation)
        self.on_event("run_finished", {"run_id": run_id, "status": RunStatus.CANCELLED, "error": "cancelled"})
        return RunStatus.CANCELLED

    def _compute_lost(self, plan, run_id, generation, why, states, updates) -> RunStatus:
        """The compute is gone (its work with it): record what had not finished INTERRUPTED and
        the run FAILED with the reason, resumable once the compute is back."""
        error = f"{why}; the run can be resumed with `rayline resume {run_id}` once it is back"
        for n in plan.nodes:
            if not states.get(n.id, TaskStatus.PENDING).terminal:
                states[n.id] = TaskStatus.INTERRUPTED
                updates.append(TaskUpdate(node_id=n.id, status=TaskStatus.INTERRUPTED, error_message=why,
                                          ended_at=datetime.now(UTC)))
        self.store.record_tasks(run_id, updates, generation=generation)
        self.store.set_run_status(run_id, RunStatus.FAILED, error=error, generation=generation)
        self.on_event("run_finished", {"run_id": run_id, "status": RunStatus.FAILED, "error": error})
        return RunStatus.FAILED

    def _crash(self, run_id, generation, exc, handles, states) -> None:
        """The driver itself failed (not a task): stop the work and leave the run resumable."""
        try:
            self.executor.cancel(list(handles.values()), force=True)
            self.store.set_run_status(
                run_id, RunStatus.INTERRUPTED, error=f"driver error: {type(exc).__name__}: {exc}", generation=generation
            )
        except (StoreError, Exception) as inner:
            log.error("could not record the interruption of run %s: %s", run_id, inner)


def _interrupted(exc: KeyboardInterrupt) -> str:  # launch names SIGTERM; Ctrl-C names none
    return f"cancelled ({exc.args[0] if exc.args else 'SIGINT'})"
