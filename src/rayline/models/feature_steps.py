"""The steps of a ``FeaturePipeline`` (see ``rayline.models.features``).

Each step fits in one streaming pass (``start_fit`` → ``update`` per pandas batch → ``finish``)
into a small JSON-able ``state``, and ``transform(df, state)`` applies it to a pandas DataFrame.
Missing values are ignored when fitting statistics; ``Impute`` fills them.

Example::

    step = StandardScale(["age"])
    acc = step.start_fit(); step.update(acc, df); state = step.finish(acc, "fit")
    step.transform(df, state)      # age -> (age - mean) / std
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["BatchFn", "Impute", "OneHot", "Ordinal", "StandardScale", "Step", "is_pandas", "plain"]

_MEDIAN_SAMPLE = 1_000_000  # values kept per column for a median; exact below this many


def is_pandas(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas") and hasattr(obj, "columns")


def plain(value: Any) -> Any:
    """A JSON-able Python value for a numpy/pandas scalar."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class Step:
    """Base of the feature steps; ``columns`` are the input columns it reads and rewrites."""

    kind: ClassVar[str] = ""
    stateful: ClassVar[bool] = True
    columns: tuple[str, ...] = ()

    def _check_columns(self) -> None:
        cols = self.columns
        if isinstance(cols, str):
            cols = (cols,)
        self.columns = tuple(str(c) for c in cols)
        if not self.columns:
            raise ValueError(f"features step '{self.kind}' needs at least one column name")

    def _series(self, df: Any, col: str) -> Any:
        if col not in df.columns:
            raise KeyError(
                f"features step '{self.kind}': column '{col}' is not in the data "
                f"(columns: {', '.join(map(str, df.columns))}); fix the step's columns"
            )
        return df[col]

    def start_fit(self) -> Any:
        return None

    def update(self, acc: Any, df: Any) -> None:
        pass

    def finish(self, acc: Any, task: str) -> dict[str, Any]:
        return {}

    def transform(self, df: Any, state: dict[str, Any]) -> Any:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "columns": list(self.columns)}


