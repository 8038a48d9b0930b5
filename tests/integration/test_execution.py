"""Running flows on the shared local Ray: ordering, fan-out, failures, retries, timeouts, cache."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import rayline
from rayline import flow, task
from rayline.store.states import RunStatus, TaskStatus
from tests.coordination import ledger
from tests.integration.flows import reliability as rf

pytestmark = pytest.mark.usefixtures("ray_session")


@task
def inc(x: int) -> int:
    return x + 1


@task
def add_all(xs: list[int]) -> int:
    return sum(xs)


def test_fan_out_fan_in_runs_on_ray_and_records_every_task(settings):
    @flow
    def f(n: int = 5):
        return add_all(inc.map(range(20)))

    run = rayline.run(f, settings=settings)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result() == sum(range(1, 21))
    assert len(run.tasks) == 21 and all(t.status == TaskStatus.SUCCEEDED for t in run.tasks)
    assert all(t.digest for t in run.tasks)


def test_a_chain_passes_values_through_object_refs(settings):
    @flow
    def f():
        x = inc(0)
        for _ in range(30):
            x = inc(x)
        return x

    run = rayline.run(f, settings=settings)
    assert run.result() == 31


def test_thousands_of_tasks_fan_out(settings):
    @flow
    def f():
        return add_all(inc.map(range(2000)))

    run = rayline.run(f, settings=settings)
    assert run.status == RunStatus.SUCCEEDED and run.result() == sum(range(1, 2001))


def test_user_error_fails_the_task_without_retry_and_downstream_never_starts(settings, tmp_path):
    """F2, case 1."""
    run = rayline.run(rf.fails_once, settings=settings, folder=str(tmp_path))
    assert run.status == RunStatus.FAILED
    boom = run.task("boom")
    assert boom.status == TaskStatus.FAILED and boom.attempts == 1
    assert "ValueError" in boom.error_type and "bad input row 7" in boom.error_message
    assert "Traceback" in boom.traceback and "reliability.py" in boom.traceback
    assert run.task("after").status == TaskStatus.UPSTREAM_FAILED
    assert run.task("independent").status == TaskStatus.SUCCEEDED  # independent branch finished
    assert ledger(tmp_path, "boom") == 1 and ledger(tmp_path, "after") == 0
    assert "boom" in run.error


def test_retry_on_transient_error_with_growing_backoff_then_success(settings, tmp_path):
    """F2, case 2: three attempts, delays 0.2 s then 0.4 s, every attempt recorded."""
    run = rayline.run(rf.retried, settings=settings, folder=str(tmp_path))
    assert run.status == RunStatus.SUCCEEDED and run.result() == "ok"
    attempts = [a for a in run.attempts if a.node_id == "transient"]
    assert [a.status for a in attempts] == [TaskStatus.FAILED, TaskStatus.FAILED, TaskStatus.SUCCEEDED]
    assert "TransientError" in attempts[0].error_type
    gap1 = (attempts[1].started_at - attempts[0].ended_at).total_seconds()
    gap2 = (attempts[2].started_at - attempts[1].ended_at).total_seconds()
    assert 0.15 < gap1 < gap2


def test_always_failing_task_makes_exactly_retries_plus_one_attempts(settings, tmp_path):
    """F27, first half: 4 attempts with increasing delays, then FAILED."""
    run = rayline.run(rf.hopeless, settings=settings, folder=str(tmp_path))
    assert run.status == RunStatus.FAILED
    attempts = [a for a in run.attempts if a.node_id == "always_fails"]
    assert len(attempts) == 4 and ledger(tmp_path, "always") == 4
    gaps = [(b.started_at - a.ended_at).total_seconds() for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps == sorted(gaps) and gaps[0] > 0.15


def test_timeout_stops_the_attempt_and_is_recorded(settings):
    t0 = time.monotonic()
    run = rayline.run(rf.too_slow, settings=settings, seconds=30.0)
    assert time.monotonic() - t0 < 20
    assert run.status == RunStatus.FAILED
    t = run.task("sleepy")
    assert t.status == TaskStatus.FAILED and "TaskTimeoutError" in t.error_type
    assert "timeout of 0.5 s" in t.error_message


def test_cache_skips_a_task_whose_code_and_inputs_match(settings, tmp_path):
    first = rayline.run(rf.cached, settings=settings, folder=str(tmp_path))
    second = rayline.run(rf.cached, settings=settings, folder=str(tmp_path))
    assert first.result() == second.result() == 1000
    assert first.task("expensive").status == TaskStatus.SUCCEEDED
    assert second.task("expensive").status == TaskStatus.CACHED
    assert ledger(tmp_path, "expensive") == 1


def test_unsatisfiable_gpu_request_is_rejected_before_anything_runs(settings):
    @task(gpus=2)
    def train() -> int:
        return 1

    @flow
    def f():
        return train()

    t0 = time.monotonic()
    with pytest.raises(rayline.ValidationError, match="node 'train'.*GPU=2"):
        rayline.run(f, settings=settings)
    assert time.monotonic() - t0 < 5  # rejected, not left pending


@task
def noisy(folder: str) -> int:
    from rayline import context

    ctx = context.current()
    seen = context.previous_watermark("files", default=[])
    context.warn(f"set aside 2 files (run {ctx.run_id})")
    context.count("quarantined", 2)
    context.set_watermark("files", [*seen, len(seen)])
    return len(seen)


def test_tasks_report_warnings_counters_and_watermarks_to_the_run(settings, tmp_path):
    @flow
    def f(folder: str):
        return noisy(folder)

    first = rayline.run(f, settings=settings, folder=str(tmp_path))
    assert first.status == RunStatus.SUCCEEDED_WITH_WARNINGS and first.result() == 0
    assert first.counters == {"quarantined": 2} and "set aside 2 files" in first.warnings[0]
    second = rayline.run(f, settings=settings, folder=str(tmp_path))
    assert second.result() == 1  # saw the first run's watermark


def test_a_function_from_a_flow_file_can_be_a_task_argument(settings):
    path = Path(__file__).parent / "flows" / "fn_args.py"
    run = rayline.run(str(path), settings=settings)  # loaded by path: workers cannot import it
    assert run.status == RunStatus.SUCCEEDED and run.result() == 42


def test_a_flow_file_function_reaches_a_task_defined_in_another_module(settings):
    path = Path(__file__).parent / "flows" / "fn_to_builtin.py"
    run = rayline.run(str(path), settings=settings)
    assert run.status == RunStatus.SUCCEEDED and run.result() == 42
