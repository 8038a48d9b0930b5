"""The scheduler with an injected clock (nothing sleeps): catch-up after downtime (F8), DST in
the loop (F9), a clock jumping back (F10), a storm of new files (F24), and where schedules come
from. ``launcher=None``: runs are reserved (PENDING, holding the flow's slot or queued), never
started, so these tests need neither Ray nor a flow execution."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from rayline.errors import DefinitionError, UsageError
from rayline.store.runs import RunStore
from rayline.store.slots import FlowSlots
from rayline.store.states import RunStatus
from rayline.store.trigger_states import TriggerStates
from rayline.triggers.catalog import Entry, load_entries
from rayline.triggers.newdata import NewData, take_snapshot
from rayline.triggers.schedule import Cron
from rayline.triggers.scheduler import Scheduler

FLOWS = Path(__file__).parent / "schedule_flows"
TINY = f"{FLOWS / 'tiny.py'}:tiny"
NY = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def store(settings):
    with RunStore(settings.run_store_url) as s:
        yield s


def runs_of(store: RunStore, status: RunStatus | None = None) -> list:
    return store.list_runs(limit=1000, status=status)


def finish_all(store: RunStore) -> None:
    for r in runs_of(store, RunStatus.PENDING):
        store.set_run_status(r.run_id, RunStatus.SUCCEEDED)


# ------------------------------------------------------------------------------ F8
@pytest.mark.parametrize("catchup, expected", [
    ("none", []),
    ("latest", ["2026-01-01T15:00:00Z"]),
    ("all", ["2026-01-01T13:00:00Z", "2026-01-01T14:00:00Z", "2026-01-01T15:00:00Z"]),
])  # fmt: skip
def test_a_restart_after_missed_ticks_follows_the_catchup_policy(settings, store, catchup, expected):
    entry = Entry(TINY, "tiny", Cron("0 * * * *", catchup=catchup, max_catchup=3))
    with Scheduler([entry], settings=settings) as sched:
        first = sched.tick(utc(2026, 1, 1, 10, 0, 5))
    assert [(f.action, f.logical_time) for f in first] == [("start", "2026-01-01T10:00:00Z")]
    finish_all(store)
    # Down from 10:00:05 to 15:20: the ticks of 11:00 … 15:00 were missed. A new scheduler
    # (a restart) reads the stored state.
    with Scheduler([entry], settings=settings) as sched:
        report = sched.tick(utc(2026, 1, 1, 15, 20))
    assert [f.logical_time for f in report] == expected
    assert [f.action for f in report] == ["start", "queued", "queued"][: len(expected)]
    for f in report:  # each run carries its own logical time, as key, param and trigger record
        rec = store.get_run(f.run_id)
        assert rec.run_key == f"tiny/cron@{f.logical_time}"
        assert rec.params["logical_time"] == rec.trigger["logical_time"] == f.logical_time
        assert rec.trigger["on_time"] is False and rec.trigger["reason"].startswith("catch-up")
    assert FlowSlots(store).queued("tiny") == [f.run_id for f in report[1:]]  # one at a time
    state = TriggerStates(store).get(entry.trigger_id)
    assert state.next_at == utc(2026, 1, 1, 16)  # only the next future tick is scheduled


def test_catchup_none_logs_the_ticks_it_dropped(settings, caplog):
    entry = Entry(TINY, "tiny", Cron("0 * * * *"))
    with Scheduler([entry], settings=settings) as sched:
        sched.tick(utc(2026, 1, 1, 10, 30))
        assert sched.tick(utc(2026, 1, 1, 15, 20)) == []
    assert "5 missed tick(s) of cron '0 * * * *' (UTC) not run (catchup=none)" in caplog.text


# ------------------------------------------------------------------------------ F9
@pytest.mark.parametrize("start, days", [(utc(2026, 3, 6, 12), 4), (utc(2026, 10, 30, 12), 4)])
def test_the_loop_fires_once_per_local_day_through_dst_and_stores_utc(settings, store, start, days):
    entries = [Entry(TINY, "tiny", Cron(expr, tz="America/New_York", overlap="allow"))
               for expr in ("30 2 * * *", "30 1 * * *")]  # fmt: skip
    now, end = start, start + timedelta(days=days)
    with Scheduler(entries, settings=settings) as sched:
        while now < end:  # what run_forever does, without sleeping: wake at the next fire time
            sched.tick(now)
            last_tick, now = now, sched.next_wake() + timedelta(seconds=2)
    fired = Counter((r.trigger["schedule"], datetime.fromisoformat(r.trigger["local_time"]).date())
                    for r in runs_of(store))  # fmt: skip
    assert len(fired) == 2 * days and set(fired.values()) == {1}, fired
    logical = {r.trigger["logical_time"] for r in runs_of(store)}
    if start.month == 3:
        assert "2026-03-08T07:00:00Z" in logical  # 02:30 did not exist: 03:00 EDT
    else:
        assert "2026-11-01T05:30:00Z" in logical and "2026-11-01T06:30:00Z" not in logical
    with sqlite3.connect(settings.resolved_home / "runs.db") as db:
        stored = dict(db.execute("SELECT trigger_id, next_at FROM trigger_state"))
    for e in entries:  # next fire times are stored as UTC epoch seconds
        assert stored[e.trigger_id] == e.trigger.next_after(last_tick).timestamp()


# ----------------------------------------------------------------------------- F10
def test_a_clock_jump_back_fires_no_tick_twice(settings, store):
    entry = Entry(TINY, "tiny", Cron("0 * * * *"))
    with Scheduler([entry], settings=settings) as sched:
        [fired] = sched.tick(utc(2026, 1, 1, 12, 0, 10))
        assert sched.tick(utc(2026, 1, 1, 11, 0, 10)) == []  # the clock went back an hour
        assert sched.tick(utc(2026, 1, 1, 11, 59, 59)) == []
        assert sched.tick(utc(2026, 1, 1, 12, 0, 20)) == []
    # Even a scheduler that lost the state (or a second one) cannot make a second 12:00 run.
    with sqlite3.connect(settings.resolved_home / "runs.db") as db:
        db.execute("DELETE FROM trigger_state")
    with Scheduler([entry], settings=settings) as sched:
        [again] = sched.tick(utc(2026, 1, 1, 12, 0, 30))
    assert (again.action, again.run_id) == ("exists", fired.run_id)
    assert [r.run_id for r in runs_of(store)] == [fired.run_id]


# ----------------------------------------------------------------------------- F24
class Storm:
    """Writes files into ``inbox`` along a fake clock, ticking whenever the scheduler is due."""

    def __init__(self, sched: Scheduler, inbox: Path, now: datetime):
        self.sched, self.inbox, self.now = sched, inbox, now

    def burst(self, tag: str, n: int = 100, seconds: float = 1.0) -> None:
        for i in range(n):
            (self.inbox / f"{tag}-{i:03}.csv").write_text(f"{tag},{i}\n")
            self.now += timedelta(seconds=seconds / n)
            if self.now >= self.sched.next_wake():
                self.sched.tick(self.now)

    def quiet(self, seconds: float) -> None:
        end = self.now + timedelta(seconds=seconds)
        while (wake := self.sched.next_wake()) <= end:
            self.now = wake
            self.sched.tick(wake)
        self.now = end


def test_a_storm_of_new_files_coalesces_and_the_same_snapshot_never_trains_twice(settings, store, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    entry = Entry(TINY, "tiny", NewData(str(inbox)))
    with Scheduler([entry], settings=settings) as sched:
        sched.tick(utc(2026, 1, 1))  # an empty inbox: nothing
        storm = Storm(sched, inbox, utc(2026, 1, 1))
        storm.burst("a")  # 100 files within one second
        storm.quiet(5)
        [run] = runs_of(store)
        assert run.status == RunStatus.PENDING and run.run_key.startswith("tiny/new_data@")
        snap = take_snapshot(str(inbox))
        assert run.trigger["snapshot"] == run.params.get("snapshot", snap.digest) == snap.digest
        assert run.trigger["files"] == 100 and run.trigger["kind"] == "new_data"
        assert "a snapshot not trained before" in run.trigger["reason"]
        # While it runs, two more storms: the first queues one run, the second is skipped once.
        FlowSlots(store).start(run.run_id, owner_pid=1, owner_host="elsewhere")
        storm.burst("b")
        storm.quiet(5)
        storm.burst("c")
        storm.quiet(5)
    queued = runs_of(store, RunStatus.PENDING)
    skipped = runs_of(store, RunStatus.SKIPPED)
    assert len(queued) == 1 and queued[0].trigger["files"] == 200
    assert len(skipped) == 1 and skipped[0].trigger["files"] == 300 and skipped[0].run_key is None


def test_the_same_files_make_no_new_run_after_a_restart_without_state(settings, store, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "x.csv").write_text("1\n")
    (inbox / "_SUCCESS").write_text("")  # markers and hidden files do not count
    entry = Entry(TINY, "tiny", NewData(str(inbox), debounce=0.5))
    for _ in range(2):
        with Scheduler([entry], settings=settings) as sched:
            sched.tick(utc(2026, 1, 1))
            report = sched.tick(utc(2026, 1, 1, 0, 0, 1))
        finish_all(store)
        with sqlite3.connect(settings.resolved_home / "runs.db") as db:
            db.execute("DELETE FROM trigger_state")
    assert [f.action for f in report] == ["exists"]
    [run] = runs_of(store)
    assert run.trigger["files"] == 1


# -------------------------------------------------------------------------- catalog
def test_schedules_come_from_flow_files_yaml_flows_and_schedules_files():
    entries = load_entries([FLOWS / "schedules.yaml"])
    assert [(e.flow_name, e.trigger.describe(), e.params) for e in entries] == [
        ("nightly", "cron '0 3 * * *' (Europe/Warsaw)", {}),
        ("tiny", "cron '*/15 * * * *' (UTC)", {"n": 5}),
        ("tiny", f"new data under {FLOWS / 'inbox/*.csv'} (every 1 s, debounce 2 s)", {}),
        ("yaml-nightly", "cron '0 3 * * *' (America/New_York)", {}),
    ]  # fmt: skip
    assert entries[1].trigger.overlap == "queue" and entries[3].trigger.policy.max_catchup == 2
    assert [e.flow_name for e in load_entries([FLOWS / "tiny.py"])] == ["nightly"]


def test_schedule_registry_errors_name_the_file_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="no schedules given.*configs/schedules.yaml"):
        load_entries([])
    with pytest.raises(DefinitionError, match="flow 'tiny' declares a schedule; add @flow"):
        load_entries([TINY])
    bad = tmp_path / "schedules.yaml"
    bad.write_text(f"schedules:\n  - flow: {FLOWS / 'tiny.py'}:tiny\n    cron: '0 3 * *'\n")
    with pytest.raises(DefinitionError, match=r"schedules.yaml:3: invalid cron expression"):
        load_entries([bad])
    bad.write_text(f"schedules:\n  - flow: {FLOWS / 'tiny.py'}:tiny\n    crn: '0 3 * * *'\n")
    with pytest.raises(DefinitionError, match=r"schedules.yaml:2: give at most one trigger kind"):
        load_entries([bad])


def test_the_repository_schedules_file_loads():
    [entry] = load_entries([Path(__file__).parents[2] / "configs" / "schedules.yaml"])
    assert (entry.flow_name, entry.trigger.tz, entry.params) == ("hello", "Europe/Warsaw", {"scale": 2})


def test_schedule_list_shows_next_fire_in_utc_and_the_last_run(settings, monkeypatch):
    from click.testing import CliRunner

    from rayline.cli.main import cli

    monkeypatch.setenv("RAYLINE_HOME", str(settings.home))
    entry = Entry(f"{FLOWS / 'tiny.py'}:nightly", "nightly", Cron("0 3 * * *", tz="Europe/Warsaw"))
    with Scheduler([entry], settings=settings) as sched:
        [fired] = sched.tick(utc(2026, 1, 1, 2, 0, 5))  # 03:00 in Warsaw
    result = CliRunner().invoke(cli, ["schedule", "list", f"{FLOWS / 'tiny.py'}:nightly", "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["next_fire"] == "2026-01-02T02:00:00Z" and row["next_fire_local"] == "2026-01-02T03:00:00+01:00"
    assert row["last_run"]["run_id"] == fired.run_id and row["last_run"]["status"] == "PENDING"
    assert (row["kind"], row["overlap"], row["catchup"]) == ("cron", "skip", "latest")
    text = CliRunner().invoke(cli, ["schedule", "list", f"{FLOWS / 'tiny.py'}:nightly"]).stdout
    assert "2026-01-02T02:00:00Z" in text and fired.run_id in text
