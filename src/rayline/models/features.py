"""Feature transforms fitted once and applied identically in training, evaluation and serving.

A ``FeaturePipeline`` is a list of steps: ``Impute``, ``StandardScale``, ``OneHot``, ``Ordinal``,
``BatchFn`` (your function over pandas batches) and ``DaskML`` (a dask-ml/scikit-learn
preprocessor). Fitting streams over the data in bounded memory (one pass per group of
independent steps) and yields ``FittedFeatures``: the steps plus small plain state (means,
standard deviations, categories) that round-trips through JSON. ``FittedFeatures.transform``
accepts a pandas DataFrame, an Arrow table or a list of record dicts (what serving receives).

Example::

    pipeline = FeaturePipeline([Impute(["age"], strategy="median"),
                                StandardScale(["age", "income"]), OneHot(["plan"])])
    fitted = pipeline.fit(train_table)
    fitted.transform([{"age": None, "income": 52_000.0, "plan": "pro"}])   # a DataFrame

In a flow, use the tasks ``fit_features(data, spec)`` and ``apply_features(data, fitted)``
(``rayline.tasks.features``); a ``spec`` may also be YAML-friendly data::

    [{"impute": {"columns": ["age"], "strategy": "median"}},
     {"standard_scale": ["age", "income"]}, {"one_hot": ["plan"]}]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rayline._lazy import import_object
from rayline.models import feature_steps as fs
from rayline.models.feature_dask import DaskML
from rayline.models.feature_steps import (
    BatchFn,
    Impute,
    OneHot,
    Ordinal,
    StandardScale,
    Step,
)
from rayline.models.training_data import (
    iter_tables,
    require_rows,
    table_from_batch,
)

__all__ = [
    "BatchFn",
    "DaskML",
    "FeaturePipeline",
    "FittedFeatures",
    "Impute",
    "OneHot",
    "Ordinal",
    "StandardScale",
    "step_from_dict",
    "step_from_spec",
]

_KINDS: dict[str, type[Step]] = {
    "standard_scale": StandardScale,
    "one_hot": OneHot,
    "ordinal": Ordinal,
    "impute": Impute,
    "batch_fn": BatchFn,
    "dask_ml": DaskML,
}


@dataclass(frozen=True)
class FittedFeatures:
    """Fitted steps and their plain state; apply with ``transform``.

    ``input_columns`` are the columns seen at fit time and ``output_columns`` those that
    ``transform`` produces (passthrough columns included). ``digest`` is the JSON artifact's
    digest when ``fit_features`` saved one in a run.
    """

    steps: tuple[Step, ...]
    states: tuple[dict[str, Any], ...]
    input_columns: tuple[str, ...]
    output_columns: tuple[str, ...]
    digest: str | None = field(default=None, compare=False)

    def transform(self, batch: Any) -> Any:
        """Apply every step to ``batch``.

        Returns a DataFrame for a DataFrame or a list of records, an Arrow table for an Arrow
        table. Columns the steps do not name pass through unchanged.

        Example::

            fitted.transform(pd.DataFrame({"age": [31.0], "plan": ["pro"]}))
        """
        import pyarrow as pa

        is_arrow = isinstance(batch, pa.Table | pa.RecordBatch)
        df = batch if fs.is_pandas(batch) else table_from_batch(batch).to_pandas()
        df = df.copy()
        for step, state in zip(self.steps, self.states, strict=True):
            df = step.transform(df, state)
        if is_arrow:
            return pa.Table.from_pandas(df, preserve_index=False)
        return df

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: every step's parameters and fitted state.

        Raises:
            ValueError: a ``BatchFn`` holds a lambda or local function (not importable by name).
        """
        return {
            "format": "rayline.features/v1",
            "input_columns": list(self.input_columns),
            "output_columns": list(self.output_columns),
            "steps": [{**s.to_dict(), "state": st} for s, st in zip(self.steps, self.states, strict=True)],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FittedFeatures:
        """Rebuild from ``to_dict()`` output (e.g. read back from JSON)."""
        if data.get("format") != "rayline.features/v1":
            raise ValueError(f"not a rayline fitted-features document (format={data.get('format')!r})")
        steps, states = [], []
        for d in data["steps"]:
            d = dict(d)
            states.append(d.pop("state"))
            steps.append(step_from_dict(d))
        return cls(tuple(steps), tuple(states), tuple(data["input_columns"]), tuple(data["output_columns"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> FittedFeatures:
        return cls.from_dict(json.loads(text))

    def save(self, store: Any) -> str:
        """Write the JSON form to the artifact store; returns its digest (see ``load``)."""
        return store.put_bytes(self.to_json().encode(), fmt="json").digest

    @classmethod
    def load(cls, store: Any, digest: str) -> FittedFeatures:
        """Read back what ``save`` wrote (checksum and signature checked by the store)."""
        return replace(cls.from_json(store.get_bytes(digest)), digest=digest)


class FeaturePipeline:
    """An ordered list of steps to fit on training data.

    Args:
        steps: step objects, or YAML-friendly dicts (``{"one_hot": ["plan"]}``).
    """

    def __init__(self, steps: Iterable[Step | dict[str, Any]]):
        self.steps: tuple[Step, ...] = tuple(
            s if isinstance(s, Step) else step_from_spec(s) for s in steps
        )
        if not self.steps:
            raise ValueError("a FeaturePipeline needs at least one step")

    @classmethod
    def from_spec(cls, spec: Any) -> FeaturePipeline:
        """A pipeline from a ``FeaturePipeline``, a list of steps, or YAML-friendly data."""
        if isinstance(spec, FeaturePipeline):
            return spec
        if isinstance(spec, Step):
            return cls([spec])
        if isinstance(spec, dict) and "steps" in spec:
            return cls(spec["steps"])
        if isinstance(spec, dict):
            return cls([{k: v} for k, v in spec.items()])
        if isinstance(spec, Sequence) and not isinstance(spec, str):
            return cls(spec)
        raise TypeError(
            f"a features spec is a FeaturePipeline, a list of steps or a list of dicts such as "
            f"[{{'standard_scale': ['age']}}], got {type(spec).__name__}"
        )

    @classmethod
    def from_dask_ml(cls, transformer: Any, columns: Sequence[str]) -> FeaturePipeline:
        """A one-step pipeline around a dask-ml (or scikit-learn) preprocessor.

        Example::

            from dask_ml.preprocessing import StandardScaler
            FeaturePipeline.from_dask_ml(StandardScaler(), ["age", "income"]).fit(table)
        """
        return cls([DaskML(transformer, columns)])

    def fit(self, data: Any, *, batch_size: int = 65536, task_name: str = "fit_features") -> FittedFeatures:
        """Fit every step, in order, streaming over ``data`` (see ``training_data``)."""
        require_rows(data, task_name)
        first = next(iter_tables(data, batch_size, task=task_name))
        input_columns = tuple(first.column_names)
        states: list[dict[str, Any]] = []
        i = 0
        while i < len(self.steps):
            group = _independent_group(self.steps, i)
            fitted_prefix = list(zip(self.steps[:i], states, strict=True))
            accs = [s.start_fit() for s in group]
            for table in iter_tables(data, batch_size, task=task_name):
                df = table.to_pandas()
                for step, state in fitted_prefix:
                    df = step.transform(df, state)
                for step, acc in zip(group, accs, strict=True):
                    step.update(acc, df)
            states.extend(step.finish(acc, task_name) for step, acc in zip(group, accs, strict=True))
            i += len(group)
        fitted = FittedFeatures(self.steps, tuple(states), input_columns, ())
        sample = fitted.transform(first.slice(0, 1).to_pandas())
        return replace(fitted, output_columns=tuple(str(c) for c in sample.columns))

    def __repr__(self) -> str:
        return f"FeaturePipeline({list(self.steps)!r})"


def _independent_group(steps: Sequence[Step], start: int) -> list[Step]:
    """Steps from ``start`` that can be fitted in one pass: none reads what another changes."""
    group = [steps[start]]
    if not steps[start].stateful:
        return group
    touched = set(steps[start].columns)
    for step in steps[start + 1:]:
        if not step.stateful or touched & set(step.columns):
            break
        group.append(step)
        touched |= set(step.columns)
    return group


def step_from_spec(spec: dict[str, Any]) -> Step:
    """One step from YAML-friendly data: ``{"one_hot": ["plan"]}`` or
    ``{"impute": {"columns": ["age"], "strategy": "median"}}``."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(
            f"each features step is a one-key mapping such as {{'standard_scale': ['age']}}, got {spec!r}"
        )
    (kind, args), = spec.items()
    cls = _KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown features step '{kind}'; known: {', '.join(sorted(_KINDS))}")
    if kind == "batch_fn":
        return BatchFn(_import_function(args if isinstance(args, str) else args["fn"]))
    if isinstance(args, list | tuple | str):
        return cls([args] if isinstance(args, str) else list(args))  # type: ignore[call-arg]
    if isinstance(args, dict):
        return cls(**args)
    raise ValueError(f"features step '{kind}': expected a list of columns or a mapping, got {args!r}")


def step_from_dict(d: dict[str, Any]) -> Step:
    """Inverse of ``Step.to_dict()``."""
    d = dict(d)
    kind = d.pop("kind")
    if kind == "batch_fn":
        return BatchFn(_import_function(d["fn"]), batch_format=d.get("batch_format", "pandas"))
    if kind == "dask_ml":
        return DaskML.from_dict(d)
    cls = _KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown features step '{kind}'; known: {', '.join(sorted(_KINDS))}")
    return cls(**d)


def _import_function(ref: str) -> Callable[..., Any]:
    obj = import_object(ref, "a batch function")
    if not callable(obj):
        raise ValueError(f"{ref} is not callable")
    return obj
