"""Held-out evaluation: ``split`` data into train/test, ``evaluate`` a ``TrainedModel`` on it.

Example::

    @flow
    def churn(path: str):
        parts = split(read_parquet(path), test_fraction=0.2, seed=0)
        model = train_sklearn(parts, estimator=LogisticRegression(), label="churned")
        return evaluate(model, parts)       # uses parts.test
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rayline.connectors import EmptyInputError
from rayline.models.metrics import score
from rayline.models.trained import TrainedModel
from rayline.models.training_data import (
    Split,
    held_out_part,
    is_ray_dataset,
    require_rows,
    to_table,
)
from rayline.sdk.task import task

__all__ = ["evaluate", "split"]


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
