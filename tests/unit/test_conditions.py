"""Conditional steps, in process: ``with rayline.when(ref)`` in Python and ``if:`` in YAML. The
branch not taken is SKIPPED with everything downstream of it, and the run still SUCCEEDS."""

from __future__ import annotations

import pytest

import rayline
from rayline.errors import TracingError
from rayline.store.states import RunStatus, TaskStatus
from tests.integration.flows import branching


def _states(run) -> dict[str, TaskStatus]:
    return {t.node_id: t.status for t in run.tasks}


def test_a_condition_is_an_upstream_of_every_task_in_its_block():
    g = branching.maybe_retrain.graph()
    assert g.node("train").when == ("check",) and "check" in g.node("train").upstream
    assert g.node("register").when == ("check",)
    assert g.node("report").when == ()


def test_a_false_condition_skips_the_branch_and_the_run_succeeds(settings):
    run = rayline.run(branching.report_only, go=False, settings=settings, executor="local")
    assert run.status == RunStatus.SUCCEEDED, run.error
    states = _states(run)
    assert states["train"] == states["register"] == TaskStatus.SKIPPED
    assert states["check"] == states["report"] == TaskStatus.SUCCEEDED
    assert run.result() == 5


def test_a_true_condition_takes_the_branch(settings):
    run = rayline.run(branching.maybe_retrain, go=True, settings=settings, executor="local")
    assert run.status == RunStatus.SUCCEEDED
    assert set(_states(run).values()) == {TaskStatus.SUCCEEDED}
    assert run.result() == {"report": 5, "name": "model-40"}


def test_when_takes_a_task_output_only():
    @rayline.flow
    def bad(go: bool = True):
        with rayline.when(go):
            branching.train(1)

    with pytest.raises(TracingError, match="takes the output of a task"):
        bad.graph()


YAML_IF = """\
name: yaml-if
params:
  go: {default: false, type: bool}
steps:
  check: {uses: "tests.integration.flows.branching:check", with: {go: "${params.go}"}}
  train: {uses: "tests.integration.flows.branching:train", with: {x: 3}, if: "${steps.check}"}
  register: {uses: "tests.integration.flows.branching:register", with: {model: "${steps.train}"}}
  report: {uses: "tests.integration.flows.branching:report", with: {x: 3}}
outputs: "${steps.report}"
"""


@pytest.mark.parametrize("go", [False, True])
def test_a_yaml_step_with_if_runs_only_when_its_step_is_truthy(settings, tmp_path, monkeypatch, go):
    monkeypatch.setenv("RAYLINE_ALLOWED_MODULES", "tests")
    path = tmp_path / "yaml_if.yaml"
    path.write_text(YAML_IF)
    run = rayline.run(path, go=go, settings=settings, executor="local")
    assert run.status == RunStatus.SUCCEEDED, run.error
    want = TaskStatus.SUCCEEDED if go else TaskStatus.SKIPPED
    assert _states(run)["train"] == _states(run)["register"] == want
