"""The retraining flow of the continuous-training test, attached there to a drift trigger: read
the data that landed since the last run, train, register, gate the challenger against the
champion on a trusted holdout, and roll it out (in place, logging the served inputs) if promoted.
Built-in tasks only, so the Ray workers import nothing from this file."""

from __future__ import annotations

from rayline import flow
from rayline.tasks import (
    gate_and_promote,
    read_parquet,
    register_model,
    rollout_if_promoted,
    train_sklearn,
)


@flow
def retrain(landing: str, holdout: str, port: int, app_name: str = "churn", model_name: str = "churn",
            margin: float = 0.05, flush_s: float = 1.0):  # fmt: skip
    new = read_parquet(landing, incremental=True)  # only the files the last run did not see
    model = train_sklearn(new, estimator="sklearn.linear_model:LogisticRegression", label="label")
    version = register_model(model, name=model_name)
    decision = gate_and_promote(version, read_parquet(holdout), model_name=model_name, margin=margin,
                                label="label")  # fmt: skip
    return rollout_if_promoted(decision, app_name=app_name, port=port, watch_s=1.5,
                               probe=[{"a": 2.0, "b": 0.0}], health_check_period_s=0.5,
                               health_check_timeout_s=5, bake_s=1.0,
                               input_log={"flush_seconds": flush_s})  # fmt: skip
