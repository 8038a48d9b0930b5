"""Task logs on the shared local Ray and in-process: what each attempt printed is kept with the
run under the artifact store and read back through ``Run.logs`` and the run's view."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

import rayline
from rayline import context, flow, task
from rayline.store.states import RunStatus
from tests.fixtures.doomed import doomed_flow

EXECUTORS = ["ray", "local"]


@task
def chatty(n: int) -> int:
    print(f"chatty got {n}")
    print("a line on stderr", file=sys.stderr)
    warnings.warn("this is a warning", UserWarning, stacklevel=1)
    subprocess.run(["echo", "echoed by a subprocess"], check=True)
    return n * 2


@flow
def chatty_flow(n: int = 3):
    return chatty(n)


@task(retries=2, backoff=0)
def flaky() -> str:
    attempt = context.current().attempt
    print(f"this is attempt {attempt}")
    if attempt < 3:
        raise RuntimeError(f"attempt {attempt} fails")
    return "ok"


@flow
def flaky_flow():
    return flaky()


@task
def loud(lines: int) -> int:
    for i in range(lines):
        print(f"line {i:05d} " + "x" * 40)
    return lines


@flow
def loud_flow(lines: int = 10000):
    return loud(lines)


@pytest.fixture
def executor(request, ray_session):
    return None if request.param == "ray" else "local"


@pytest.mark.parametrize("executor", EXECUTORS, indirect=True)
@pytest.mark.parametrize("pool", ["off", "on"])
def test_what_a_task_printed_is_kept_with_the_run(settings, executor, pool):
    if pool == "on" and executor == "local":
        pytest.skip("warm actors are Ray's")
    settings = settings.model_copy(update={"pool": pool})  # "on": the task runs on a warm actor
    run = rayline.run(chatty_flow, settings=settings, executor=executor)
    assert run.status == RunStatus.SUCCEEDED
    text = rayline.load_run(run.run_id, settings=settings).logs("chatty")
    assert text.count("chatty got 3\n") == 1 and text.count("a line on stderr\n") == 1
    if executor is None:  # on a Ray worker nothing else catches warnings (pytest does here)
        assert "UserWarning: this is a warning" in text
        assert "echoed by a subprocess\n" in text  # the worker's descriptors 1 and 2 are captured
    attempt_log = run.view().task("chatty").attempt_log
    assert attempt_log[0].log and attempt_log[0].log.endswith("/chatty/1.log")


@pytest.mark.parametrize("executor", EXECUTORS, indirect=True)
def test_each_attempt_of_a_retried_task_has_its_own_log(settings, executor):
    run = rayline.run(flaky_flow, settings=settings, executor=executor)
    assert run.status == RunStatus.SUCCEEDED
    for k in (1, 2, 3):
        text = run.logs("flaky", attempt=k)
        assert f"this is attempt {k}\n" in text
        assert ("RuntimeError: attempt" in text) == (k < 3)  # a failed attempt's log ends with its traceback
    whole = run.logs("flaky")
    assert [ln for ln in whole.splitlines() if ln.startswith("--- attempt")] == [
        "--- attempt 1 ---", "--- attempt 2 ---", "--- attempt 3 ---"]
    with pytest.raises(rayline.errors.UsageError, match="no log for attempt 4"):
        run.logs("flaky", attempt=4)
    with pytest.raises(rayline.errors.UsageError, match="no task 'nope'"):
        run.logs("nope")


@pytest.mark.parametrize("executor", EXECUTORS, indirect=True)
def test_a_log_is_capped_per_attempt_keeping_head_and_tail(settings, executor, monkeypatch):
    monkeypatch.setenv("RAYLINE_TASK_LOG_LIMIT", "4096")
    run = rayline.run(loud_flow, settings=settings, executor=executor)
    assert run.status == RunStatus.SUCCEEDED
    text = run.logs("loud")
    assert text.startswith("line 00000 ")
    assert text.rstrip().endswith("line 09999 " + "x" * 40)
    assert "capped at 4096 bytes (RAYLINE_TASK_LOG_LIMIT)" in text
    assert len(text.encode()) < 4096 + 200


@pytest.mark.parametrize("executor", EXECUTORS, indirect=True)
def test_a_failed_task_carries_the_last_lines_of_its_log(settings, executor):
    run = rayline.run(doomed_flow, settings=settings, executor=executor)
    assert run.status == RunStatus.FAILED
    tail = run.view().task("doomed").log_tail
    lines = tail.splitlines()
    # what the task printed; the traceback rayline adds to the log is the task's error, shown apart
    assert len(lines) == 20 and lines[-1] == "working on step 29" and "Traceback" not in tail
    assert "working on step 10" in tail and "working on step 9\n" not in tail
    assert run.view().to_json()["tasks"][0]["log_tail"] == tail


def test_the_run_page_shows_each_tasks_logs_and_agrees_with_runs_show(settings):
    from rayline.store.runs import RunStore
    from rayline.ui.pages_runs import run_page

    run = rayline.run(doomed_flow, settings=settings, executor="local")
    with RunStore(settings.run_store_url) as store:
        page = run_page(store, settings, run.run_id)
    assert [(p.node_id, p.attempt) for p in page.logs] == [("doomed", 1)]
    assert "working on step 0\n" in page.logs[0].text and not page.logs_cut
    assert page.view.to_json() == run.view().to_json()  # one read model: same tails, same locations
