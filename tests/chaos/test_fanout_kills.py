"""Random ``kill -9`` during a fan-out (issue 12): of the driver (``rayline run`` / ``rayline
resume`` on the session Ray, after a random number of commits or while a random task is mid-body)
and of the Ray worker process running a random task. Each round starts a fresh run of
``flows/fanout.py`` and kills it one to three times; after each kill the test resumes until the
run SUCCEEDS. Then:

- every output is the one a clean run of the same flow gave: the same digest (so byte-identical
  bytes) and the same value, and each stored object still verifies;
- each committed task ran once: a task's ``ledger`` line is written when its body completes, and
  a task that was committed when a kill happened (SUCCEEDED in the run store) never adds one
  afterwards (tasks killed mid-body, or done but not yet committed, may run again).

Processes are found by the pid a task wrote (``held-<key>``) or the one the test started, and
stopped by that pid; tasks and the test coordinate through files, never sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from rayline.config import Settings
from rayline.launch.session import Session
from rayline.store.runs import RunStore
from rayline.store.states import RunStatus, TaskStatus
from tests.chaos.conftest import ROUNDS, Chaos
from tests.coordination import pid_alive, read_pid, wait_for
from tests.e2e.test_driver_faults import Driver, driver_env

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

FANOUT = f"{Path(__file__).parent / 'flows' / 'fanout.py'}:fanout"
TASKS = int(os.environ.get("RAYLINE_CHAOS_TASKS", "16"))
KILLS = ("driver after commits", "driver mid-task", "worker mid-task")


# ---------------------------------------------------------------------------- helpers
def key_of(node_id: str) -> str | None:
    """The ledger key of a node (``work[3]`` -> ``work-3``); None for the map node itself."""
    if node_id.startswith("work["):
        return f"work-{node_id[5:-1]}"
    return None if node_id == "work" else node_id


ALL_KEYS = ["source", *(f"work-{i}" for i in range(TASKS)), "combine"]


def ledger_counts(folder: Path) -> Counter:
    path = folder / "ledger"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def the_run_id(home: Path) -> str | None:
    if not (home / "runs.db").exists():
        return None  # the driver has not created its store yet
    with RunStore(Settings(home=home).run_store_url) as store:
        runs = store.list_runs()
    assert len(runs) <= 1, runs
    return runs[0].run_id if runs else None


def tasks_of(home: Path, run_id: str | None) -> list:
    if run_id is None:
        return []
    with RunStore(Settings(home=home).run_store_url) as store:
        return store.get_tasks(run_id)


def committed(home: Path, run_id: str | None) -> set[str]:
    """Keys of the tasks the run store holds as SUCCEEDED (their output committed)."""
    return {k for t in tasks_of(home, run_id) if t.status == TaskStatus.SUCCEEDED and (k := key_of(t.node_id))}


def run_status(home: Path, run_id: str) -> RunStatus:
    with RunStore(Settings(home=home).run_store_url) as store:
        return store.get_run(run_id).status


def outputs(home: Path, run_id: str) -> dict[str, tuple[str, object]]:
    """Every task's (digest, value), each object verified first."""
    out = {}
    with Session(Settings(home=home), executor="local") as session:
        for t in tasks_of(home, run_id):
            if key_of(t.node_id) is None:
                continue
            ok = t.digest and session.artifacts.verify(t.digest)
            assert ok, f"{t.node_id}: output {t.digest} missing or damaged"
            out[t.node_id] = (t.digest, session.artifacts.get(t.digest))
    return out


def start(home: Path, logs: Path, folder: Path, seed: int, ray_address: str, run_id: str | None) -> Driver:
    if run_id is None:
        return Driver(home, logs, FANOUT, "-p", f"folder={folder}", "-p", f"n={TASKS}", "-p", f"seed={seed}",
                      "--address", ray_address, "--json", "-q", env=driver_env(home))  # fmt: skip
    return Driver(home, logs, run_id, "--address", ray_address, "--json", "-q", env=driver_env(home), verb="resume")


def finish(driver: Driver, timeout: float = 240) -> int:
    try:
        return driver.proc.wait(timeout=timeout)
    finally:
        driver.stop()


def kill_and_wait(pid: int, what: str) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return  # it had already ended
    wait_for(lambda: not pid_alive(pid), 60, f"{what} (pid {pid}) to die")


