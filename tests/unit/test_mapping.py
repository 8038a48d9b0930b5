"""Fan-out over run-time values, in process (the local executor): tracing of ``task.map`` over
placeholders, compile-time expansion over parameters, run-time expansion over upstream outputs,
per-item records and resume, empty maps, maps of maps."""

from __future__ import annotations

import pytest

import rayline
from rayline import flow, task
from rayline.engine.compiler import compile_plan
from rayline.errors import TracingError
from rayline.sdk.graph import DeferredRange, ParamRef
from rayline.store.states import RunStatus, TaskStatus
from tests.coordination import ledger
from tests.integration.flows import mapped

OVER_OUTPUT = f"{mapped.__file__}:over_output"  # a source, so that the run can be resumed


@task
def square(x: int) -> int:
    return x * x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@flow
def hello(n: int = 5):
    return total(square.map(range(n)))


def test_map_over_range_of_a_parameter_is_one_deferred_map_node():
    g = hello.graph()
    node = g.node("square")
    assert node.mapped == "x"
    assert node.kwargs["x"] == DeferredRange(0, ParamRef("n"), 1)
    assert g.node("total").upstream == ("square",)


def test_map_over_a_parameter_is_expanded_by_the_compiler():
    plan = compile_plan(hello.graph(), {"n": 3})
    assert [n.id for n in plan.nodes] == ["square[0]", "square[1]", "square[2]", "square", "total"]
    assert plan.node("square").inputs == ("square[0]", "square[1]", "square[2]")
    assert dict(plan.node("square[2]").template) == {"x": 2}


def test_iterating_range_of_a_parameter_in_the_flow_body_is_refused():
    @flow
    def loop(n: int = 3):
        return [square(i) for i in range(n)]

    with pytest.raises(TracingError, match="placeholder"):
        loop.graph()


def test_the_readme_flow_runs_with_a_parameter(settings):
    run = rayline.run(hello, n=10, settings=settings, executor="local")
    assert run.status == RunStatus.SUCCEEDED and run.result() == sum(i * i for i in range(10))
    assert [t.node_id for t in run.tasks][:3] == ["square[0]", "square[1]", "square[2]"]


def test_items_fail_alone_and_resume_re_runs_only_them(settings, tmp_path):
    (tmp_path / "fail").write_text("3 5")
    run = rayline.run(OVER_OUTPUT, folder=str(tmp_path), n=8, settings=settings, executor="local")
    assert run.status == RunStatus.FAILED
    states = {t.node_id: t.status for t in run.tasks}
    assert [n for n, s in states.items() if s == TaskStatus.FAILED] == ["square[3]", "square[5]"]
    assert states["square"] == states["total"] == TaskStatus.UPSTREAM_FAILED
    assert ledger(tmp_path, "square") == 8

    (tmp_path / "fail").unlink()
    resumed = rayline.resume(run.run_id, settings=settings, executor="local")
    assert resumed.status == RunStatus.SUCCEEDED and resumed.result() == sum(x * x for x in range(8))
    assert ledger(tmp_path, "square") == 10
    assert ledger(tmp_path, "square-3") == ledger(tmp_path, "square-5") == 2
    assert ledger(tmp_path, "listing") == 1


def test_a_map_over_an_empty_output_is_an_empty_list(settings, tmp_path):
    run = rayline.run(OVER_OUTPUT, folder=str(tmp_path), n=0, settings=settings, executor="local")
    assert run.status == RunStatus.SUCCEEDED and run.result() == 0
    assert ledger(tmp_path, "square") == 0


def test_maps_of_maps(settings):
    run = rayline.run(mapped.maps_of_maps, n=5, settings=settings, executor="local")
    assert run.status == RunStatus.SUCCEEDED
    assert run.result() == sum(sum(range(i)) for i in range(5))


def test_a_map_over_a_value_that_is_not_iterable_fails_the_map_node(settings):
    @task
    def one() -> int:
        return 1

    @flow
    def bad():
        return total(square.map(one()))

    run = rayline.run(bad, settings=settings, executor="local")
    assert run.status == RunStatus.FAILED
    node = next(t for t in run.tasks if t.node_id == "square")
    assert node.status == TaskStatus.FAILED and "needs an iterable" in node.error_message


YAML_MAP = """\
name: yaml-map
params:
  folder: {type: str}
  n: {default: 4, type: int}
  xs: {default: [1, 2, 3], type: list}
steps:
  load: {uses: "tests.integration.flows.mapped:listing", with: {n: "${params.n}", folder: "${params.folder}"}}
  sq: {uses: "tests.integration.flows.mapped:square", map: "${steps.load}", with: {folder: "${params.folder}"}}
  sq_params: {uses: "tests.integration.flows.mapped:square", map: "${params.xs}", with: {folder: "${params.folder}"}}
  total: {uses: "tests.integration.flows.mapped:total", with: {xs: "${steps.sq}"}}
  total_params: {uses: "tests.integration.flows.mapped:total", with: {xs: "${steps.sq_params}"}}
outputs: ["${steps.total}", "${steps.total_params}"]
"""


@pytest.fixture
def tests_allowed(monkeypatch):
    monkeypatch.setenv("RAYLINE_ALLOWED_MODULES", "tests")


@pytest.mark.usefixtures("tests_allowed")
def test_a_yaml_step_maps_over_a_step_output_and_a_parameter(settings, tmp_path):
    path = tmp_path / "yaml_map.yaml"
    path.write_text(YAML_MAP)
    run = rayline.run(path, folder=str(tmp_path), settings=settings, executor="local")
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert list(run.result()) == [0 + 1 + 4 + 9, 1 + 4 + 9]
    ids = {t.node_id for t in run.tasks}
    assert {"sq[0]", "sq[3]", "sq_params[2]", "sq", "sq_params"} <= ids


@pytest.mark.usefixtures("tests_allowed")
def test_a_yaml_map_that_also_gets_the_mapped_parameter_is_a_definition_error(tmp_path):
    from rayline.errors import DefinitionError
    from rayline.sdk.yaml_flow import load_yaml_flow

    path = tmp_path / "bad_map.yaml"
    path.write_text(YAML_MAP.replace('map: "${steps.load}", with: {folder', 'map: "${steps.load}", with: {x: 1, folder'))
    with pytest.raises(DefinitionError, match=r"bad_map.yaml:8.*cannot be mapped"):
        load_yaml_flow(path)


def test_configs_hello_map_yaml_maps_over_a_step_output(settings):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / "hello_map.yaml"
    run = rayline.run(path, n=10, settings=settings, executor="local")
    assert run.status == RunStatus.SUCCEEDED and run.result() == sum(i * i for i in range(1, 11))


def test_indexing_with_a_parameter_is_still_refused():
    @flow
    def pick(n: int = 1):
        return square([1, 2, 3][n])

    with pytest.raises(TracingError, match="placeholder"):
        pick.graph()


def test_resume_after_a_failure_downstream_of_a_map_adopts_the_whole_map(settings, tmp_path):
    (tmp_path / "fail-total").write_text("")
    source = f"{mapped.__file__}:over_output_then_check"
    run = rayline.run(source, folder=str(tmp_path), n=5, settings=settings, executor="local")
    assert run.status == RunStatus.FAILED and ledger(tmp_path, "square") == 5
    (tmp_path / "fail-total").unlink()
    resumed = rayline.resume(run.run_id, settings=settings, executor="local")
    assert resumed.status == RunStatus.SUCCEEDED and resumed.result() == sum(x * x for x in range(5))
    assert ledger(tmp_path, "square") == 5 and ledger(tmp_path, "listing") == 1
