"""The metric functions: one implementation for evaluation, the gate, tuning and monitoring.

* ``score(model, data)`` — a ``TrainedModel``'s metrics on data (probabilities where it has them);
* ``prediction_metric(name, y, pred)`` — a metric of plain predictions against labels (a model
  without probabilities, served predictions against feedback labels);
* ``classification`` / ``regression`` — the metric formulas both use.

Example::

    score(model, test_table, metrics=["accuracy", "auc"])     # {"accuracy": 0.91, ...}
    prediction_metric("accuracy", [1, 0, 1], [1, 1, 1])         # 0.666...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from rayline.models.trained import TrainedModel
from rayline.models.training_data import iter_tables

__all__ = [
    "CLASSIFICATION_METRICS",
    "LOWER_IS_BETTER",
    "PREDICTION_METRICS",
    "REGRESSION_METRICS",
    "classification",
    "prediction_metric",
    "regression",
    "score",
]

CLASSIFICATION_METRICS = ("accuracy", "auc", "logloss", "precision", "recall", "f1")
REGRESSION_METRICS = ("rmse", "mae", "r2")
#: The metrics that need no probabilities (what a plain ``predict`` can be scored on).
PREDICTION_METRICS = ("accuracy", "precision", "recall", "f1", "rmse", "mae", "r2")
#: Metrics where a smaller value is better (the gate's ``mode="min"``, the Metric trigger).
LOWER_IS_BETTER = ("rmse", "mae", "logloss")


def classification(name: str, y: Any, proba: Any, pred: Any, classes: Sequence[Any]) -> float:
    """One classification metric of predictions ``pred`` (and probabilities ``proba``) against ``y``."""
    import numpy as np
    from sklearn import metrics as skm

    binary = len(classes) == 2
    if name == "accuracy":
        return float(np.mean(pred == y))
    if name == "logloss":
        return float(skm.log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15), labels=list(classes)))
    if name == "auc":
        if len(np.unique(y)) < 2:
            return math.nan  # undefined with one class present
        if binary:
            return float(skm.roc_auc_score(y, proba[:, 1]))
        return float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=list(classes)))
    average = "binary" if binary else "macro"
    pos = {"pos_label": classes[1]} if binary else {}
    fn: Callable[..., float] = {"precision": skm.precision_score, "recall": skm.recall_score,
                                "f1": skm.f1_score}[name]
    return float(fn(y, pred, average=average, zero_division=0, **pos))


def regression(name: str, y: Any, pred: Any) -> float:
    """One regression metric (``rmse``, ``mae``, ``r2``) of ``pred`` against ``y``."""
    import numpy as np

    err = pred.astype("float64") - y.astype("float64")
    if name == "rmse":
        return float(np.sqrt(np.mean(err**2)))
    if name == "mae":
        return float(np.mean(np.abs(err)))
    total = float(np.sum((y - y.mean()) ** 2))
    return float(1 - np.sum(err**2) / total) if total else math.nan


def score(model: TrainedModel, data: Any, *, label: str | None = None,
          metrics: Sequence[str] | None = None, batch_size: int = 65536) -> dict[str, float]:
    """The metrics of ``model`` on ``data`` (all of it; see ``evaluate`` for the task)."""
    import numpy as np

    label = label or model.label
    is_regression = model.problem == "regression"
    allowed = REGRESSION_METRICS if is_regression else CLASSIFICATION_METRICS
    wanted = tuple(metrics) if metrics else (allowed if is_regression else ("accuracy", "auc", "logloss"))
    unknown = [m for m in wanted if m not in allowed]
    if unknown:
        raise ValueError(
            f"evaluate: {', '.join(unknown)} not available for a {model.problem} model; "
            f"choose from {', '.join(allowed)}"
        )
    ys, probas, preds = [], [], []
    for table in iter_tables(data, batch_size, task="evaluate"):
        if label not in table.column_names:
            raise KeyError(f"evaluate: label column '{label}' is not in the data "
                           f"(columns: {', '.join(table.column_names)})")
        ys.append(table.column(label).to_numpy(zero_copy_only=False))
        if is_regression:
            preds.append(model.predict(table))
        else:
            proba = model.predict_proba(table)
            probas.append(proba)
            preds.append(np.asarray(model.classes or range(proba.shape[1]))[proba.argmax(axis=1)])
    y, pred = np.concatenate(ys), np.concatenate(preds)
    out: dict[str, float] = {"rows": float(len(y))}
    for name in wanted:
        if is_regression:
            out[name] = regression(name, y, pred)
        else:
            classes = model.classes or tuple(range(probas[0].shape[1]))
            out[name] = classification(name, y, np.concatenate(probas), pred, classes)
    return out


def prediction_metric(name: str, y: Any, pred: Any) -> float:
    """``name`` (one of ``PREDICTION_METRICS``) of predictions ``pred`` against labels ``y``.

    Raises:
        ValueError: a metric that needs probabilities (``auc``, ``logloss``) or an unknown one.
    """
    import numpy as np

    if name in REGRESSION_METRICS:
        return regression(name, np.asarray(y, dtype=float), np.asarray(pred, dtype=float))
    if name in PREDICTION_METRICS:
        classes = tuple(np.unique(np.concatenate([np.asarray(y), np.asarray(pred)])).tolist())
        return classification(name, np.asarray(y), None, np.asarray(pred), classes)
    raise ValueError(f"metric {name!r} needs probabilities; a model without them supports "
                     f"{', '.join(PREDICTION_METRICS)}")  # fmt: skip
