"""A flow whose hooks write what they were given to the file ``$HOOK_LOG`` (JSON lines);
``-p fail=true`` makes its task raise a multi-line error, ``RAYLINE_TEST_HOOK_RAISES=1`` makes
the failure hook raise."""

from __future__ import annotations

import json
import os

from rayline import flow, task


def _log(**seen) -> None:
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(json.dumps(seen, default=str) + "\n")


def record_failure(*, run_id, flow, status, error):
    _log(hook="on_failure", run_id=run_id, flow=flow, status=status, error=error)
    if os.environ.get("RAYLINE_TEST_HOOK_RAISES"):
        raise RuntimeError("the hook itself broke")


def record_success(*, run_id, run, **rest):
    _log(hook="on_success", run_id=run_id, record_status=run.status.value, rest=sorted(rest))


@task
def work(fail: bool) -> int:
    if fail:
        raise ValueError("schema contract violated (2 problems):\n  column 'age': int64 != string\n  file part-3.parquet")
    return 1


@flow(on_failure=record_failure, on_success=[record_success])
def hooked(fail: bool = False):
    return work(fail)
