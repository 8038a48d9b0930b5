"""On Ray, a task never opens the database: ``register_model`` registers in its copy of the
registry, the model's bytes go to the artifact store, and the driver commits the version with
the task's success; a task that opens the database itself is refused on its worker."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

import rayline
from rayline import flow, task
from rayline.models.registry.sql import ModelRegistry
from rayline.store.states import RunStatus
from rayline.tasks.registry import register_model
from rayline.tasks.train import train_sklearn

pytestmark = pytest.mark.usefixtures("ray_session")


@task
def frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    x["label"] = (x.a > 0).astype(int)
    return x


@task
def where_it_ran() -> bool:
    from rayline.store.sql import on_ray_worker

    return on_ray_worker()


@flow
def train_and_register():
    model = train_sklearn(frame(200), estimator=LogisticRegression(), label="label")
    return {"version": register_model(model, name="on-ray", alias="staging"), "on_worker": where_it_ran()}


@task
def sneaky() -> int:
    with ModelRegistry() as reg:  # opens the database: not on a Ray worker
        return len(reg.list_models())


@flow
def opens_the_database():
    return sneaky()


def test_a_model_registered_on_a_ray_worker_is_committed_by_the_driver(settings, monkeypatch):
    run = rayline.run(train_and_register, settings=settings, executor="ray")
    assert run.status == RunStatus.SUCCEEDED, run.error
    out = run.result()
    assert out["on_worker"] is True  # the tasks ran on Ray workers, where the database is refused
    assert (out["version"].version, out["version"].aliases) == (1, ("staging",))
    from rayline.cli.models import models_group

    monkeypatch.setenv("RAYLINE_HOME", str(settings.resolved_home))
    listed = CliRunner().invoke(models_group, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    (model,) = json.loads(listed.output)
    assert model["name"] == "on-ray" and model["latest_version"] == 1
    with ModelRegistry(settings) as reg:
        mv = reg.get("on-ray", alias="staging")
        assert mv.lineage["run_id"] == run.run_id
        assert type(reg.load(mv)).__name__ == "TrainedModel"  # its bytes in the artifact store, verified


def test_a_task_that_opens_the_database_on_a_ray_worker_is_refused(settings):
    run = rayline.run(opens_the_database, settings=settings, executor="ray")
    assert run.status == RunStatus.FAILED
    assert "a Ray worker may not open the run store" in run.error
    assert "@task(registry=True)" in run.error
