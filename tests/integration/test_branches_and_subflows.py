"""Conditions and subflows on the shared local Ray: a skipped branch, a taken one, and a subflow
whose namespaced nodes run in the same run."""

from __future__ import annotations

import pytest

import rayline
from rayline.store.states import RunStatus, TaskStatus
from tests.integration.flows import branching, nested

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.mark.parametrize("go", [False, True])
def test_a_condition_skips_or_takes_its_branch_and_the_run_succeeds(settings, go):
    run = rayline.run(branching.report_only, go=go, settings=settings)
    assert run.status == RunStatus.SUCCEEDED, run.error
    states = {t.node_id: t.status for t in run.tasks}
    want = TaskStatus.SUCCEEDED if go else TaskStatus.SKIPPED
    assert states["train"] == states["register"] == want
    assert states["report"] == TaskStatus.SUCCEEDED


def test_a_subflow_runs_in_the_same_run_under_its_namespace(settings):
    run = rayline.run(nested.folds_from_a_parameter, n=3, settings=settings)
    assert run.status == RunStatus.SUCCEEDED and run.result() == 0 + 1 + 2
    assert {"train_all.fit[2]", "train_all.evaluate"} <= {t.node_id for t in run.tasks}
