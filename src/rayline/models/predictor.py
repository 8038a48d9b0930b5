"""Any servable model behind one ``predict(records) -> list`` of JSON values.

``RecordPredictor`` checks records first, so that bad input is a clear ``InputError`` (the
serving endpoint answers it with HTTP 422), never a crash; serving and the evaluation gate both
score through it.

Example::

    p = RecordPredictor(LogisticRegression().fit(df, y), flavor="sklearn", inputs=["a", "b"])
    p.predict(p.check([{"a": 1.0, "b": 2.0}]))   # [0]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from rayline.models.servable import carries_features

__all__ = ["InputError", "RecordPredictor", "to_jsonable"]

_SCALARS = (str, int, float, bool, type(None))


class InputError(ValueError):
    """The records do not fit the model; the message says which record and field (HTTP 422)."""


def to_jsonable(out: Any) -> list[Any]:
    """Model output (numpy, torch, pandas, list) → a list of plain JSON values."""
    detach = getattr(out, "detach", None)
    if callable(detach):  # a torch tensor
        out = detach().cpu().numpy()
    tolist = getattr(out, "tolist", None)
    return list(tolist()) if callable(tolist) else list(out)


class RecordPredictor:
    """Any servable model behind one ``predict(records) -> list`` of JSON values.

    Args:
        model: the model object (see the module docstring).
        flavor: as recorded by the registry.
        inputs: the fields every record must have (checked before predicting), or None.
        features: a transform applied to the records first (unless the model carries its own).
        store: the artifact store a ``TrainedModel`` reads its estimator from.

    Example::

        p = RecordPredictor(LogisticRegression().fit(df, y), flavor="sklearn", inputs=["a", "b"])
        p.predict(p.check([{"a": 1.0, "b": 2.0}]))   # [0]
    """

    def __init__(self, model: Any, *, flavor: str, inputs: Sequence[str] | None = None,
                 features: Any = None, store: Any = None) -> None:  # fmt: skip
        self.model, self.flavor = model, flavor
        self.inputs = tuple(inputs) if inputs else None
        self.carries_features = carries_features(model)
        self.features = None if self.carries_features else features
        if self.carries_features and flavor == "sklearn":  # load it now, not on a request
            model.estimator(store)
        elif self.carries_features:
            model.module()
        elif flavor == "torch":
            model.eval()
            import torch

            if torch.cuda.is_available():  # Ray set CUDA_VISIBLE_DEVICES: the replica has a GPU
                model.to("cuda")
        names = getattr(model, "feature_names_in_", None)
        self._named = None if names is None else [str(c) for c in names]
        if self._named is not None and self.inputs is not None and set(self._named) - set(self.inputs):
            self._named = None  # the model wants columns the records do not carry: general path

    def check(self, records: Any) -> list[dict[str, Any]]:
        """``records`` if they fit the model; otherwise an ``InputError`` saying what is wrong."""
        if not isinstance(records, list):
            raise InputError(f"'records' must be a list of objects, got {_kind(records)}")
        if not records:
            raise InputError("'records' is empty; send at least one record")
        strict = self.flavor != "pyfunc"
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise InputError(f"records[{i}] must be an object of field values, got {_kind(rec)}")
            if self.inputs is not None:
                missing = [c for c in self.inputs if c not in rec]
                if missing:
                    raise InputError(
                        f"records[{i}] is missing field(s) {', '.join(map(repr, missing))}; the "
                        f"model needs: {', '.join(self.inputs)}"
                    )
            if strict:
                for k, v in rec.items():
                    if not isinstance(v, _SCALARS):
                        raise InputError(f"records[{i}].{k} must be a number, string, boolean or "
                                         f"null, got {_kind(v)}")  # fmt: skip
        return records

    def predict(self, records: list[dict[str, Any]]) -> list[Any]:
        """One prediction per record. Model errors caused by the values (``ValueError``,
        ``TypeError``, ``KeyError``) become an ``InputError`` naming them."""
        try:
            out = to_jsonable(self._predict(records))
        except InputError:
            raise
        except (ValueError, TypeError, KeyError) as e:
            raise InputError(f"the model could not score these records: {type(e).__name__}: "
                             f"{str(e)[:500]}") from e  # fmt: skip
        if len(out) != len(records):
            raise RuntimeError(f"the model returned {len(out)} predictions for {len(records)} records")
        return out

    def _predict(self, records: list[dict[str, Any]]) -> Any:
        if self.carries_features or self.flavor == "pyfunc":
            return self.model.predict(records)
        if self.flavor == "torch":
            return self._torch(records)
        import pandas as pd

        if self.features is None and self.inputs is not None:
            fast = self._numeric(records)
            if fast is not None:
                # A matrix in the fitted column order is 5x cheaper to validate than a DataFrame
                # (0.1 vs 0.55 ms here); sklearn only warns that it carries no column names.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    return self.model.predict(fast)
        if self.features is not None:
            frame = self.features.transform(records)
            frame = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
        else:
            frame = pd.DataFrame.from_records(records, columns=list(self.inputs or []) or None)
        if self._named is not None:
            return self.model.predict(frame[self._named])
        if self.inputs is not None and self.features is None:
            return self.model.predict(frame[list(self.inputs)].to_numpy())
        return self.model.predict(frame.to_numpy())

    def _numeric(self, records: list[dict[str, Any]]) -> Any:
        """The hot path for plain numeric models: one float matrix, columns in the order the
        model was fitted with. None when a value is not a number (strings for an encoder in a
        Pipeline): the DataFrame path handles those."""
        import numpy as np

        cols = self._named or self.inputs or ()
        try:
            return np.array([[r[c] for c in cols] for r in records], dtype=np.float64)
        except (TypeError, ValueError):
            return None

    def _torch(self, records: list[dict[str, Any]]) -> Any:
        import numpy as np
        import torch

        cols = self.inputs or ()
        for i, rec in enumerate(records):
            for c in cols:
                if isinstance(rec[c], str) or rec[c] is None:
                    raise InputError(f"records[{i}].{c} must be a number, got {_kind(rec[c])}")
        x = np.asarray([[rec[c] for c in cols] for rec in records], dtype=np.float32)
        device = next(iter(self.model.parameters()), torch.empty(0)).device
        with torch.no_grad():
            out = self.model(torch.from_numpy(x).to(device))
        out = out.detach().cpu().numpy()
        return out.reshape(len(records)) if out.ndim == 2 and out.shape[1] == 1 else out


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
