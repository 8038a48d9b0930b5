"""``runtime_env`` mistakes are definition errors found before anything runs, each at the
user's ``file:line`` (the task's definition, or the YAML step), all reported together."""

from __future__ import annotations

from pathlib import Path

import pytest

import rayline
from rayline import flow, task
from rayline.engine.compiler import compile_plan
from rayline.engine.executors import pool
from rayline.errors import DefinitionError, SpecValidationError, ValidationError

HERE = Path(__file__).resolve()


def line_of(fn) -> str:
    return f"{HERE}:{fn.spec.fn.__code__.co_firstlineno}"


@task(runtime_env={"env_var": {"A": "1"}, "env_vars": {"THREADS": 4}, "pip": 7, "working_dir": "no/such/dir"})
def badly_configured() -> int:
    return 1


@task(runtime_env={"env_vars": {"MODE": "fast"}, "pip": ["termcolor==3.3.0"], "working_dir": str(HERE.parent)})
def well_configured() -> int:
    return 1


@flow
def bad_flow():
    return badly_configured()


@flow
def good_flow():
    return [well_configured(), plain()]


@task
def plain() -> int:
    return 2


def test_bad_runtime_envs_are_reported_together_at_the_tasks_line() -> None:
    with pytest.raises(ValidationError) as err:
        compile_plan(bad_flow.graph())
    text = str(err.value)
    assert len(err.value.problems) == 4
    assert all(p.location == line_of(badly_configured) for p in err.value.problems)
    assert "unknown key 'env_var'" in text and "did you mean 'env_vars'?" in text
    assert "values must be strings: THREADS=4" in text
    assert "runtime_env['pip'] must be a list" in text
    assert "'no/such/dir' does not exist" in text


def test_a_good_runtime_env_goes_to_the_nodes_ray_options_and_off_the_pool() -> None:
    plan = compile_plan(good_flow.graph())
    own, other = plan.node("well_configured"), plan.node("plain")
    assert own.ray_options["runtime_env"]["env_vars"] == {"MODE": "fast"}
    assert "runtime_env" not in other.ray_options
    assert not pool.eligible(own) and pool.eligible(other)


def test_runtime_env_must_be_a_mapping() -> None:
    with pytest.raises(DefinitionError, match="runtime_env must be a mapping"):
        task(runtime_env=["pip"])(lambda: 1)


def test_runtime_env_can_be_set_for_one_node_from_outside() -> None:
    plan = compile_plan(good_flow.graph(), overrides={"plain": {"runtime_env": {"env_vars": {"X": "1"}}}})
    assert plan.node("plain").ray_options["runtime_env"] == {"env_vars": {"X": "1"}}


def test_yaml_steps_take_a_runtime_env_checked_at_their_line(tmp_path: Path) -> None:
    (tmp_path / "steps.py").write_text("def one() -> int:\n    return 1\n")
    (tmp_path / "data").mkdir()
    good = tmp_path / "good.yaml"
    good.write_text('steps:\n  one:\n    uses: "steps:one"\n'
                    '    runtime_env: {env_vars: {MODE: fast}, working_dir: data}\n')
    graph = rayline.load_flow(good)
    env = graph.node("one").spec.runtime_env
    assert env == {"env_vars": {"MODE": "fast"}, "working_dir": str(tmp_path / "data")}
    bad = tmp_path / "bad.yaml"
    bad.write_text('steps:\n  one:\n    uses: "steps:one"\n    retries: 1\n'
                   '    runtime_env: {env_vars: {N: 3}, pipp: [x], working_dir: missing}\n')
    with pytest.raises(SpecValidationError) as err:
        rayline.load_flow(bad)
    problems = err.value.problems
    assert len(problems) == 3 and all(p.location == f"{bad}:5" for p in problems)
    assert "did you mean 'pip'?" in str(err.value)
