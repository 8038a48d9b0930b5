"""The real demand of the built-in tasks that wait without a CPU: ``train_torch``'s workers and
``tune``'s trials are their gang; the compile-time check refuses a gang the cluster can never
hold, naming the task, the resource and what the cluster has; accounting and admission count
the whole gang."""

from __future__ import annotations

import time

import pytest

from rayline import flow
from rayline.engine.accounting import node_held
from rayline.engine.compiler import compile_plan
from rayline.errors import ValidationError
from rayline.sdk.resources import Gang
from rayline.tasks import train_torch, tune

CPU_ONLY = [{"CPU": 2.0, "memory": 4e9, "node:127.0.0.1": 1.0}]
THREE_GPUS = [{"CPU": 2.0, "GPU": 3.0, "memory": 4e9}]


def make_mlp(n: int):  # never called: the check runs before anything trains
    raise AssertionError


@flow
def training(workers: int = 2, gpu: bool = True):
    return train_torch([{"x": 1.0, "y": 0}], model_fn=make_mlp, label="y", num_workers=workers, use_gpu=gpu)


@flow
def sweep(gpus: float = 1.0):
    return tune([{"x": 1.0, "y": 0}], model_fn=make_mlp, label="y", search_space={"lr": 0.1},
                num_samples=4, max_concurrent=3, resources_per_trial={"cpu": 1, "gpu": gpus})  # fmt: skip


def test_a_gpu_training_on_a_cluster_without_gpus_is_refused_at_compile_naming_task_resource_and_cluster():
    t0 = time.perf_counter()
    with pytest.raises(ValidationError) as err:
        compile_plan(training.graph(), {}, cluster=CPU_ONLY)
    assert time.perf_counter() - t0 < 1.0
    text = str(err.value)
    assert "task 'train_torch' asks for 2 workers of {CPU=1, GPU=1} each" in text
    assert "GPU=2 in all, at once" in text and "it has GPU=0" in text
    assert "node 'train_torch'" in text and "CPU=2" in text


def test_a_gang_fits_when_its_bundles_pack_onto_the_nodes_and_not_when_they_only_sum_up():
    plan = compile_plan(training.graph(), {}, cluster=THREE_GPUS)
    (node,) = plan.nodes
    assert node.gang is not None and node.gang.atomic and len(node.gang.bundles) == 2
    two_nodes = [{"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}]
    compile_plan(training.graph(), {}, cluster=two_nodes)  # one worker per node
    with pytest.raises(ValidationError, match="3 workers"):
        compile_plan(training.graph(), {"workers": 3}, cluster=two_nodes)
    compile_plan(training.graph(), {"gpu": False}, cluster=CPU_ONLY)


def test_bad_worker_counts_are_problems_at_compile():
    with pytest.raises(ValidationError, match="num_workers must be an integer >= 1"):
        compile_plan(training.graph(), {"workers": 0})


def test_a_tune_trial_must_fit_on_some_node_and_its_concurrency_is_capped_by_the_samples():
    with pytest.raises(ValidationError) as err:
        compile_plan(sweep.graph(), {}, cluster=CPU_ONLY)
    assert "task 'tune' asks for 3 concurrent trials" in str(err.value) and "for one" in str(err.value)
    plan = compile_plan(sweep.graph(), {"gpus": 0.0}, cluster=CPU_ONLY)  # more trials than CPUs: fewer at once
    assert not plan.nodes[0].gang.atomic


def test_accounting_and_admission_count_the_whole_gang():
    plan = compile_plan(training.graph(), {})
    assert node_held(plan.nodes[0]) == (2.0, 2.0, None)  # the task itself holds nothing
    sweep_plan = compile_plan(sweep.graph(), {})
    assert node_held(sweep_plan.nodes[0]) == (3.0, 3.0, None)


def test_a_gang_bundle_must_ask_for_something():
    with pytest.raises(ValueError, match="some resource > 0"):
        Gang.of([{"CPU": 0}])
    assert Gang.of([{"CPU": 1, "GPU": 1}] * 2).totals() == {"CPU": 2.0, "GPU": 2.0}


def test_elastic_worker_counts_are_refused_at_compile_until_supported():
    @flow
    def elastic():
        return train_torch([{"x": 1.0, "y": 0}], model_fn=make_mlp, label="y", num_workers=(1, 2))

    with pytest.raises(ValidationError, match="num_workers must be an integer >= 1, got \\(1, 2\\)"):
        compile_plan(elastic.graph(), {})


def test_serving_replicas_that_ask_for_gpus_are_refused_on_a_cluster_without_any():
    from rayline.tasks import rollout_if_promoted

    @flow
    def rollout():
        decision = {"promoted": True, "model_name": "m", "alias": "production", "challenger_version": 2}
        return rollout_if_promoted(decision, app_name="m", num_replicas=2, ray_actor_options={"num_gpus": 1})

    with pytest.raises(ValidationError, match="task 'rollout_if_promoted' asks for 2 serving replicas"):
        compile_plan(rollout.graph(), {}, cluster=CPU_ONLY)
    plan = compile_plan(rollout.graph(), {}, cluster=THREE_GPUS)
    assert node_held(plan.nodes[0]) == (1.0, 2.0, None)
