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
