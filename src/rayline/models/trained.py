"""``TrainedModel``: what the training and tuning tasks return, and how its artifact is stored.

Formats:

* **torch** — ``weights`` holds the ``state_dict`` written by ``torch.save`` and is read back
  with ``torch.load(weights_only=True)`` (tensors and plain containers only, never arbitrary
  pickle); the module itself is rebuilt by calling ``model_fn(n_features, **model_params)``.
* **sklearn** (and dask-ml) — the fitted estimator is a pickle in the artifact store, written
  with ``store.put`` (sha256 + HMAC-signed manifest, verified before unpickling); ``artifact``
  is its digest.

A model carries the ``FittedFeatures`` it was trained behind (if any), so ``predict`` applies the
same transform to raw records that training applied to the table.

Example::

    model = run.result()                         # a TrainedModel
    model.predict([{"age": 31, "plan": "pro"}])  # array([1])
    model.predict_proba(test_df)[:, 1]
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rayline._lazy import import_object
from rayline.models.training_data import table_from_batch

__all__ = [
    "TrainedModel",
    "build_module",
    "feature_matrix",
    "load_state_dict",
    "resolve_estimator",
    "resolve_object",
    "resolve_store",
    "state_dict_bytes",
]

PROBLEMS = ("binary", "multiclass", "regression")


def state_dict_bytes(module: Any) -> bytes:
    """``module.state_dict()`` (unwrapped from DDP) serialised with ``torch.save``."""
    import torch

    inner = getattr(module, "module", module)
    buf = io.BytesIO()
    torch.save(inner.state_dict(), buf)
    return buf.getvalue()


def load_state_dict(data: bytes) -> dict[str, Any]:
    """Read a ``state_dict`` with ``torch.load(weights_only=True)``: tensors only, no code."""
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def build_module(model_fn: Callable[..., Any], n_features: int, params: Mapping[str, Any] | None = None) -> Any:
    """Call ``model_fn`` with ``n_features`` (when it takes a parameter) and ``params``.

    Example::

        build_module(lambda n, hidden=32: torch.nn.Linear(n, 1), 8)
    """
    params = dict(params or {})
    try:
        sig = inspect.signature(model_fn)
    except (TypeError, ValueError):
        return model_fn(n_features, **params)
    positional = [p for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in params]
    takes_n = "n_features" in sig.parameters or bool(positional) or any(
        p.kind is p.VAR_POSITIONAL for p in sig.parameters.values())
    return model_fn(n_features, **params) if takes_n else model_fn(**params)


def resolve_object(ref: Any, what: str) -> Any:
    """``ref`` itself, or the object a ``"package.module:name"`` string names (YAML flows).

    Example::

        resolve_object("sklearn.linear_model:LogisticRegression", "estimator")
    """
    if not isinstance(ref, str):
        return ref
    return import_object(ref, what)


def resolve_estimator(spec: Any) -> Any:
    """An estimator object, a ``"module:Class"`` string, or ``{"class": ..., "params": {...}}``."""
    if isinstance(spec, Mapping) and "class" in spec:
        return resolve_object(spec["class"], "estimator")(**dict(spec.get("params") or {}))
    if isinstance(spec, str):
        return resolve_object(spec, "estimator")()
    return spec


def feature_matrix(table: Any, columns: tuple[str, ...] | list[str]) -> Any:
    """A ``float32`` matrix of ``columns`` from an Arrow table or pandas DataFrame.

    Raises:
        KeyError: a column is missing.
        TypeError: a column is not numeric (encode it in the features step).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.types as pat

    if not isinstance(table, pa.Table):
        table = table_from_batch(table)
    names = set(table.column_names)
    out = np.empty((table.num_rows, len(columns)), dtype=np.float32)
    for i, c in enumerate(columns):
        if c not in names:
            raise KeyError(f"feature column '{c}' is missing from the data (columns: {', '.join(table.column_names)})")
        col = table.column(c)
        if not (pat.is_integer(col.type) or pat.is_floating(col.type) or pat.is_boolean(col.type) or pat.is_null(col.type)):
            raise TypeError(
                f"feature column '{c}' is {col.type}, not numeric; encode it with OneHot/Ordinal "
                "(features=fit_features(...)) or leave it out with features=[...]"
            )
        out[:, i] = col.to_numpy(zero_copy_only=False)
    return out


def resolve_store(store: Any = None) -> Any:
    """``store``, else the running task's artifact store, else the default one (RAYLINE_HOME)."""
    if store is not None:
        return store
    from rayline import context

    ctx = context.current()
    if ctx is not None and ctx.store is not None:
        return ctx.store
    from rayline.config import Settings
    from rayline.store.artifacts import ArtifactStore

    return ArtifactStore.for_settings(Settings(), sweep=False)


