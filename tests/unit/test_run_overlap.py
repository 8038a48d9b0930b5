"""``rayline.run(..., overlap=...)`` (what ``rayline run`` calls) and the flow's slot, in this
process with the local executor (no Ray), on a real SQLite run store and on PostgreSQL: a
failed run frees the slot, a busy flow is skipped naming the holder (``skip``), waits for its
turn (``queue``) or runs anyway (``allow``); a resume takes the slot back, or refuses while
another run holds it.
Tasks wait for a ``go`` file, so "busy" is a state, not a race."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rayline
from rayline import flow, task
from rayline.config import Settings
from rayline.errors import FlowBusyError
from rayline.store.runs import RunStore
from rayline.store.slots import FlowSlots
from rayline.store.states import RunStatus


@task
def maybe_fail(fail: bool) -> int:
    if fail:
        raise ValueError("asked to fail")
    return 1


@flow
def fickle(fail: bool = False):
    return maybe_fail(fail)


HELD = f"{Path(__file__).with_name('schedule_flows') / 'gated.py'}:held"  # resume loads it by path


@pytest.fixture
def settings(home: Path, store_url: str) -> Settings:
    """Runs recorded on SQLite and on PostgreSQL (``RAYLINE_DB_URL``): the slot is the database's."""
    return Settings(home=home, heartbeat_interval=0.5, lease_ttl=5.0, db_url=store_url)


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    (tmp_path / "go").touch()  # never leave a test's thread waiting