class _Moments:
    """Count, mean and sum of squared deviations, merged batch by batch (Chan et al.)."""

    __slots__ = ("m2", "mean", "n")

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, values: Any) -> None:
        import numpy as np

        v = np.asarray(values, dtype="float64")
        v = v[~np.isnan(v)]
        if not v.size:
            return
        n_b, mean_b = v.size, float(v.mean())
        m2_b = float(((v - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n


def _numeric(step: Step, series: Any, col: str) -> Any:
    import pandas as pd

    if series.dtype == object:  # e.g. records whose values are all None in this batch
        try:
            series = pd.to_numeric(series)
        except (TypeError, ValueError):
            pass
    if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
        raise TypeError(
            f"features step '{step.kind}': column '{col}' is {series.dtype}, not numeric; "
            "encode it with OneHot or Ordinal first"
        )
    return series.to_numpy(dtype="float64", na_value=float("nan"))


@dataclass
class StandardScale(Step):
    """``(x - mean) / std`` per column (population std; a constant column is only centred)."""

    columns: tuple[str, ...]
    kind: ClassVar[str] = "standard_scale"

    def __post_init__(self) -> None:
        self._check_columns()

    def start_fit(self) -> dict[str, _Moments]:
        return {c: _Moments() for c in self.columns}

    def update(self, acc: dict[str, _Moments], df: Any) -> None:
        for c in self.columns:
            acc[c].add(_numeric(self, self._series(df, c), c))

    def finish(self, acc: dict[str, _Moments], task: str) -> dict[str, Any]:
        mean = {c: m.mean for c, m in acc.items()}
        std = {c: (math.sqrt(m.m2 / m.n) if m.n else 1.0) or 1.0 for c, m in acc.items()}
        return {"mean": mean, "std": std}

    def transform(self, df: Any, state: dict[str, Any]) -> Any:
        for c in self.columns:
            x = _numeric(self, self._series(df, c), c)
            df[c] = ((x - state["mean"][c]) / state["std"][c]).astype("float32")
        return df


@dataclass
class Impute(Step):
    """Fill missing values with the column's ``mean``, ``median``, ``most_frequent`` value, or
    a ``constant`` (``value=``)."""

    columns: tuple[str, ...]
    strategy: str = "mean"
    value: Any = None
    kind: ClassVar[str] = "impute"
    _STRATEGIES: ClassVar[tuple[str, ...]] = ("mean", "median", "most_frequent", "constant")

    def __post_init__(self) -> None:
        self._check_columns()
        if self.strategy not in self._STRATEGIES:
            raise ValueError(f"impute: strategy must be one of {', '.join(self._STRATEGIES)}, got {self.strategy!r}")
        if self.strategy == "constant" and self.value is None:
            raise ValueError("impute: strategy='constant' needs value=")

    @property
    def stateful(self) -> bool:  # type: ignore[override]
        return self.strategy != "constant"

    def start_fit(self) -> dict[str, Any]:
        if self.strategy == "mean":
            return {c: _Moments() for c in self.columns}
        if self.strategy == "median":
            return {c: [] for c in self.columns}
        return {c: Counter() for c in self.columns}

    def update(self, acc: dict[str, Any], df: Any) -> None:
        import numpy as np

        for c in self.columns:
            s = self._series(df, c)
            if self.strategy == "mean":
                acc[c].add(_numeric(self, s, c))
            elif self.strategy == "median":
                v = _numeric(self, s, c)
                acc[c].append(v[~np.isnan(v)])
                if sum(a.size for a in acc[c]) > 2 * _MEDIAN_SAMPLE:
                    allv = np.concatenate(acc[c])
                    acc[c] = [np.random.default_rng(0).choice(allv, _MEDIAN_SAMPLE, replace=False)]
            elif self.strategy == "most_frequent":
                acc[c].update({plain(k): int(n) for k, n in s.value_counts(dropna=True).items()})

    def finish(self, acc: dict[str, Any], task: str) -> dict[str, Any]:
        import numpy as np

        values: dict[str, Any] = {}
        for c in self.columns:
            if self.strategy == "constant":
                values[c] = self.value
            elif self.strategy == "mean":
                values[c] = acc[c].mean if acc[c].n else None
            elif self.strategy == "median":
                v = np.concatenate(acc[c]) if acc[c] else np.array([])
                values[c] = float(np.median(v)) if v.size else None
            else:
                values[c] = min(acc[c].items(), key=lambda kv: (-kv[1], str(kv[0])))[0] if acc[c] else None
            if values[c] is None:
                raise ValueError(f"{task}: impute: column '{c}' has no non-missing value to learn a {self.strategy} from")
        return {"values": values}

    def transform(self, df: Any, state: dict[str, Any]) -> Any:
        values = state["values"] if state else {c: self.value for c in self.columns}
        for c in self.columns:
            df[c] = self._series(df, c).fillna(values[c])
        return df

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "strategy": self.strategy, "value": self.value}


def _category_counts(step: Step, acc: dict[str, Counter], df: Any) -> None:
    for c in step.columns:
        acc[c].update({plain(k): int(n) for k, n in step._series(df, c).value_counts(dropna=True).items()})


class _Categorical(Step):
    """A step fitted by counting each column's categories (``_category_counts``)."""

    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        self._check_columns()

    def start_fit(self) -> dict[str, Counter]:
        return {c: Counter() for c in self.columns}

    def update(self, acc: dict[str, Counter], df: Any) -> None:
        _category_counts(self, acc, df)


@dataclass
class OneHot(_Categorical):
    """One 0/1 ``float32`` column ``"<col>=<value>"`` per category seen when fitting (the most
    frequent ``max_categories`` if set); unseen values and missing ones encode as all zeros."""

    columns: tuple[str, ...]
    max_categories: int | None = None
    kind: ClassVar[str] = "one_hot"

    def finish(self, acc: dict[str, Counter], task: str) -> dict[str, Any]:
        cats = {}
        for c, counts in acc.items():
            top = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[: self.max_categories]
            cats[c] = sorted((k for k, _ in top), key=str)
        return {"categories": cats}

    def transform(self, df: Any, state: dict[str, Any]) -> Any:
        import pandas as pd

        new = {}
        for c in self.columns:
            s = self._series(df, c)
            for cat in state["categories"][c]:
                new[f"{c}={cat}"] = (s == cat).fillna(False).to_numpy(dtype="float32")
        df = df.drop(columns=list(self.columns))
        return pd.concat([df, pd.DataFrame(new, index=df.index)], axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "max_categories": self.max_categories}


@dataclass
class Ordinal(_Categorical):
    """Integer codes ``0..k-1`` for the categories seen when fitting (sorted); unseen and
    missing values become ``unknown_value``."""

    columns: tuple[str, ...]
    unknown_value: int = -1
    kind: ClassVar[str] = "ordinal"

    def finish(self, acc: dict[str, Counter], task: str) -> dict[str, Any]:
        return {"categories": {c: sorted(counts, key=lambda k: (str(type(k)), k)) for c, counts in acc.items()}}

    def transform(self, df: Any, state: dict[str, Any]) -> Any:
        for c in self.columns:
            mapping = {k: i for i, k in enumerate(state["categories"][c])}
            codes = self._series(df, c).map(mapping)
            df[c] = codes.fillna(self.unknown_value).to_numpy(dtype="int64")
        return df

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "unknown_value": self.unknown_value}


@dataclass
class BatchFn(Step):
    """Your function over a batch (a pandas DataFrame, or a pyarrow Table with
    ``batch_format="pyarrow"``), returning the transformed batch. Stateless.

    For ``FittedFeatures.to_dict()`` the function must be importable by name (module level).
    """

    fn: Callable[[Any], Any]
    batch_format: str = "pandas"
    kind: ClassVar[str] = "batch_fn"
    stateful: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"batch_fn: {self.fn!r} is not callable")
        if self.batch_format not in ("pandas", "pyarrow"):
            raise ValueError(f"batch_fn: batch_format is 'pandas' or 'pyarrow', got {self.batch_format!r}")

    def transform(self, df: Any, state: dict[str, Any]) -> Any:
        if self.batch_format == "pyarrow":
            import pyarrow as pa

            out = self.fn(pa.Table.from_pandas(df, preserve_index=False))
            return out.to_pandas() if isinstance(out, pa.Table) else out
        return self.fn(df)

    def to_dict(self) -> dict[str, Any]:
        qual = getattr(self.fn, "__qualname__", "")
        module = getattr(self.fn, "__module__", "")
        if not module or "<" in qual:
            raise ValueError(
                f"batch_fn {qual or self.fn!r} is a lambda or local function, so it cannot be named "
                "in JSON; define it at module level"
            )
        return {"kind": self.kind, "fn": f"{module}:{qual}", "batch_format": self.batch_format}
