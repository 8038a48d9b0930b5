"""The run store: idempotent run keys, fenced leases, stale-owner detection, SQLite under
contention and SIGKILL (F3, F11, F25, F26), schema versioning and file permissions."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rayline.errors import LeaseLostError, StoreError
from rayline.store import schema, sql
from rayline.store.runs import AttemptUpdate, RunStore, TaskUpdate
from rayline.store.sql import sqlite_url
from rayline.store.states import RunStatus, TaskStatus
from tests.coordination import at_once

HOST = socket.gethostname()
FORK = mp.get_context("fork")


def create(store: RunStore, nodes=("load", "train"), **overrides) -> str:
    args = dict(
        flow_name="churn",
        source="flows/churn.py",
        params={"day": "2026-01-02"},
        plan_hash="plan-1",
        plan_json='{"nodes": ["load", "train"]}',
        node_ids=list(nodes),
        owner_pid=os.getpid(),
        owner_host=HOST,
    )
    args.update(overrides)
    run_id, created = store.create_run(**args)
    assert created
    return run_id


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.01)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def store(store_url: str):
    """The run store on SQLite and on PostgreSQL (conftest's ``store_url``)."""
    with RunStore(store_url) as s:
        yield s


@pytest.fixture
def sqlite_store(home: Path):
    with RunStore.open(home) as s:
        yield s


# --------------------------------------------------------------------------- creating runs


def test_create_run_records_run_plan_lease_and_pending_tasks(store: RunStore):
    before = datetime.now(UTC)
    run_id = create(store, nodes=("load", "clean", "train"), trigger={"type": "cron"})

    run = store.get_run(run_id)
    assert run.flow_name == "churn" and run.status == RunStatus.RUNNING
    assert run.params == {"day": "2026-01-02"} and run.trigger == {"type": "cron"}
    assert run.owner_pid == os.getpid() and run.owner_host == HOST and run.generation == 1
    assert run.created_at.tzinfo is not None and run.created_at >= before - timedelta(seconds=1)
    assert run.heartbeat_at is not None and run.ended_at is None and run.counters == {}
    assert store.get_plan("plan-1") == '{"nodes": ["load", "train"]}'
    assert store.get_plan("unknown") is None
    tasks = store.get_tasks(run_id)
    assert [t.node_id for t in tasks] == ["load", "clean", "train"]
    assert {t.status for t in tasks} == {TaskStatus.PENDING}
    assert all(t.attempts == 0 for t in tasks)


def test_same_run_key_returns_the_existing_run_and_writes_nothing(store: RunStore):
    first = create(store, run_key="churn@2026-01-02")
    again, created = store.create_run(
        flow_name="churn", source=None, params={}, plan_hash="plan-2", plan_json="{}",
        node_ids=["other"], run_key="churn@2026-01-02", owner_pid=1, owner_host="elsewhere",
    )  # fmt: skip
    assert (again, created) == (first, False)
    assert len(store.list_runs()) == 1
    assert [t.node_id for t in store.get_tasks(first)] == ["load", "train"]
    assert store.get_plan("plan-2") is None


def _create_with_key(url: str, start: Path, out: mp.Queue) -> None:
    wait_for(start)
    with RunStore(url) as store:
        out.put(
            store.create_run(
                flow_name="churn", source=None, params={}, plan_hash="p", plan_json="{}",
                node_ids=["a", "b"], run_key="tick-42", owner_pid=os.getpid(), owner_host=HOST,
            )
        )  # fmt: skip


def test_processes_racing_one_run_key_create_exactly_one_run(store_url: str, tmp_path: Path):
    url = store_url
    RunStore(url).close()
    start, out = tmp_path / "go", FORK.Queue()
    procs = [FORK.Process(target=_create_with_key, args=(url, start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    start.touch()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert len({run_id for run_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]
    with RunStore(url) as store:
        assert len(store.list_runs()) == 1


def test_params_that_are_not_json_are_refused_with_the_reason(store: RunStore):
    with pytest.raises(StoreError, match="JSON"):
        create(store, params={"when": datetime.now(UTC)})
    assert store.list_runs() == []


# ---------------------------------------------------------------------------- task updates


def test_record_tasks_merges_updates_and_upserts_attempts(store: RunStore):
    run_id = create(store)
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    t1 = t0 + timedelta(seconds=2)
    failed = AttemptUpdate(1, TaskStatus.FAILED, started_at=t0, ended_at=t0, error_type="IOError",
                           error_message="flaky", worker_pid=11, node_ip="10.0.0.1")  # fmt: skip
    store.record_tasks(
        run_id,
        [TaskUpdate("load", TaskStatus.RUNNING, started_at=t0, cache_key="ck",
                    attempts=(failed, AttemptUpdate(2, TaskStatus.RUNNING, started_at=t1,
                                                    worker_pid=12)))],
        generation=1,
    )  # fmt: skip
    store.record_tasks(
        run_id,
        [TaskUpdate("load", TaskStatus.SUCCEEDED, ended_at=t1, digest="d" * 64, size=9,
                    fmt="pickle", attempts=(AttemptUpdate(2, TaskStatus.SUCCEEDED, ended_at=t1),))],
        generation=1,
    )  # fmt: skip

    load, train = store.get_tasks(run_id)
    assert load.status == TaskStatus.SUCCEEDED and load.attempts == 2
    assert (load.started_at, load.ended_at) == (t0, t1)  # started_at kept by the merge
    assert (load.digest, load.size, load.fmt, load.cache_key) == ("d" * 64, 9, "pickle", "ck")
    assert train.status == TaskStatus.PENDING
    first, second = store.get_attempts(run_id, "load")
    assert (first.status, first.error_message, first.node_ip) == (
        TaskStatus.FAILED,
        "flaky",
        "10.0.0.1",
    )
    assert (second.status, second.worker_pid, second.started_at, second.ended_at) == (
        TaskStatus.SUCCEEDED, 12, t1, t1,
    )  # fmt: skip
    assert store.get_attempts(run_id, "train") == []


def test_a_task_started_again_loses_its_previous_outcome(store: RunStore):
    run_id = create(store)
    store.record_tasks(
        run_id,
        [TaskUpdate("load", TaskStatus.FAILED, error_type="ValueError", error_message="bad",
                    traceback="Traceback…", ended_at=datetime.now(UTC))],
        generation=1,
    )  # fmt: skip
    again = datetime.now(UTC)
    store.record_tasks(
        run_id, [TaskUpdate("load", TaskStatus.RUNNING, started_at=again)], generation=1
    )
    load = store.get_tasks(run_id)[0]
    assert load.status == TaskStatus.RUNNING and load.started_at == again
    assert (load.error_type, load.error_message, load.traceback, load.ended_at) == (None,) * 4


def test_updates_for_one_node_in_one_batch_apply_in_order(store: RunStore):
    run_id = create(store)
    start, end = datetime.now(UTC), datetime.now(UTC) + timedelta(seconds=1)
    store.record_tasks(
        run_id,
        [TaskUpdate("load", TaskStatus.RUNNING, started_at=start),
         TaskUpdate("load", TaskStatus.SUCCEEDED, ended_at=end, digest="e" * 64)],
        generation=1,
    )  # fmt: skip
    load = store.get_tasks(run_id)[0]
    assert (load.status, load.started_at, load.ended_at, load.digest) == (
        TaskStatus.SUCCEEDED, start, end, "e" * 64,
    )  # fmt: skip


def test_an_update_for_an_unknown_node_rejects_the_whole_batch(store: RunStore):
    run_id = create(store)
    with pytest.raises(StoreError, match="no task"):
        store.record_tasks(
            run_id,
            [TaskUpdate("load", TaskStatus.RUNNING), TaskUpdate("typo", TaskStatus.RUNNING)],
            generation=1,
        )
    assert {t.status for t in store.get_tasks(run_id)} == {TaskStatus.PENDING}


def test_record_tasks_writes_1000_updates_in_one_batch_in_well_under_100_ms(store: RunStore):
    """In one transaction, with executemany: under 100 ms on SQLite; on PostgreSQL (a server
    round trip per pipeline, on a loaded 2-core machine) the bound is 500 ms."""
    nodes = [f"n{i}" for i in range(1000)]
    run_id = create(store, nodes=nodes)
    now = datetime.now(UTC)
    started = (AttemptUpdate(1, TaskStatus.RUNNING, started_at=now),)
    done = (AttemptUpdate(1, TaskStatus.SUCCEEDED, ended_at=now),)
    batches = [
        [TaskUpdate(n, TaskStatus.RUNNING, started_at=now, attempts=started) for n in nodes],
        [TaskUpdate(n, TaskStatus.SUCCEEDED, ended_at=now, digest="f" * 64, size=1, fmt="pickle",
                    attempts=done) for n in nodes],
    ]  # fmt: skip
    timings = []
    for batch in batches * 2:
        t = time.perf_counter()
        store.record_tasks(run_id, batch, generation=1)
        timings.append(time.perf_counter() - t)
    bound = 0.1 if store.url.startswith("sqlite") else 0.5
    assert min(timings) < bound, f"1000 updates took {min(timings) * 1000:.0f} ms at best"
    assert {t.status for t in store.get_tasks(run_id)} == {TaskStatus.SUCCEEDED}
    assert len(store.get_attempts(run_id)) == 1000


def test_terminal_status_sets_ended_at_error_and_counters(store: RunStore):
    run_id = create(store)
    store.set_run_status(run_id, RunStatus.FAILED, error="train failed", generation=1,
                         counters={"cached": 1, "failed": 1})  # fmt: skip
    run = store.get_run(run_id)
    assert run.status == RunStatus.FAILED and run.ended_at is not None
    assert run.error == "train failed" and run.counters == {"cached": 1, "failed": 1}
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.set_run_status("nope", RunStatus.FAILED)


# ------------------------------------------------------------------------- leases (F3, F11)


def test_run_owned_by_a_dead_process_on_this_host_is_stale(store: RunStore):
    run = store.get_run(create(store, owner_pid=dead_pid()))
    assert store.is_stale(run, lease_ttl=3600)


def test_run_owned_by_a_live_process_with_a_fresh_heartbeat_is_not_stale(store: RunStore):
    run = store.get_run(create(store))
    assert not store.is_stale(run, lease_ttl=3600)
    other_host = dataclasses.replace(run, owner_host="elsewhere", owner_pid=dead_pid())
    assert not store.is_stale(other_host, lease_ttl=3600)  # cannot see pids on another host


def test_a_heartbeat_older_than_the_lease_is_stale_and_only_running_runs_can_be(store: RunStore):
    run = store.get_run(create(store))
    old = dataclasses.replace(run, heartbeat_at=datetime.now(UTC) - timedelta(seconds=60))
    assert store.is_stale(old, lease_ttl=30)
    assert not store.is_stale(dataclasses.replace(old, status=RunStatus.SUCCEEDED), lease_ttl=30)
    never_beat = dataclasses.replace(old, heartbeat_at=None, started_at=old.heartbeat_at)
    assert store.is_stale(never_beat, lease_ttl=30)  # F12: falls back to started_at


def test_take_over_refuses_a_live_lease(store: RunStore):
    run_id = create(store)
    with pytest.raises(StoreError, match=rf"run {run_id} is still running in pid {os.getpid()}"):
        store.take_over(run_id, owner_pid=1, owner_host="other", lease_ttl=3600)
    assert store.get_run(run_id).generation == 1


def test_after_take_over_the_old_owner_can_write_nothing(store: RunStore):
    run_id = create(store, owner_pid=dead_pid())
    new_generation = store.take_over(run_id, owner_pid=os.getpid(), owner_host=HOST, lease_ttl=60)
    assert new_generation == 2
    run = store.get_run(run_id)
    assert (run.status, run.owner_pid, run.generation) == (RunStatus.RUNNING, os.getpid(), 2)

    stale_write = [TaskUpdate("load", TaskStatus.SUCCEEDED, digest="a" * 64,
                              attempts=(AttemptUpdate(1, TaskStatus.SUCCEEDED),))]  # fmt: skip
    with pytest.raises(LeaseLostError, match=rf"run {run_id}.*generation 2.*pid {os.getpid()}"):
        store.record_tasks(run_id, stale_write, generation=1)
    with pytest.raises(LeaseLostError):
        store.heartbeat(run_id, 1)
    with pytest.raises(LeaseLostError):
        store.set_run_status(run_id, RunStatus.SUCCEEDED, generation=1)
    assert {t.status for t in store.get_tasks(run_id)} == {TaskStatus.PENDING}
    assert store.get_attempts(run_id) == [] and store.get_run(run_id).status == RunStatus.RUNNING

    store.record_tasks(run_id, stale_write, generation=2)  # the new owner can
    assert store.get_tasks(run_id)[0].status == TaskStatus.SUCCEEDED


def test_two_resumers_racing_for_a_stale_run_have_one_winner(store: RunStore):
    run_id = create(store, owner_pid=dead_pid())
    results = at_once(lambda: store.take_over(run_id, owner_pid=os.getpid(), owner_host=HOST, lease_ttl=60),
                      4, timeout=30)  # fmt: skip
    assert sorted(r for r in results if isinstance(r, int)) == [2]
    losers = [str(r) for r in results if isinstance(r, StoreError)]
    assert len(losers) == 3 and all("is still running" in m for m in losers), losers


def test_a_stale_run_is_marked_interrupted_and_its_lease_revoked(store: RunStore):
    run_id = create(store, owner_pid=dead_pid())
    store.record_tasks(run_id, [TaskUpdate("load", TaskStatus.RUNNING)], generation=1)
    assert store.mark_interrupted_if_stale(run_id, lease_ttl=60)
    run = store.get_run(run_id)
    assert run.status == RunStatus.INTERRUPTED and run.ended_at is not None
    assert "stopped" in (run.error or "") and run.generation == 2
    assert [t.status for t in store.get_tasks(run_id)] == [
        TaskStatus.INTERRUPTED,
        TaskStatus.PENDING,
    ]
    with pytest.raises(LeaseLostError):
        store.heartbeat(run_id, 1)
    assert not store.mark_interrupted_if_stale(create(store), lease_ttl=60)  # a live run stays


# ---------------------------------------------------------------------------------- reading


def test_missing_run_error_says_how_to_list_runs(store: RunStore):
    with pytest.raises(StoreError, match=rf"no run 'abc' in {re.escape(store.url)}; `rayline runs list`"):
        store.get_run("abc")


def test_find_run_accepts_a_unique_prefix_and_names_ambiguous_ones(store, monkeypatch):
    ids = iter([uuid.UUID("abc10000" + "0" * 24), uuid.UUID("abc20000" + "0" * 24)])
    monkeypatch.setattr("rayline.store.runs.uuid4", lambda: next(ids))
    one, two = create(store), create(store)
    assert store.find_run("abc1").run_id == one and store.find_run(two).run_id == two
    with pytest.raises(StoreError, match=f"ambiguous.*{one}.*{two}|ambiguous.*{two}.*{one}"):
        store.find_run("abc")
    with pytest.raises(StoreError, match="no run 'zz'"):
        store.find_run("zz")
    with pytest.raises(StoreError, match="no run 'a_'"):
        store.find_run("a_")  # LIKE wildcards are escaped


def test_list_runs_is_newest_first_and_filters(store: RunStore):
    a = create(store)
    b = create(store, flow_name="other")
    c = create(store)
    store.set_run_status(a, RunStatus.SUCCEEDED)
    store.set_run_status(c, RunStatus.FAILED)
    assert [r.run_id for r in store.list_runs()] == [c, b, a]
    assert [r.run_id for r in store.list_runs(limit=1)] == [c]
    assert [r.run_id for r in store.list_runs(flow_name="churn")] == [c, a]
    assert [r.run_id for r in store.list_runs(status=RunStatus.FAILED)] == [c]
    assert [r.run_id for r in store.list_runs(limit=1, flow_name="churn", status=RunStatus.SUCCEEDED)] == [a]
    assert store.list_runs(limit=1, flow_name="other", status=RunStatus.SUCCEEDED) == []


# ------------------------------------------------------------------ the SQLite file (F25, F26)


def test_database_file_is_0600_in_a_0700_directory(sqlite_store: RunStore, home: Path):
    create(sqlite_store)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in ("runs.db", "runs.db-wal", "runs.db-shm"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name


def test_sqlite_runs_in_wal_with_busy_timeout_and_foreign_keys(sqlite_store, home, monkeypatch):
    with sqlite_store._engine.connect() as conn:
        pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("busy_timeout") == 30000
        assert pragma("foreign_keys") == 1
        assert pragma("synchronous") == 1  # NORMAL
    monkeypatch.setenv("RAYLINE_DB_SYNC", "full")
    with RunStore.open(home) as durable, durable._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_newer_schema_version_is_refused_with_a_clear_message(home: Path):
    RunStore.open(home).close()
    with sqlite3.connect(home / "runs.db") as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="has schema version 99, this rayline understands up "
                                          f"to {schema.SCHEMA_VERSION}; upgrade rayline"):  # fmt: skip
        RunStore.open(home)


def _crash_in_migration(url: str) -> None:
    def half_done(conn) -> None:
        conn.exec_driver_sql("CREATE TABLE half_done (x INTEGER)")
        os._exit(137)

    schema.SCHEMA_VERSION += 1
    schema.MIGRATIONS[schema.SCHEMA_VERSION] = half_done
    RunStore(url)


def test_a_migration_killed_halfway_leaves_the_old_version(home: Path):
    url = sqlite_url(home / "runs.db")
    RunStore(url).close()
    child = FORK.Process(target=_crash_in_migration, args=(url,))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 137
    with sqlite3.connect(home / "runs.db") as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (schema.SCHEMA_VERSION,)
        assert db.execute("SELECT name FROM sqlite_master WHERE name='half_done'").fetchall() == []
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    RunStore(url).close()


def test_a_store_on_a_network_filesystem_is_refused_unless_allowed(
    home, tmp_path, monkeypatch, caplog
):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nserver:/export {tmp_path} nfs4 rw 0 0\n")
    monkeypatch.setattr(sql, "_MOUNTS_FILE", str(mounts))
    monkeypatch.delenv("RAYLINE_ALLOW_NETWORK_FS", raising=False)
    with pytest.raises(StoreError, match="network filesystem \\(nfs4\\).*RAYLINE_ALLOW_NETWORK_FS"):
        RunStore.open(home)
    assert not home.exists()  # refused before creating anything
    monkeypatch.setenv("RAYLINE_ALLOW_NETWORK_FS", "1")
    RunStore.open(home).close()
    assert "network filesystem" in caplog.text


def _count_connects(store: RunStore, run_id: str, out: mp.Queue) -> None:
    from sqlalchemy import event

    made = []
    event.listen(store._engine, "connect", lambda *args: made.append(1))
    store.heartbeat(run_id, 1)
    out.put(len(made))


def test_a_forked_child_never_reuses_the_parents_connection(sqlite_store: RunStore, home: Path):
    store = sqlite_store
    run_id = create(store)
    store.get_run(run_id)  # the pool now holds an open connection
    out = FORK.Queue()
    child = FORK.Process(target=_count_connects, args=(store, run_id, out))
    child.start()
    assert out.get(timeout=30) == 1  # the child opened its own
    child.join(timeout=30)
    store.heartbeat(run_id, 1)
    with sqlite3.connect(home / "runs.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def _hammer(url: str, run_id: str, node: str, start: Path, n: int, out: mp.Queue) -> None:
    """n write transactions of three kinds: task batches, heartbeats, and new runs (which read
    before they write, the pattern that fails without BEGIN IMMEDIATE)."""
    wait_for(start)
    errors, attempt = [], 0
    with RunStore(url) as store:
        for i in range(n):
            try:
                if i % 5 in (0, 2):
                    attempt += 1
                    update = TaskUpdate(
                        node,
                        TaskStatus.RUNNING,
                        attempts=(AttemptUpdate(attempt, TaskStatus.FAILED),),
                    )
                    store.record_tasks(run_id, [update], generation=1)
                elif i % 5 in (1, 3):
                    store.heartbeat(run_id, 1)
                else:
                    create(store, nodes=("x",), plan_hash=f"{node}-{i}", owner_pid=None)
            except Exception as e:  # collect, so the parent reports every failure
                errors.append(repr(e))
    out.put((node, errors))  # fmt: skip


def test_four_writer_processes_never_see_database_is_locked(home: Path, tmp_path: Path):
    url = sqlite_url(home / "runs.db")
    nodes = [f"w{i}" for i in range(4)]
    with RunStore(url) as store:
        run_id = create(store, nodes=nodes)
    start, out = tmp_path / "go", FORK.Queue()
    procs = [FORK.Process(target=_hammer, args=(url, run_id, n, start, 250, out)) for n in nodes]
    for p in procs:
        p.start()
    start.touch()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert results == {n: [] for n in nodes}
    with RunStore(url) as store:
        assert len(store.get_attempts(run_id)) == 4 * 100
        assert {t.attempts for t in store.get_tasks(run_id)} == {100}
        assert len(store.list_runs(limit=1000)) == 1 + 4 * 50


def _die_inside_transaction(url: str, run_id: str, marker: Path) -> None:
    from sqlalchemy import event

    store = RunStore(url)

    def stall(conn, cursor, statement, *args) -> None:
        if statement.startswith("UPDATE tasks"):
            marker.touch()  # the transaction has written rows but not committed
            time.sleep(60)

    event.listen(store._engine, "after_cursor_execute", stall)
    attempt = AttemptUpdate(1, TaskStatus.SUCCEEDED)
    store.record_tasks(run_id, [TaskUpdate("load", TaskStatus.SUCCEEDED, attempts=(attempt,))],
                       generation=1)  # fmt: skip


def test_a_writer_killed_mid_transaction_leaves_a_sound_database(home: Path, tmp_path: Path):
    url = sqlite_url(home / "runs.db")
    with RunStore(url) as store:
        run_id = create(store)
        beat = store.get_run(run_id).heartbeat_at
    marker = tmp_path / "inside"
    child = FORK.Process(target=_die_inside_transaction, args=(url, run_id, marker))
    child.start()
    wait_for(marker)
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL

    with sqlite3.connect(home / "runs.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with RunStore(url) as store:
        assert {t.status for t in store.get_tasks(run_id)} == {TaskStatus.PENDING}
        assert store.get_attempts(run_id) == []
        assert store.get_run(run_id).heartbeat_at == beat
        t = time.perf_counter()
        store.heartbeat(run_id, 1)  # the dead writer's lock is gone
        assert time.perf_counter() - t < 5


def _open_at(url: str, at: float, results) -> None:
    while time.time() < at:
        pass
    try:
        with RunStore(url) as s:
            s.list_runs()
        results.put("ok")
    except Exception as e:  # noqa: BLE001 - reported to the test
        results.put(f"{type(e).__name__}: {e}")


def _open_at_once(url: str, *, delay: float, processes: int = 4) -> list[str]:
    """Fork ``processes`` that all open the store at ``url`` at the same moment; their errors."""
    results, at = FORK.Queue(), time.time() + delay
    procs = [FORK.Process(target=_open_at, args=(url, at, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    return [r for r in (results.get(timeout=10) for _ in procs) if r != "ok"]


def test_processes_opening_a_fresh_store_at_the_same_moment_all_succeed(tmp_path: Path):
    """Two cron invocations on a new RAYLINE_HOME: switching the fresh file to WAL at once made
    one of them fail with 'database is locked' (SQLite skips the busy handler there)."""
    failures = []
    for i in range(12):
        failures += _open_at_once(f"sqlite:///{tmp_path / f'home{i}' / 'runs.db'}", delay=0.2)
    assert failures == []


def test_processes_opening_a_fresh_postgresql_database_at_once_migrate_it_once(postgres):
    """Two schedulers on a new team database: creating the tables at the same moment must not
    fail one of them (PostgreSQL's CREATE TABLE is not safe against a concurrent one)."""
    failures = []
    for _ in range(6):
        url = postgres.new_database()
        failures += _open_at_once(url, delay=0.3)
        with RunStore(url) as store, store._engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM schema_version").scalar() == 1
    assert failures == []
