"""The feature tasks: fit a ``FeaturePipeline`` on training data, apply ``FittedFeatures``.

The pipeline, its steps and the fitted state live in ``rayline.models.features`` (serving
applies the same transform); these are the thin tasks over them.

Example::

    fitted = fit_features(train, [{"standard_scale": ["age"]}, {"one_hot": ["plan"]}])
    features = apply_features(test_table, fitted)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rayline.models.feature_steps import is_pandas
from rayline.models.features import FeaturePipeline, FittedFeatures
from rayline.models.training_data import is_ray_dataset, require_rows
from rayline.sdk.task import task

__all__ = ["apply_features", "fit_features"]


@task(cpus=1, name="fit_features")
def fit_features(data: Any, spec: Any) -> FittedFeatures:
    """Fit a feature pipeline on (training) data; the fitted state is saved as a JSON artifact.

    Args:
        data: a table, DataFrame, ``ray.data.Dataset`` or source (a ``Split`` uses ``.train``).
        spec: a ``FeaturePipeline``, a list of steps, or YAML-friendly data.

    Example::

        fitted = fit_features(train, [{"standard_scale": ["age"]}, {"one_hot": ["plan"]}])
    """
    from rayline import context
    from rayline.models.training_data import training_part

    fitted = FeaturePipeline.from_spec(spec).fit(training_part(data))
    ctx = context.current()
    if ctx is not None and ctx.store is not None:
        try:
            fitted = replace(fitted, digest=fitted.save(ctx.store))
        except ValueError as exc:  # a lambda BatchFn: the pickled output still carries it
            context.warn(f"fit_features: fitted state not saved as JSON: {exc}")
    return fitted


@task(cpus=1, name="apply_features")
def apply_features(data: Any, fitted: FittedFeatures) -> Any:
    """Apply fitted features to data of any accepted kind.

    A table or DataFrame comes back as the same type; a ``ray.data.Dataset`` (or a source with
    ``to_ray_dataset()``) comes back as a lazily transformed Dataset.

    Example::

        features = apply_features(test_table, fitted)
    """
    return _apply(data, fitted)


def _apply(data: Any, fitted: FittedFeatures) -> Any:
    from rayline.models.training_data import Split

    if isinstance(data, Split):
        return Split(_apply(data.train, fitted), _apply(data.test, fitted))
    require_rows(data, "apply_features")
    if is_ray_dataset(data) or (callable(getattr(data, "to_ray_dataset", None)) and not is_pandas(data)):
        ds = data if is_ray_dataset(data) else data.to_ray_dataset()
        return ds.map_batches(fitted.transform, batch_format="pandas")
    return fitted.transform(data)
