"""Subflows: a flow called in a flow is part of the same run, its nodes namespaced under the
call; its parameters are checked when the outer flow is traced."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import rayline
from rayline import flow
from rayline.cli.main import cli
from rayline.errors import DefinitionError
from rayline.store.states import RunStatus
from tests.integration.flows import nested


def test_a_subflow_is_traced_into_the_outer_graph_under_its_namespace():
    ids = [n.id for n in nested.nightly.graph().nodes]
    assert ids == [
        "train_all.fit", "train_all.fit-1", "train_all.fit-2", "train_all.evaluate",
        "train_all-1.fit", "train_all-1.fit-1", "train_all-1.evaluate", "publish",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: nested.train_all(scale=1, fold=2), "unexpected keyword argument 'fold'"),
        (lambda: nested.train_all(), "missing a required argument: 'scale'"),
    ],
)
def test_unknown_or_missing_subflow_parameters_are_definition_errors_at_the_call(call, message):
    @flow
    def outer():
        return call()

    with pytest.raises(DefinitionError, match=rf"test_subflows.py:\d+: flow 'outer' calls subflow 'train_all'.*{message}"):
        outer.graph()


def test_a_subflow_runs_in_the_same_run(settings):
    run = rayline.run(nested.nightly, scale=2, settings=settings, executor="local")
    assert run.status == RunStatus.SUCCEEDED
    assert run.result() == [(0 + 1 + 2) * 2, (0 + 1) * 10]
    ids = {t.node_id for t in run.tasks}
    assert {"train_all.fit-2", "train_all.evaluate", "train_all-1.fit-1", "publish"} <= ids


def test_runs_show_lists_a_subflows_nodes_namespaced(home):
    path = Path(nested.__file__)
    ran = CliRunner().invoke(cli, ["run", f"{path}:nightly", "--local", "--json", "-p", "scale=3"])
    assert ran.exit_code == 0, ran.output
    import json

    run_id = json.loads(ran.stdout)["run_id"]
    shown = CliRunner().invoke(cli, ["runs", "show", run_id])
    assert shown.exit_code == 0, shown.output
    for node in ("train_all.fit-1", "train_all.evaluate", "train_all-1.evaluate", "publish"):
        assert node in shown.output


def test_a_subflow_maps_over_the_outer_flows_parameter(settings):
    run = rayline.run(nested.folds_from_a_parameter, n=4, settings=settings, executor="local")
    assert run.status == RunStatus.SUCCEEDED and run.result() == 0 + 1 + 2 + 3
    assert {"train_all.fit[3]", "train_all.fit", "train_all.evaluate"} <= {t.node_id for t in run.tasks}


INNER_YAML = """\
name: inner
params:
  n: {type: int}
steps:
  load: {uses: "hello_tasks:make_numbers", with: {n: "${params.n}"}}
  square: {uses: "hello_tasks:square_one", map: "${steps.load}"}
  total: {uses: "hello_tasks:total", with: {xs: "${steps.square}"}}
outputs: "${steps.total}"
"""

OUTER_YAML = """\
name: outer
params:
  n: {default: 3, type: int}
steps:
  first: {uses: "inner.yaml", with: {n: "${params.n}"}}
  python: {uses: "tests.integration.flows.nested:train_all", with: {scale: "${steps.first}", folds: 2}}
  both: {uses: "tests.integration.flows.nested:publish", with: {a: "${steps.first}", b: "${steps.python}"}}
outputs: "${steps.both}"
"""


def _write_yaml_pair(folder: Path, outer: str = OUTER_YAML) -> Path:
    import shutil

    module = f"tasks_{folder.name}"  # one name per test: a project module may not shadow another
    shutil.copy(Path(__file__).resolve().parents[2] / "configs" / "hello_tasks.py", folder / f"{module}.py")
    (folder / "inner.yaml").write_text(INNER_YAML.replace("hello_tasks:", f"{module}:"))
    (folder / "outer.yaml").write_text(outer)
    return folder / "outer.yaml"


def test_a_yaml_step_uses_a_yaml_flow_and_a_python_flow(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYLINE_ALLOWED_MODULES", "tests")
    run = rayline.run(_write_yaml_pair(tmp_path), n=3, settings=settings, executor="local")
    assert run.status == RunStatus.SUCCEEDED, run.error
    first = 1 + 4 + 9
    assert list(run.result()) == [first, (0 + 1) * first]
    ids = {t.node_id for t in run.tasks}
    assert {"first.load", "first.square[2]", "first.total", "python.fit", "python.fit[1]", "python.evaluate", "both"} <= ids


def test_a_yaml_subflow_with_an_unknown_parameter_is_a_definition_error(tmp_path, monkeypatch):
    from rayline.sdk.yaml_flow import load_yaml_flow

    monkeypatch.setenv("RAYLINE_ALLOWED_MODULES", "tests")
    path = _write_yaml_pair(tmp_path, OUTER_YAML.replace('with: {n: "${params.n}"}', 'with: {m: 1}'))
    with pytest.raises(DefinitionError) as info:
        load_yaml_flow(path)
    text = str(info.value)
    assert "outer.yaml:5" in text, text
    assert "subflow 'inner' has no parameter 'm'" in text
    assert "missing parameter 'n' for subflow 'inner'" in text
