"""tune on the shared 2-CPU Ray: ASHA over a torch model and a search over an estimator."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import rayline
from rayline import flow, task
from rayline.store.states import RunStatus
from rayline.tasks.evaluation import evaluate
from rayline.tasks.tuning import TuneResult, parse_search_space, tune

pytestmark = pytest.mark.usefixtures("ray_session")


def toy_table(n: int = 1200, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(np.int64)
    return pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})


def make_mlp(n_features: int, hidden: int = 8):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))


@task
def toy_data(n: int) -> pa.Table:
    return toy_table(n)


SPACE = {"lr": {"loguniform": [1e-3, 1e-1]}, "hidden": {"choice": [4, 16]}}  # as YAML gives it


@flow
def search(samples: int = 4):
    return tune(toy_data(1200), model_fn=make_mlp, label="y", search_space=SPACE,
                num_samples=samples, epochs=4, batch_size=64, scheduler="asha")


def test_asha_over_four_torch_trials_returns_the_best_config_and_its_model(settings):
    run = rayline.run(search, settings=settings)
    assert run.status == RunStatus.SUCCEEDED, run.error
    result = run.result()
    assert isinstance(result, TuneResult) and result.metric == "val_loss" and result.mode == "min"
    assert len(result.trials) == 4
    assert set(result.best_config) == {"lr", "hidden"} and result.best_config["hidden"] in (4, 16)
    assert 1e-3 <= result.best_config["lr"] <= 1e-1
    losses = [t["metrics"]["val_loss"] for t in result.trials]
    assert result.best_metrics["val_loss"] == pytest.approx(min(losses))
    model = result.model
    assert model.framework == "torch" and model.model_params == {"hidden": result.best_config["hidden"]}
    assert evaluate(result, toy_table(500, seed=5))["accuracy"] > 0.8


def test_an_estimator_search_from_python_domains(settings, home):
    from ray import tune as rt
    from sklearn.linear_model import LogisticRegression

    result = tune(toy_table(600), estimator=LogisticRegression(), label="y",
                  search_space={"C": rt.grid_search([0.001, 1.0])}, num_samples=1, scheduler="fifo")
    assert result.metric == "val_accuracy" and result.mode == "max"
    assert result.best_config == {"C": 1.0}
    assert result.model.framework == "sklearn" and result.model.artifact
    assert evaluate(result.model, toy_table(300, seed=9))["accuracy"] > 0.9


def test_search_spaces_from_yaml_data_and_their_errors():
    space = parse_search_space({"lr": {"loguniform": [1e-4, 1e-1]}, "layers": {"randint": [1, 4]},
                                "opt": {"choice": ["adam", "sgd"]}, "epochs": 3})
    assert space["epochs"] == 3 and space["opt"].categories == ["adam", "sgd"]
    assert 1e-4 <= space["lr"].sample() <= 1e-1 and 1 <= space["layers"].sample() < 4
    with pytest.raises(ValueError, match="search space 'lr': loguniform takes a list"):
        parse_search_space({"lr": {"loguniform": 0.1}})
    with pytest.raises(ValueError, match="exactly one of model_fn, estimator or trainable"):
        tune(toy_table(10), search_space={}, label="y")
