"""Held-out evaluation: ``split`` data into train/test, ``evaluate`` a ``TrainedModel`` on it.

Example::

    @flow
    def churn(path: str):
        parts = split(read_parquet(path), test_fraction=0.2, seed=0)
        model = train_sklearn(parts, estimator=LogisticRegression(), label="churned")
        return evaluate(model, parts)       # uses parts.test
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from rayline.connectors import EmptyInputError
from rayline.sdk.task import task
from rayline.tasks.models import TrainedModel
from rayline.tasks.training_data import (
    Split,
    held_out_part,
    is_ray_dataset,
    iter_tables,
    require_rows,
    to_table,
)

__all__ = ["CLASSIFICATION_METRICS", "REGRESSION_METRICS", "evaluate", "score", "split"]

CLASSIFICATION_METRICS = ("accuracy", "auc", "logloss", "precision", "recall", "f1")
REGRESSION_METRICS = ("rmse", "mae", "r2")


@task(cpus=1, name="split")
def split(data: Any, *, test_fraction: float = 0.2, seed: int = 0, part: str | None = None) -> Any:
    """Split rows at random (reproducibly, by ``seed``) into a ``Split(train, test)``.

    Tables and DataFrames keep their type (a source with ``to_table()`` is read into a table);
    a ``ray.data.Dataset`` is split with ``train_test_split`` (both parts materialised).
    ``part="train"`` or ``"test"`` returns only that part.

    Example::

        parts = split(table, test_fraction=0.25, seed=7)   # parts.train, parts.test
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"split: test_fraction must be between 0 and 1 (exclusive), got {test_fraction!r}")
    if part not in (None, "train", "test"):
        raise ValueError(f"split: part is None, 'train' or 'test', got {part!r}")
    require_rows(data, "split")
    if is_ray_dataset(data):
        train, test = data.train_test_split(test_size=test_fraction, shuffle=True, seed=seed)
    else:
        import numpy as np

        pandas = type(data).__module__.startswith("pandas")
        table = to_table(data, "split")
        mask = np.random.default_rng(seed).random(table.num_rows) < test_fraction
        train, test = table.filter(~mask), table.filter(mask)
        for name, t in (("train", train), ("test", test)):
            if t.num_rows == 0:
                raise EmptyInputError(
                    f"split: the {name} part has 0 rows ({table.num_rows} rows, test_fraction="
                    f"{test_fraction}); give more data or change test_fraction"
                )
        if pandas:
            train, test = train.to_pandas(), test.to_pandas()
    parts = Split(train, test)
    return parts if part is None else getattr(parts, part)


def _classification(name: str, y: Any, proba: Any, pred: Any, classes: Sequence[Any]) -> float:
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


def _regression(name: str, y: Any, pred: Any) -> float:
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
    regression = model.problem == "regression"
    allowed = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
    wanted = tuple(metrics) if metrics else (allowed if regression else ("accuracy", "auc", "logloss"))
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
        if regression:
            preds.append(model.predict(table))
        else:
            proba = model.predict_proba(table)
            probas.append(proba)
            preds.append(np.asarray(model.classes or range(proba.shape[1]))[proba.argmax(axis=1)])
    y, pred = np.concatenate(ys), np.concatenate(preds)
    out: dict[str, float] = {"rows": float(len(y))}
    for name in wanted:
        if regression:
            out[name] = _regression(name, y, pred)
        else:
            classes = model.classes or tuple(range(probas[0].shape[1]))
            out[name] = _classification(name, y, np.concatenate(probas), pred, classes)
    return out


@task(cpus=1, name="evaluate")
def evaluate(
    model: TrainedModel,
    data: Any,
    *,
    label: str | None = None,
    metrics: Sequence[str] | None = None,
    batch_size: int = 65536,
) -> dict[str, float]:
    """Score a trained model on held-out data; returns ``{metric: value, "rows": n}``.

    Args:
        model: a ``TrainedModel`` (torch or sklearn), or a ``TuneResult`` (its best model);
            the model's ``fitted_features`` are applied first.
        data: held-out data of any accepted kind; a ``Split`` uses ``.test``.
        label: the label column (default: the model's).
        metrics: classification ``accuracy``, ``auc``, ``logloss`` (default), ``precision``,
            ``recall``, ``f1``; regression ``rmse``, ``mae``, ``r2`` (default: all three).

    Example::

        evaluate(model, parts, metrics=("accuracy", "auc"))   # {"accuracy": 0.91, ...}
    """
    if not isinstance(model, TrainedModel) and isinstance(getattr(model, "model", None), TrainedModel):
        model = model.model  # a TuneResult: its best model
    if not isinstance(model, TrainedModel):
        raise TypeError(f"evaluate: model must be a TrainedModel (from train_torch/train_sklearn/tune), "
                        f"got {type(model).__name__}")
    return score(model, held_out_part(data), label=label, metrics=metrics, batch_size=batch_size)