def run(flow_obj: Any, settings: Any, overlap: str, **params: Any) -> rayline.Run:
    return rayline.run(flow_obj, settings=settings, executor="local", overlap=overlap, **params)


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["run"] = call()
        except BaseException as exc:  # reported by the test, never lost in the thread
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def entered(folder: Path, tag: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not (folder / f"entered-{tag}").exists():
        assert time.monotonic() < deadline, f"the gated task of run '{tag}' did not start"
        time.sleep(0.02)


def result_of(t: threading.Thread, box: dict[str, Any]) -> rayline.Run:
    t.join(timeout=60)
    assert not t.is_alive(), "the run did not finish"
    if "error" in box:
        raise box["error"]
    return box["run"]


def test_a_failed_run_frees_the_slot_and_the_next_run_proceeds(settings):
    failed = run(fickle, settings, "skip", fail=True)
    assert failed.status == RunStatus.FAILED
    after = run(fickle, settings, "skip", fail=False)
    assert after.status == RunStatus.SUCCEEDED, after.error
    with RunStore(settings.run_store_url) as store:
        assert FlowSlots(store).holder("fickle") == after.run_id  # it held the slot
        assert [r.status for r in store.list_runs()] == [RunStatus.SUCCEEDED, RunStatus.FAILED]


def test_a_busy_flow_is_skipped_naming_the_holder_and_runs_once_the_holder_ended(settings, folder):
    t, box = in_thread(lambda: run(HELD, settings, "skip", tag="first", folder=str(folder)))
    entered(folder, "first")
    with RunStore(settings.run_store_url) as store:
        [holder] = store.list_runs(status=RunStatus.RUNNING)
    skipped = run(HELD, settings, "skip", tag="second", folder=str(folder))
    assert skipped.status == RunStatus.SKIPPED
    assert skipped.error == f"flow 'held' is busy: run {holder.run_id} is RUNNING (overlap=skip)"
    assert skipped.record.trigger["held_by"] == holder.run_id
    assert skipped.tasks == [] and not (folder / "entered-second").exists()  # nothing ran
    (folder / "go").touch()
    first = result_of(t, box)
    assert first.run_id == holder.run_id and first.result() == "first"
    again = run(HELD, settings, "skip", tag="third", folder=str(folder))
    assert again.status == RunStatus.SUCCEEDED and again.result() == "third"


def test_a_run_key_stays_free_when_its_run_was_skipped(settings, folder):
    t, box = in_thread(lambda: run(HELD, settings, "skip", tag="first", folder=str(folder)))
    entered(folder, "first")
    keyed = {"settings": settings, "executor": "local", "overlap": "skip", "run_key": "held/nightly@1",
             "tag": "keyed", "folder": str(folder)}
    skipped = rayline.run(HELD, **keyed)
    assert skipped.status == RunStatus.SKIPPED and skipped.record.run_key is None
    (folder / "go").touch()
    result_of(t, box)
    later = rayline.run(HELD, **keyed)
    assert later.status == RunStatus.SUCCEEDED and later.record.run_key == "held/nightly@1"


def test_queue_waits_for_the_holder_to_end_then_runs(settings, folder):
    t1, box1 = in_thread(lambda: run(HELD, settings, "queue", tag="first", folder=str(folder)))
    entered(folder, "first")
    t2, box2 = in_thread(lambda: run(HELD, settings, "queue", tag="second", folder=str(folder)))
    with RunStore(settings.run_store_url) as store:
        slots = FlowSlots(store)
        deadline = time.monotonic() + 30
        while not slots.queued("held") and time.monotonic() < deadline:
            time.sleep(0.05)
        [queued] = slots.queued("held")
        assert store.get_run(queued).status == RunStatus.PENDING
    time.sleep(1.5)  # more than the queue's poll interval: the second run still waits
    assert not (folder / "entered-second").exists()
    (folder / "go").touch()
    first, second = result_of(t1, box1), result_of(t2, box2)
    assert (first.status, second.status) == (RunStatus.SUCCEEDED, RunStatus.SUCCEEDED)
    assert second.run_id == queued and second.result() == "second"
    assert second.record.started_at >= first.record.ended_at  # never both RUNNING


def test_allow_runs_next_to_the_holder(settings, folder):
    t1, box1 = in_thread(lambda: run(HELD, settings, "skip", tag="first", folder=str(folder)))
    entered(folder, "first")
    t2, box2 = in_thread(lambda: run(HELD, settings, "allow", tag="second", folder=str(folder)))
    entered(folder, "second")  # both tasks are running at once
    with RunStore(settings.run_store_url) as store:
        assert len(store.list_runs(status=RunStatus.RUNNING)) == 2
    (folder / "go").touch()
    assert {result_of(t1, box1).result(), result_of(t2, box2).result()} == {"first", "second"}


def test_a_resume_waits_for_the_slot_then_takes_it_back(settings, folder):
    (folder / "fail-first").touch()
    failed = run(HELD, settings, "skip", tag="first", folder=str(folder))
    assert failed.status == RunStatus.FAILED
    (folder / "fail-first").unlink()
    t, box = in_thread(lambda: run(HELD, settings, "skip", tag="second", folder=str(folder)))
    entered(folder, "second")
    with RunStore(settings.run_store_url) as store:
        [holder] = store.list_runs(status=RunStatus.RUNNING)
    with pytest.raises(FlowBusyError, match=f"flow 'held' is busy, run {holder.run_id} is RUNNING") as busy:
        rayline.resume(failed.run_id, settings=settings, executor="local")
    assert busy.value.held_by == holder.run_id and busy.value.exit_code == 3
    assert "rayline cancel" in str(busy.value)
    with RunStore(settings.run_store_url) as store:
        assert store.get_run(failed.run_id).status == RunStatus.FAILED  # untouched
        assert FlowSlots(store).holder("held") == holder.run_id
    assert not (folder / "entered-first").exists()
    (folder / "go").touch()
    assert result_of(t, box).status == RunStatus.SUCCEEDED
    resumed = rayline.resume(failed.run_id, settings=settings, executor="local")
    assert resumed.status == RunStatus.SUCCEEDED and resumed.result() == "first"
    with RunStore(settings.run_store_url) as store:
        assert FlowSlots(store).holder("held") == failed.run_id  # it held the slot while it ran


def test_a_run_started_without_a_slot_resumes_beside_the_holder(settings, folder):
    (folder / "fail-free").touch()
    plain = rayline.run(HELD, settings=settings, executor="local", tag="free", folder=str(folder))
    assert plain.status == RunStatus.FAILED
    (folder / "fail-free").unlink()
    t1, box1 = in_thread(lambda: run(HELD, settings, "skip", tag="holder", folder=str(folder)))
    entered(folder, "holder")
    t2, box2 = in_thread(lambda: rayline.resume(plain.run_id, settings=settings, executor="local"))
    entered(folder, "free")  # it runs while the slot's holder runs: it never took the slot
    (folder / "go").touch()
    assert result_of(t1, box1).status == RunStatus.SUCCEEDED
    assert result_of(t2, box2).result() == "free"
