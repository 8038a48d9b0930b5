"""train_sklearn (scikit-learn and dask-ml), split and evaluate, run as flows on the shared Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression

import rayline
from rayline import flow, task
from rayline.models.trained import TrainedModel
from rayline.store.states import RunStatus
from rayline.tasks.evaluation import evaluate, split
from rayline.tasks.features import fit_features
from rayline.tasks.train import train_sklearn

pytestmark = pytest.mark.usefixtures("ray_session")


def churn_table(n: int = 1500, seed: int = 0) -> pa.Table:
    """A plan (categorical), an age with gaps, and a label that depends on both."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "pro", "team"], n)
    age = rng.normal(40, 10, n)
    logit = (age - 40) / 5 + np.where(plan == "basic", 1.5, -1.5)
    churned = (logit + rng.logistic(size=n) * 0.3 > 0).astype(np.int64)
    age[rng.random(n) < 0.05] = np.nan
    return pa.table({"age": pa.array(age, from_pandas=True), "plan": plan, "churned": churned})  # NaN -> null


@task
def churn_data(n: int) -> pa.Table:
    return churn_table(n)


@task
def model_and_metrics(model: TrainedModel, metrics: dict) -> dict:
    return {"model": model, "metrics": metrics}


FEATURES = [{"impute": {"columns": ["age"], "strategy": "mean"}},
            {"standard_scale": ["age"]}, {"one_hot": ["plan"]}]


@flow
def classic(n: int = 1500):
    parts = split(churn_data(n), test_fraction=0.25, seed=1)
    fitted = fit_features(parts, FEATURES)
    model = train_sklearn(parts, estimator=LogisticRegression(), label="churned", features=fitted)
    return model_and_metrics(model, evaluate(model, parts))


def test_sklearn_model_trains_behind_features_and_scores_on_the_held_out_part(settings):
    run = rayline.run(classic, settings=settings)
    assert run.status == RunStatus.SUCCEEDED, run.error
    out = run.result()
    model, metrics = out["model"], out["metrics"]
    assert model.framework == "sklearn" and model.problem == "binary" and model.classes == (0, 1)
    assert model.features == ("age", "plan=basic", "plan=pro", "plan=team")
    assert metrics["rows"] == pytest.approx(1500 * 0.25, rel=0.15)
    assert metrics["accuracy"] > 0.85 and metrics["auc"] > 0.9 and metrics["logloss"] < 0.5
    # the estimator is a signed pickle in this run's artifact store, checked before loading
    from rayline.store.artifacts import ArtifactStore

    store = ArtifactStore.open(settings.home)
    assert store.verify(model.artifact)
    # serving-style records, with a missing age: the stored features are applied first
    pred = model.predict([{"age": None, "plan": "basic"}, {"age": 20.0, "plan": "team"}])
    assert pred.tolist() == [1, 0]
    # the fitted features were also saved as a JSON artifact
    assert model.fitted_features.digest and store.verify(model.fitted_features.digest)


def test_dask_ml_estimators_train_too(settings, home):
    from dask_ml.linear_model import LogisticRegression

    table = churn_table(800).drop_null()
    data = table.select(["age", "churned"])
    model = train_sklearn(data, estimator=LogisticRegression(), label="churned")
    assert isinstance(model, TrainedModel) and model.problem == "binary"
    metrics = evaluate(model, churn_table(400, seed=3).drop_null().select(["age", "churned"]))
    assert metrics["accuracy"] > 0.6


def test_regression_metrics(settings, home):
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    table = pa.table({"x": x, "y": 3 * x + rng.normal(scale=0.1, size=500)})
    parts = split(table, test_fraction=0.2)
    model = train_sklearn(parts, estimator=LinearRegression(), label="y")
    assert model.problem == "regression"
    m = evaluate(model, parts)
    assert set(m) == {"rows", "rmse", "mae", "r2"} and m["r2"] > 0.99
    with pytest.raises(ValueError, match="auc not available for a regression model"):
        evaluate(model, parts, metrics=["auc"])


def test_estimators_and_model_functions_can_be_named_as_yaml_flows_do(home):
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    table = pa.table({"x": x, "y": 2 * x})
    model = train_sklearn(table, estimator={"class": "sklearn.linear_model:Ridge", "params": {"alpha": 0.01}},
                          label="y")
    assert type(model.estimator()).__name__ == "Ridge" and evaluate(model, table)["r2"] > 0.99
    with pytest.raises(ValueError, match="'package.module:attribute'"):
        train_sklearn(table, estimator="Ridge", label="y")