@dataclass(frozen=True)
class TrainedModel:
    """A trained model plus what is needed to use it again.

    Attributes:
        framework: ``"torch"`` or ``"sklearn"``.
        label: the label column; ``features``: the model's input columns (after
            ``fitted_features``); ``problem``: ``binary``, ``multiclass`` or ``regression``.
        metrics: the final training (or tuning) metrics.
        epochs_completed / resumed_from: for torch, the epochs done and the checkpoint epoch
            the last training attempt started from (0 = from scratch).
        checkpoint_path: where the training checkpoints live (torch).
    """

    framework: str
    label: str
    features: tuple[str, ...]
    problem: str
    metrics: dict[str, Any] = field(default_factory=dict)
    weights: bytes | None = field(default=None, repr=False)
    model_fn: Callable[..., Any] | None = field(default=None, repr=False)
    model_params: dict[str, Any] = field(default_factory=dict)
    n_outputs: int = 1
    artifact: str | None = None
    fitted_features: Any = field(default=None, repr=False)
    classes: tuple[Any, ...] | None = None
    epochs_completed: int = 0
    resumed_from: int = 0
    checkpoint_path: str | None = None
    history: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if self.framework not in ("torch", "sklearn"):
            raise ValueError(f"TrainedModel.framework is 'torch' or 'sklearn', got {self.framework!r}")
        if self.problem not in PROBLEMS:
            raise ValueError(f"TrainedModel.problem is one of {PROBLEMS}, got {self.problem!r}")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_loaded", None)  # the live module/estimator is rebuilt, never pickled
        return state

    # ----------------------------------------------------------------------------- loading
    def module(self) -> Any:
        """The torch module (rebuilt from ``model_fn``, weights loaded, in eval mode)."""
        if self.framework != "torch":
            raise TypeError(f"a {self.framework} model has no torch module; use estimator()")
        loaded = self.__dict__.get("_loaded")
        if loaded is None:
            if self.model_fn is None or self.weights is None:
                raise ValueError("this torch model has no model_fn or weights to rebuild it from")
            loaded = build_module(self.model_fn, len(self.features), self.model_params)
            loaded.load_state_dict(load_state_dict(self.weights))
            loaded.eval()
            object.__setattr__(self, "_loaded", loaded)
        return loaded

    def estimator(self, store: Any = None) -> Any:
        """The fitted scikit-learn / dask-ml estimator, read from the artifact store (checked)."""
        if self.framework != "sklearn":
            raise TypeError(f"a {self.framework} model has no estimator; use module()")
        loaded = self.__dict__.get("_loaded")
        if loaded is None:
            if self.artifact is None:
                raise ValueError("this sklearn model has no stored artifact")
            loaded = resolve_store(store).get(self.artifact)
            object.__setattr__(self, "_loaded", loaded)
        return loaded

    # ---------------------------------------------------------------------------- predicting
    def prepare(self, batch: Any) -> Any:
        """Raw rows (DataFrame, Arrow table or records) → the model's input matrix."""
        table = table_from_batch(batch)
        if self.fitted_features is not None:
            table = table_from_batch(self.fitted_features.transform(table))
        return feature_matrix(table, self.features)

    def _outputs(self, x: Any) -> Any:
        import torch

        with torch.no_grad():
            return self.module()(torch.from_numpy(x)).float().numpy()

    def predict_proba(self, batch: Any) -> Any:
        """Class probabilities, shape ``(rows, classes)`` (binary: ``[:, 1]`` is P(class 1))."""
        import numpy as np

        if self.problem == "regression":
            raise TypeError("predict_proba: this is a regression model; use predict")
        x = self.prepare(batch)
        if self.framework == "sklearn":
            return np.asarray(self.estimator().predict_proba(x))
        out = self._outputs(x)
        if out.ndim == 1 or (self.problem == "binary" and out.shape[1] == 1):
            p = 1.0 / (1.0 + np.exp(-out.reshape(-1)))
            return np.stack([1.0 - p, p], axis=1)
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, batch: Any) -> Any:
        """Predicted class labels (classification) or values (regression), one per row.

        Example::

            model.predict([{"age": 31.0, "income": 52_000.0}])
        """
        import numpy as np

        if self.framework == "sklearn":
            return np.asarray(self.estimator().predict(self.prepare(batch)))
        if self.problem == "regression":
            out = self._outputs(self.prepare(batch))
            return out.reshape(out.shape[0], -1)[:, 0]
        proba = self.predict_proba(batch)
        idx = proba.argmax(axis=1)
        return np.asarray(self.classes)[idx] if self.classes else idx
