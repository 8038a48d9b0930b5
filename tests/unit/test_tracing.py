"""Tracing a Python flow into a Graph, and compile-time validation (no Ray needed)."""

from __future__ import annotations

import threading
import time

import pytest

from rayline import DefinitionError, TracingError, ValidationError, flow, task
from rayline.engine.compiler import compile_plan


@task
def make(n: int) -> list[int]:
    return list(range(n))


@task(retries=2, gpus=0.5)
def square(x: int) -> int:
    return x * x


@task
def total(xs: list) -> int:
    return sum(xs)


@task
def shout(s: str) -> str:
    return s.upper()


def test_task_called_outside_a_flow_runs_the_plain_function():
    assert square(4) == 16
    assert total([1, 2]) == 3


def test_flow_traces_fan_out_and_fan_in_with_call_sites():
    @flow
    def f(k: int = 2):
        parts = square.map(range(3))
        return total(parts)

    g = f.graph()
    assert [n.id for n in g.nodes] == ["square", "square-1", "square-2", "total"]
    assert g.node("total").upstream == ("square", "square-1", "square-2")
    file, line = g.node("square").location.rsplit(":", 1)
    assert file == __file__ and "square.map(range(3))" in open(file).read().splitlines()[int(line) - 1]
    assert g.node("square").spec.resources.gpus == 0.5
    assert g.params[0].name == "k" and g.params[0].default == 2 and g.params[0].annotation is int


def test_branching_on_a_traced_value_names_the_line_and_says_what_to_do():
    @flow
    def f():
        x = square(3)
        if x > 3:
            return x

    with pytest.raises(TracingError) as err:
        f.graph()
    msg = str(err.value)
    assert "test_tracing.py:" in msg and "inside a @task" in msg and "flow 'f'" in msg


def test_wrong_arguments_to_a_task_are_a_tracing_error_with_location():
    @flow
    def f():
        return square(1, 2)

    with pytest.raises(TracingError, match=r"test_tracing.py:\d+: flow 'f', task 'square'"):
        f.graph()


def test_bad_task_options_are_rejected_at_definition():
    with pytest.raises(DefinitionError, match="retries"):
        task(retries=-1)(lambda x: x)
    with pytest.raises(DefinitionError, match="timeout"):
        task(timeout=0)(lambda x: x)


def test_compile_reports_every_problem_together():
    @flow
    def f(n: int, label: str = "x"):
        return shout(square(n))  # int into str: type mismatch

    with pytest.raises(ValidationError) as err:
        compile_plan(f.graph(), {"bogus": 1})
    text = str(err.value)
    assert "unknown parameter 'bogus'" in text
    assert "missing required parameter 'n'" in text
    assert "argument 's' expects str but step 'square' returns int" in text
    assert len(err.value.problems) == 3


def test_unserialisable_constant_is_rejected_naming_the_attribute_path():
    class Holder:
        def __init__(self):
            self.name = "ok"
            self.lock = threading.Lock()

    @task
    def use(h) -> int:
        return 1

    @flow
    def f():
        return use(Holder())

    with pytest.raises(ValidationError) as err:
        compile_plan(f.graph(), {})
    assert "argument 'h'.lock" in str(err.value)
    assert "_thread.lock" in str(err.value)


def test_unsatisfiable_resources_fail_at_compile_naming_node_and_resource():
    @task(gpus=2)
    def train() -> int:
        return 1

    @task(resources={"TPU": 1})
    def tpu() -> int:
        return 1

    @flow
    def f():
        return [train(), tpu()]

    cpu_only = [{"CPU": 2.0, "memory": 1e9, "node:127.0.0.1": 1.0}]
    t0 = time.perf_counter()
    with pytest.raises(ValidationError) as err:
        compile_plan(f.graph(), {}, cluster=cpu_only)
    assert time.perf_counter() - t0 < 1.0
    text = str(err.value)
    assert "node 'train'" in text and "GPU=2" in text
    assert "node 'tpu'" in text and "'TPU'" in text


def test_overrides_merge_over_task_defaults():
    @flow
    def f():
        return square(2)

    plan = compile_plan(f.graph(), {}, overrides={"square": {"retries": 5, "cpus": 0.5}})
    node = plan.node("square")
    assert node.spec.retry.retries == 5
    assert node.ray_options["num_cpus"] == 0.5
    with pytest.raises(DefinitionError, match="unknown node"):
        compile_plan(f.graph(), {}, overrides={"nope": {"retries": 1}})


def test_tracing_and_compiling_ten_thousand_nodes_is_fast_enough_to_not_notice():
    @task
    def noop(x):
        return x

    @flow
    def big():
        s = noop(0)
        return noop([noop(s) for _ in range(10_000)])

    plan = compile_plan(big.graph(), {})
    assert len(plan.nodes) == 10_002
    assert plan.node("noop-10001").inputs[-1] == "noop-10000"


def test_retry_policy_never_retries_an_error_that_declares_itself_permanent():
    from rayline.sdk.resources import RetryPolicy

    class BadData(Exception):
        retryable = False

    policy = RetryPolicy(retries=3)
    assert policy.should_retry(ValueError("flaky"), 1)
    assert not policy.should_retry(BadData("corrupt file"), 1)
    assert not policy.should_retry(ValueError("flaky"), 4)


def test_worker_retries_option_reaches_the_ray_options():
    @task(worker_retries=0)
    def once() -> int:
        return 1

    @flow
    def f():
        return once()

    assert compile_plan(f.graph(), {}).node("once").ray_options["max_retries"] == 0


def test_built_in_tasks_are_reachable_by_name_even_after_their_modules_were_imported():
    import importlib

    import rayline.tasks as tasks
    from rayline.sdk.task import Task

    for name in tasks.__all__:
        importlib.import_module(tasks._TASKS[name])
        assert isinstance(getattr(tasks, name), Task), name


def test_an_unknown_task_option_is_named_with_its_line_and_the_closest_known_option():
    with pytest.raises(DefinitionError) as err:

        @task(num_cpus=0, retrys=2)
        def misspelt() -> int:
            return 1

    text = str(err.value)
    assert f"{__file__}:" in text and "task 'misspelt'" in text
    assert "'num_cpus' (did you mean 'cpus'?)" in text and "'retrys' (did you mean 'retries'?)" in text
