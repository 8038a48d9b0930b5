"""What can be served: the ``Servable`` protocol, and what the registry infers from a model.

A model can be registered and served when it is one of:

* a rayline ``TrainedModel`` (its ``predict(records)`` applies its own feature transform);
* a torch module registered with ``inputs=[...]`` (a float32 matrix of those fields);
* a ``Servable``: anything with ``predict(records: list[dict]) -> list``. A scikit-learn-compatible
  estimator is one (flavor ``sklearn``: ``predict`` over a DataFrame or matrix built from the
  records, columns in the order it was fitted with); any other object is flavor ``pyfunc``. It may
  also offer ``setup()`` (called once when a replica loads it) and ``check_health()`` (called
  periodically by Serve; raising marks the replica unhealthy).

``flavor_of`` says how serving will call a model; ``describe_model`` what the registry records.
``rayline.models.predictor.RecordPredictor`` turns any of them into one ``predict(records)``.

Example::

    flavor_of(LogisticRegression())                          # 'sklearn'
    isinstance(MyModel(), Servable)                          # True: it has predict(records)
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from rayline.models.trained import TrainedModel

__all__ = ["ModelDescription", "Servable", "carries_features", "describe_model", "flavor_of"]


@runtime_checkable
class Servable(Protocol):
    """The one method a served model needs: one prediction per record (flavor ``pyfunc``)."""

    def predict(self, records: list[dict[str, Any]]) -> Sequence[Any]: ...


_ESTIMATOR_MODULES = ("sklearn", "dask_ml", "xgboost", "lightgbm", "catboost")


@dataclass(frozen=True, slots=True)
class ModelDescription:
    """What the registry infers from a model: flavor, default metrics and lineage, inputs."""

    flavor: str
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    inputs: list[str] | None
    features: Any


def carries_features(model: Any) -> bool:
    """Whether ``model`` is a rayline ``TrainedModel``: it applies its own feature transform."""
    return isinstance(model, TrainedModel)


def flavor_of(model: Any) -> str:
    """``sklearn``, ``torch`` or ``pyfunc``: how serving will call ``model``.

    Example::

        flavor_of(LogisticRegression())   # 'sklearn'

    Raises:
        TypeError: the object cannot predict (no ``predict``, not a torch module).
    """
    if carries_features(model):
        return str(model.framework)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    if isinstance(model, Servable):
        if type(model).__module__.startswith(_ESTIMATOR_MODULES) or callable(
            getattr(model, "get_params", None)
        ):
            return "sklearn"
        return "pyfunc"
    raise TypeError(
        f"cannot serve a {type(model).__module__}.{type(model).__qualname__}: a servable model "
        "is a scikit-learn estimator, a torch module, a rayline TrainedModel or an object with "
        "predict(records: list[dict]) -> list"
    )


def describe_model(model: Any, *, features: Any = None, inputs: Any = None) -> ModelDescription:
    """Flavor, metrics, lineage, input fields and feature transform of ``model``.

    Raises:
        TypeError: not servable, or a bare torch module without ``inputs``.
    """
    flavor = flavor_of(model)
    carried = getattr(model, "fitted_features", None) if carries_features(model) else None
    features = features if features is not None else carried
    if inputs is None:
        inputs = _inputs_of(model, features)
    if flavor == "torch" and inputs is None and not carries_features(model):
        raise TypeError("a torch module needs inputs=[...]: the record fields, in the order of "
                        "the model's input features")  # fmt: skip
    metrics = getattr(model, "metrics", None)
    lineage = {k: getattr(model, k) for k in ("input_snapshot", "code_hash", "label", "problem")
               if getattr(model, k, None) is not None}  # fmt: skip
    return ModelDescription(
        flavor, dict(metrics) if isinstance(metrics, Mapping) else {}, lineage,
        None if inputs is None else [str(c) for c in inputs], features,
    )  # fmt: skip


def _inputs_of(model: Any, features: Any) -> list[str] | None:
    # Features are fitted on training data, label included: a request never carries the label.
    label = getattr(model, "label", None) if carries_features(model) else None
    for owner, attr in ((features, "input_columns"), (model, "feature_names_in_")):
        cols = getattr(owner, attr, None) if owner is not None else None
        if cols is not None and len(cols):
            return [str(c) for c in cols if str(c) != label]
    if carries_features(model):
        return [str(c) for c in getattr(model, "features", ())] or None
    return None
