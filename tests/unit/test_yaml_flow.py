"""YAML flows load into the same Graph as traced flows, and bad specs fail with file:line (F29)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from rayline.errors import SpecError, ValidationError
from rayline.sdk.graph import REQUIRED, ParamRef, Ref
from rayline.sdk.toposort import toposort
from rayline.sdk.yaml_flow import SpecValidationError, load_yaml_flow
from rayline.sdk.yaml_reader import MAX_BYTES, MAX_DEPTH

CASES = Path(__file__).parent / "yaml_cases"
REPO = Path(__file__).resolve().parents[2]


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    """1-based line of the ``nth`` line of ``path`` containing ``needle``."""
    hits = [i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    return hits[nth - 1]


def load_error(path: Path) -> SpecValidationError:
    with pytest.raises(SpecValidationError) as info:
        load_yaml_flow(path)
    return info.value


def test_good_flow_builds_nodes_in_file_order_with_upstream_params_and_outputs():
    path = CASES / "good.yaml"
    g = load_yaml_flow(path)
    assert g.name == "good"
    assert [n.id for n in g.nodes] == ["load", "first", "second", "sum", "hello"]
    assert g.node("load").kwargs == {"n": ParamRef("n")}
    assert g.node("second").upstream == ("load",)  # from needs:
    assert g.node("sum").upstream == ("first", "second")
    assert g.node("sum").kwargs == {"xs": [Ref("first"), Ref("second"), 10]}
    assert g.node("hello").kwargs == {"greeting": ParamRef("greeting"), "name": ParamRef("who")}
    assert g.outputs == [Ref("sum"), Ref("hello")]
    params = {p.name: p for p in g.params}
    assert (params["n"].default, params["n"].annotation) == (3, None)
    assert (params["greeting"].default, params["greeting"].annotation) == ("hi", str)
    assert params["who"].default is REQUIRED and params["who"].required
    assert g.location == f"{path}:1" and g.source == str(path)
    assert g.node("sum").location == f"{path}:{line_of(path, '  sum:')}"


def test_step_options_override_the_task_options():
    g = load_yaml_flow(CASES / "good.yaml")
    first, second = g.node("first").spec, g.node("second").spec
    assert (first.retry.retries, first.resources.cpus) == (1, 2)  # the @task's own options
    assert second.retry.retries == 4
    assert second.timeout == 30
    assert second.cache.enabled is True
    r = second.resources
    assert (r.cpus, r.gpus, r.memory, dict(r.custom)) == (0.5, 1, 1_000_000, {"special": 2.0})
    assert g.node("hello").spec.name == "greet"  # a plain function, wrapped as a task


def test_default_outputs_are_the_steps_nothing_depends_on(tmp_path):
    (tmp_path / "leaf_tasks.py").write_text(
        "def one():\n    return 1\n\ndef two(x):\n    return x\n"
    )
    path = tmp_path / "leaves.yaml"
    path.write_text(
        "steps:\n  a: {uses: 'leaf_tasks:one'}\n  b: {uses: 'leaf_tasks:two', with: {x: '${steps.a}'}}\n"
        "  c: {uses: 'leaf_tasks:one'}\n"
    )
    g = load_yaml_flow(path)
    assert g.name == "leaves"  # defaults to the file name
    assert g.outputs == [Ref("b"), Ref("c")]


def test_configs_hello_yaml_fans_out_and_in():
    g = load_yaml_flow(REPO / "configs" / "hello.yaml")
    assert [n.id for n in g.nodes] == ["load", "sq1", "sq2", "sq3", "total"]
    assert g.node("total").upstream == ("sq1", "sq2", "sq3")
    assert g.node("total").spec.retry.retries == 2
    assert g.outputs == Ref("total")
    numbers = g.node("load").spec.fn(3)
    squares = [g.node(f"sq{i}").spec.fn(numbers, i - 1) for i in (1, 2, 3)]
    assert g.node("total").spec.fn(squares) == 14


def test_malformed_yaml_names_file_line_and_column():
    path = CASES / "malformed.yaml"
    err = load_error(path)
    assert isinstance(err, SpecError) and isinstance(err, ValidationError)
    assert f"{path}:{line_of(path, 'other:')}:" in str(err)
    assert "malformed YAML" in str(err)
    assert f"line {line_of(path, 'with: {n: 3')}" in str(err)  # where the mapping began


def test_python_tag_is_rejected_with_its_line_and_never_executed(tmp_path):
    marker = Path(f"/tmp/pwned-{uuid.uuid4()}")
    path = tmp_path / "evil.yaml"
    path.write_text(
        "name: evil\nsteps:\n  a:\n    uses: 'x:y'\n"
        f'    with: {{cmd: !!python/object/apply:os.system ["touch {marker}"]}}\n'
    )
    err = load_error(path)
    assert f"{path}:5" in str(err)
    assert "!!python/object/apply:os.system" in str(err)
    assert not marker.exists()


def test_duplicate_keys_report_both_lines():
    path = CASES / "duplicate.yaml"
    err = load_error(path)
    first, second = line_of(path, "  load:"), line_of(path, "  load:", nth=2)
    assert f"{path}:{second}" in str(err)
    assert f"duplicate key 'load' at line {second} (first at line {first})" in str(err)


def test_cycle_is_reported_with_its_path_and_lines():
    path = CASES / "cycle.yaml"
    err = load_error(path)
    assert len(err.problems) == 1
    text = str(err)
    assert "a -> b -> c -> a" in text
    for step in "abc":
        assert f"{step}: line {line_of(path, f'  {step}:')}" in text
    assert err.problems[0].location == f"{path}:{line_of(path, '  a:')}"


def test_dangling_step_reference():
    path = CASES / "dangling_step.yaml"
    (problem,) = load_error(path).problems
    assert "${steps.nope}" in problem.message
    assert problem.node == "sum"
    assert problem.location == f"{path}:{line_of(path, 'steps.nope')}"


def test_dangling_param_reference():
    path = CASES / "dangling_param.yaml"
    (problem,) = load_error(path).problems
    assert "${params.nope}" in problem.message
    assert problem.location == f"{path}:{line_of(path, 'params.nope')}"


def test_modules_outside_the_allowlist_are_refused_before_import():
    path = CASES / "disallowed.yaml"
    sys.modules.pop("this", None)
    err = load_error(path)
    by_node = {p.node: p for p in err.problems}
    assert "module 'os' is not allowed" in by_node["pwn"].message
    assert by_node["pwn"].location == f"{path}:{line_of(path, 'os:system')}"
    assert "RAYLINE_ALLOWED_MODULES" in by_node["pwn"].hint
    assert "this" not in sys.modules  # refused before its code could run


def test_allowlist_env_var_admits_a_module(tmp_path, monkeypatch):
    path = tmp_path / "allowed.yaml"
    path.write_text("steps:\n  dump:\n    uses: 'json:dumps'\n    with: {obj: [1, 2]}\n")
    with pytest.raises(SpecValidationError, match="not allowed"):
        load_yaml_flow(path)
    monkeypatch.setenv("RAYLINE_ALLOWED_MODULES", " yaml , json ")
    g = load_yaml_flow(path)
    assert g.node("dump").spec.fn([1]) == "[1]"


def test_unknown_keys_are_refused_with_their_lines():
    path = CASES / "unknown_keys.yaml"
    err = load_error(path)
    locations = {p.message.split("'")[1]: p for p in err.problems}
    assert set(locations) == {"stepz", "retry", "cpu"}
    assert locations["stepz"].location == f"{path}:{line_of(path, 'stepz')}"
    assert locations["retry"].location == f"{path}:{line_of(path, 'retry:')}"
    assert "did you mean 'retries'" in locations["retry"].hint
    assert locations["cpu"].location == f"{path}:{line_of(path, 'cpu: 2')}"


def test_with_arguments_must_fit_the_function():
    path = CASES / "bad_with.yaml"
    err = load_error(path)
    messages = {p.message: p for p in err.problems}
    unknown = messages["task 'greet' has no parameter 'greting'"]
    assert unknown.location == f"{path}:{line_of(path, 'greting')}"
    assert "did you mean 'greeting'" in unknown.hint
    missing = messages["missing argument 'greeting' for task 'greet'"]
    assert missing.location == f"{path}:{line_of(path, 'with:')}"


def test_every_problem_is_reported_together():
    path = CASES / "many_problems.yaml"
    err = load_error(path)
    found = {p.node: p for p in err.problems}
    assert set(found) == {"load", "sum", "shell", "missing", "label"}
    assert "${params.m}" in found["load"].message
    assert "did you mean 'load'" in found["sum"].hint
    assert "'subprocess' is not allowed" in found["shell"].message
    assert "no attribute 'no_such_task'" in found["missing"].message
    assert "inside a longer string" in found["label"].message
    assert found["label"].location == f"{path}:{line_of(path, 'hello ${params.n}')}"
    assert str(err).startswith("5 problems found before running:")


def test_size_and_depth_are_bounded(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("steps: {}\n" + "#" * MAX_BYTES)
    assert "larger than" in str(load_error(big))
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n")
    assert f"deeper than {MAX_DEPTH}" in str(load_error(deep))
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &x [1, *x]\n")
    assert "deeper than" in str(load_error(loop))


def test_alias_bombs_are_bounded(tmp_path):
    rows = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for prev, name in zip("abcde", "bcdef", strict=True):
        rows.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(rows) + "\n")
    assert "expands to more than" in str(load_error(path))


def test_embedded_reference_and_literal_escape(tmp_path):
    (tmp_path / "echo_tasks.py").write_text("def echo(text):\n    return text\n")
    path = tmp_path / "echo.yaml"
    path.write_text("steps:\n  e: {uses: 'echo_tasks:echo', with: {text: 'cost $${HOME}'}}\n")
    assert load_yaml_flow(path).node("e").kwargs == {"text": "cost ${HOME}"}


def test_step_ids_and_needs_are_checked(tmp_path):
    (tmp_path / "id_tasks.py").write_text("def one():\n    return 1\n")
    path = tmp_path / "ids.yaml"
    path.write_text(
        "steps:\n  'bad id/..':\n    uses: 'id_tasks:one'\n  ok:\n    uses: 'id_tasks:one'\n"
        "    needs: [ok, ghost]\n"
    )
    messages = [p.message for p in load_error(path).problems]
    assert any("step id 'bad id/..' must match" in m for m in messages)
    assert any("needs: unknown step 'ghost'" in m for m in messages)
    assert any("ok -> ok" in m for m in messages)


def test_blank_with_and_params_mean_none(tmp_path):
    (tmp_path / "blank_tasks.py").write_text("def one():\n    return 1\n")
    path = tmp_path / "blank.yaml"
    path.write_text("params:\nsteps:\n  a:\n    uses: 'blank_tasks:one'\n    with:\n    needs:\n")
    g = load_yaml_flow(path)
    assert g.node("a").args == () and g.params == ()


def test_toposort_is_stable_and_reports_each_cycle():
    assert toposort({"z": (), "y": ("z",), "a": ()}) == (["z", "y", "a"], [])
    order, cycles = toposort(
        {"x": ("x",), "a": ("b",), "b": ("a",), "c": ("a", "d"), "d": ("c",), "e": ("d",), "f": ()}
    )
    assert order == ["f"]
    assert cycles == [["x"], ["a", "b"], ["c", "d"]]


def test_project_module_may_not_shadow_another_module(tmp_path):
    (tmp_path / "json.py").write_text("def dumps(obj):\n    return 'mine'\n")
    path = tmp_path / "shadow.yaml"
    path.write_text("steps:\n  d:\n    uses: 'json:dumps'\n    with: {obj: 1}\n")
    (problem,) = load_error(path).problems
    assert "name of a module in the standard library" in problem.message
    assert problem.location == f"{path}:3"
    import json

    assert json.dumps(1) == "1"  # the real one is still in place


def test_uses_must_name_a_task_or_function():
    path = CASES / "not_callable.yaml"
    messages = [p.message for p in load_error(path).problems]
    assert any("of type int, not a task or function" in m for m in messages)
    assert any("is not of the form 'module:function'" in m for m in messages)