# ---------------------------------------------------------------------------- one round
class Round:
    """One run of the fan-out, killed as ``plan`` says, resumed until it SUCCEEDS."""

    def __init__(self, base: Path, chaos: Chaos, ray_address: str, flow_seed: int, plan: list[str]):
        self.home, self.folder, self.logs = base / "home", base / "work", base / "logs"
        self.folder.mkdir(parents=True)
        self.chaos, self.ray_address, self.flow_seed, self.plan = chaos, ray_address, flow_seed, plan
        self.run_id: str | None = None
        self.snapshots: list[tuple[str, set[str], Counter]] = []  # (what, committed, ledger)
        self.kills = 0

    def snapshot(self, what: str) -> None:
        self.run_id = self.run_id or the_run_id(self.home)
        self.snapshots.append((what, committed(self.home, self.run_id), ledger_counts(self.folder)))

    def play(self) -> str:
        attempt = 0
        while True:
            attempt += 1
            assert attempt <= len(self.plan) + 3, f"the run did not succeed after {attempt - 1} drivers"
            kill = self.plan[attempt - 1] if attempt <= len(self.plan) else None
            with self.chaos.step(f"driver {attempt} ({'resume' if self.run_id else 'run'}), kill: {kill}"):
                code = self.one_driver(attempt, kill)
                self.run_id = self.run_id or the_run_id(self.home)
                assert self.run_id is not None, "no run was recorded"
                if code == 0 and run_status(self.home, self.run_id) == RunStatus.SUCCEEDED:
                    return self.run_id
                assert kill is not None or code != 0, "the driver exited 0 with the run not SUCCEEDED"

    def one_driver(self, attempt: int, kill: str | None) -> int | None:
        rng = self.chaos.rng
        open_keys = [k for k in ALL_KEYS if k not in committed(self.home, self.run_id)]
        # every task may be committed with the run not ended (a kill between the last commit and
        # the run's end): then there is no task to hold, and the resume only ends the run
        held = rng.choice(open_keys) if kill in ("driver mid-task", "worker mid-task") and open_keys else None
        if held:
            (self.folder / f"hold-{held}").touch()
            (self.folder / f"held-{held}").unlink(missing_ok=True)
        before = sum(ledger_counts(self.folder).values())
        more = rng.randint(1, max(1, len(open_keys) - 1))
        driver = start(self.home, self.logs / str(attempt), self.folder, self.flow_seed, self.ray_address, self.run_id)
        try:
            if kill == "driver after commits":
                wait_for(lambda: sum(ledger_counts(self.folder).values()) >= before + more
                         or driver.proc.poll() is not None, 240, f"{more} more tasks to complete")  # fmt: skip
                self.kill_driver(driver, f"after {more} more completions")
            elif held:
                pid = wait_for(lambda: read_pid(self.folder / f"held-{held}") or driver.proc.poll() is not None,
                               240, f"task {held} to start and hold")  # fmt: skip
                assert driver.proc.poll() is None, f"the driver ended early: {driver.stderr()[-3000:]}"
                if kill == "driver mid-task":
                    self.kill_driver(driver, f"while {held} ran in pid {pid}")
                    wait_for(lambda: not pid_alive(pid), 60, f"Ray to stop the dead driver's task {held} (pid {pid})")
                else:
                    self.snapshot(f"worker of {held} (pid {pid}) killed")
                    kill_and_wait(pid, f"the worker running {held}")
                    self.kills += 1
                (self.folder / f"hold-{held}").unlink()
            code = finish(driver)
        except BaseException:
            if held:
                (self.folder / f"hold-{held}").unlink(missing_ok=True)
            driver.stop()
            raise
        if code not in (0, -signal.SIGKILL):  # a run that failed: its JSON says why, resume goes on
            doc = json.loads(driver.stdout() or "{}")
            assert doc.get("status") in ("FAILED", "INTERRUPTED"), (code, driver.stdout(), driver.stderr()[-3000:])
        return code

    def kill_driver(self, driver: Driver, when: str) -> None:
        if driver.proc.poll() is not None:
            return  # it finished first: nothing to kill this time
        kill_and_wait(driver.pid, "the driver")
        driver.proc.wait(timeout=30)
        self.kills += 1
        self.snapshot(f"driver (pid {driver.pid}) killed {when}")


# ---------------------------------------------------------------------------- the test
@pytest.mark.timeout(300 + 300 * ROUNDS)
def test_a_fanout_killed_at_random_resumes_to_a_clean_runs_outputs_each_committed_task_once(
    ray_address, tmp_path, chaos
):
    flow_seed = chaos.rng.randrange(1000)
    clean = Round(tmp_path / "clean", chaos, ray_address, flow_seed, [])
    with chaos.step("the clean run"):
        expected = outputs(clean.home, clean.play())
    assert len(expected) == TASKS + 2
    assert set(ledger_counts(clean.folder).values()) == {1}

    for r in range(ROUNDS):
        plan = [chaos.rng.choice(KILLS) for _ in range(chaos.rng.randint(1, 3))]
        with chaos.step(f"round {r + 1} of {ROUNDS}, plan {plan}"):
            started = time.monotonic()
            game = Round(tmp_path / f"round-{r}", chaos, ray_address, flow_seed, plan)
            run_id = game.play()
            got = outputs(game.home, run_id)
            assert {n: d for n, (d, _) in got.items()} == {n: d for n, (d, _) in expected.items()}
            assert got == expected  # the same values too (pure functions: equal digests say it)

            final = ledger_counts(game.folder)
            assert set(final) == set(ALL_KEYS), sorted(set(ALL_KEYS) - set(final))
            for what, done, counts in game.snapshots:
                again = {k: (counts[k], final[k]) for k in done if final[k] != counts[k]}
                assert not again, f"committed before '{what}', yet ran again (ledger before, after): {again}"
            print(f"round {r + 1}: {game.kills} kills ({plan}), {sum(final.values()) - len(ALL_KEYS)} "
                  f"re-runs of uncommitted tasks, {time.monotonic() - started:.0f} s")  # fmt: skip
