"""``DaskML``: a dask-ml (or scikit-learn) preprocessor as a ``FeaturePipeline`` step.

It is fitted with dask over the named columns; its learned attributes (``mean_``, ``scale_``,
``categories_`` …) become plain JSON state, and transforms rebuild the preprocessor from its
class, parameters and those attributes — only ``dask_ml`` and ``sklearn`` classes are loaded.

Example::

    from dask_ml.preprocessing import StandardScaler
    FeaturePipeline([DaskML(StandardScaler(), ["age", "income"])]).fit(table)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from rayline._lazy import import_object
from rayline.models.feature_steps import Step, is_pandas, plain

__all__ = ["DaskML"]

_DASK_ML_MODULES = ("dask_ml.", "sklearn.")


def _encode(v: Any) -> Any:
    import numpy as np

    if isinstance(v, np.ndarray):
        return {"ndarray": v.tolist(), "dtype": str(v.dtype)}
    if isinstance(v, list | tuple):
        return {"list": [_encode(x) for x in v]}
    return plain(v)


def _decode(v: Any) -> Any:
    import numpy as np

    if isinstance(v, dict) and "ndarray" in v:
        return np.asarray(v["ndarray"], dtype=v["dtype"])
    if isinstance(v, dict) and "list" in v:
        return [_decode(x) for x in v["list"]]
    return v


@dataclass
class DaskML(Step):
    """A dask-ml (or scikit-learn) preprocessor over ``columns``, fitted with dask.

    Its learned attributes (``mean_``, ``scale_``, ``categories_`` …) become the JSON state,
    and transforms rebuild it from its class, parameters and those attributes. Fitting holds
    the named columns in memory (dask then works over partitions of them).
    """

    transformer: Any
    columns: tuple[str, ...]
    kind: ClassVar[str] = "dask_ml"
    _cache: dict[int, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_columns()
        if not (hasattr(self.transformer, "fit") and hasattr(self.transformer, "transform")):
            raise TypeError(f"dask_ml: {self.transformer!r} has no fit/transform")

    def start_fit(self) -> list[Any]:
        return []

    def update(self, acc: list[Any], df: Any) -> None:
        acc.append(df[[self._series(df, c).name for c in self.columns]])

    def finish(self, acc: list[Any], task: str) -> dict[str, Any]:
        import dask
        import dask.dataframe as dd
        import pandas as pd
        from sklearn.base import clone

        frame = pd.concat(acc, ignore_index=True)
        ddf = dd.from_pandas(frame, npartitions=max(1, len(frame) // 250_000))
        with dask.config.set(scheduler="sync"):
            fitted = clone(self.transformer).fit(ddf)
            attrs = {k: v for k, v in vars(fitted).items() if k.endswith("_") and not k.startswith("_")}
            attrs = dict(zip(attrs, dask.compute(*attrs.values()), strict=True))
        return {"attrs": {k: _encode(v) for k, v in attrs.items()}}

    def _rebuilt(self, state: dict[str, Any]) -> Any:
        key = id(state)
        if key not in self._cache:
            from sklearn.base import clone

            t = clone(self.transformer)
            for k, v in state["attrs"].items():
                setattr(t, k, _decode(v))
            self._cache[key] = t
        return self._cache[key]

    def transform(self, df: Any, state: dict[str, Any]) -> Any:
        import numpy as np
        import pandas as pd

        cols = list(self.columns)
        out = self._rebuilt(state).transform(df[cols])
        if hasattr(out, "compute"):
            out = out.compute()
        if is_pandas(out):
            df = df.drop(columns=cols)
            return pd.concat([df, out.set_axis(df.index)], axis=1)
        out = np.asarray(out)
        if out.ndim == 2 and out.shape[1] == len(cols):
            for i, c in enumerate(cols):
                df[c] = out[:, i].astype("float32")
            return df
        extra = pd.DataFrame(out.reshape(len(df), -1), index=df.index).add_prefix("dask_ml_")
        return pd.concat([df.drop(columns=cols), extra], axis=1)

    def to_dict(self) -> dict[str, Any]:
        cls = type(self.transformer)
        params = {k: plain(v) for k, v in self.transformer.get_params(deep=False).items()}
        return {"kind": self.kind, "class": f"{cls.__module__}:{cls.__qualname__}",
                "params": params, "columns": list(self.columns)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DaskML:
        if not str(d["class"]).startswith(_DASK_ML_MODULES):
            raise ValueError(f"dask_ml: refusing to load {d['class']!r}; only dask_ml and sklearn classes")
        klass = import_object(d["class"], "dask_ml class")
        return cls(klass(**d.get("params", {})), tuple(d["columns"]))
