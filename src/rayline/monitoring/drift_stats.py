"""Drift statistics and the drift report: PSI and KS per feature, on numpy and scipy.

``compare(reference, current)`` measures, for every feature both tables share:

* numeric columns: PSI over ``bins`` bins cut at the reference's quantiles (so each bin holds
  about the same share of the reference), and the two-sample Kolmogorov-Smirnov statistic and
  p-value (``scipy.stats.ks_2samp``);
* other columns (strings, booleans): PSI over the categories (those seen in either sample; a
  category missing on one side counts with a small floor instead of zero).

PSI reads as the usual rule of thumb: below 0.1 stable, 0.1-0.2 moderate, above 0.2 a shift. A
feature is *drifted* when its PSI is at least ``psi_threshold``, or when KS rejects equality
(``p < p_value``) with a statistic of at least ``ks_threshold`` (large samples make tiny, harmless
differences significant, so significance alone does not count). The report's ``score`` is the
largest PSI.

The report is JSON-able (``to_dict``/``from_dict``), stored in the artifact store under
``named/drift/<model>`` (``save_report``/``load_report``), shown by ``rayline drift show`` and
rendered in notebooks (``_repr_html_``).

Example::

    report = compare(read_parquet("data/train.parquet"), logged_inputs, model="churn")
    report.score, report.drifted_features     # 0.41, ["tenure"]
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DriftReport", "FeatureDrift", "compare", "ks_test", "load_report", "psi_categorical",
           "psi_numeric", "save_report"]  # fmt: skip

#: Floor for an empty bin's share, so that log(0) never appears (the usual PSI convention).
EPS = 1e-4
#: Columns the input logger adds; never compared.
META_COLUMNS = frozenset({"_ts", "_model", "_version", "_prediction"})


def _shares(counts: Any) -> Any:
    import numpy as np

    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    shares = counts / total if total else np.zeros_like(counts)
    return np.clip(shares, EPS, None)


def _psi(ref_shares: Any, cur_shares: Any) -> float:
    import numpy as np

    return float(np.sum((cur_shares - ref_shares) * np.log(cur_shares / ref_shares)))


def psi_numeric(reference: Any, current: Any, bins: int = 10) -> float:
    """PSI of ``current`` against ``reference`` over ``bins`` reference-quantile bins.

    NaNs are dropped. Equal quantiles (a column with few distinct values) merge into one edge.
    Returns NaN when either sample is empty.
    """
    import numpy as np

    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if ref.size == 0 or cur.size == 0:
        return math.nan
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    # bin i holds values in (edges[i-1], edges[i]]; the outer bins are open-ended
    ref_counts = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=edges.size + 1)
    cur_counts = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=edges.size + 1)
    return _psi(_shares(ref_counts), _shares(cur_counts))


def psi_categorical(reference: Sequence[Any], current: Sequence[Any]) -> float:
    """PSI over the categories of either sample (None counts as a category of its own)."""
    from collections import Counter

    ref, cur = Counter(reference), Counter(current)
    if not ref or not cur:
        return math.nan
    cats = sorted(set(ref) | set(cur), key=repr)
    return _psi(_shares([ref[c] for c in cats]), _shares([cur[c] for c in cats]))


def ks_test(reference: Any, current: Any) -> tuple[float, float]:
    """The two-sample KS statistic and p-value (NaN, NaN when a sample is empty)."""
    import numpy as np
    from scipy.stats import ks_2samp

    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if ref.size == 0 or cur.size == 0:
        return math.nan, math.nan
    result = ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue)


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift: ``kind`` is ``numeric`` or ``categorical`` (no KS for those)."""

    name: str
    kind: str
    psi: float
    ks: float | None
    p_value: float | None
    drifted: bool
    reference_rows: int
    current_rows: int


@dataclass(frozen=True)
class DriftReport:
    """Per-feature drift of a window of served inputs against the training reference."""

    model: str
    features: tuple[FeatureDrift, ...]
    score: float  # the largest PSI
    drifted: bool  # any feature drifted
    psi_threshold: float
    ks_threshold: float
    p_value: float
    reference_rows: int
    current_rows: int
    created_at: float = field(default_factory=time.time)
    window: Mapping[str, Any] = field(default_factory=dict)  # files, first/last logged time

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"] = [{k: _clean(v) for k, v in asdict(f).items()} for f in self.features]
        out["score"] = _clean(self.score)
        out["window"] = dict(self.window)
        out["drifted_features"] = self.drifted_features
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftReport:
        feats = tuple(FeatureDrift(**{k: (math.nan if v is None and k == "psi" else v)
                                      for k, v in f.items()}) for f in d["features"])  # fmt: skip
        keep = {k: d[k] for k in ("model", "drifted", "psi_threshold", "ks_threshold", "p_value",
                                  "reference_rows", "current_rows", "created_at") if k in d}  # fmt: skip
        score = d.get("score")
        return cls(features=feats, score=math.nan if score is None else float(score),
                   window=dict(d.get("window") or {}), **keep)  # fmt: skip

    def summary(self) -> str:
        """One line: ``drift in churn: score 0.41 (PSI) above 0.2; drifted: tenure``."""
        what = ", ".join(self.drifted_features) or "none"
        verdict = "above" if self.drifted else "within"
        return (f"drift in {self.model}: score {self.score:.3f} (max PSI), {verdict} "
                f"{self.psi_threshold:g}; drifted: {what}; {self.current_rows} logged rows vs "
                f"{self.reference_rows} reference rows")  # fmt: skip

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr style='{'color:#b00' if f.drifted else ''}'><td>{html.escape(f.name)}</td>"
            f"<td>{f.kind}</td><td>{_fmt(f.psi)}</td><td>{_fmt(f.ks)}</td><td>{_fmt(f.p_value)}</td>"
            f"<td>{'yes' if f.drifted else 'no'}</td></tr>"
            for f in self.features
        )
        return (f"<div><b>{html.escape(self.summary())}</b><table><thead><tr><th>feature</th>"
                f"<th>kind</th><th>PSI</th><th>KS</th><th>p-value</th><th>drifted</th></tr></thead>"
                f"<tbody>{rows}</tbody></table></div>")  # fmt: skip


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g}" if abs(v) < 1e-3 and v else f"{v:.3f}"


def _table(data: Any) -> Any:
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    if hasattr(data, "to_table"):  # a rayline ParquetSource
        return data.to_table()
    if isinstance(data, str | Path):
        import pyarrow.dataset as ds

        return ds.dataset(str(data), format="parquet").to_table()
    return pa.Table.from_pandas(data, preserve_index=False)


def _is_numeric(col: Any) -> bool:
    import pyarrow.types as t

    typ = col.type
    return t.is_integer(typ) or t.is_floating(typ) or t.is_decimal(typ)


def compare(reference: Any, current: Any, *, model: str = "", features: Sequence[str] | None = None,
            psi_threshold: float = 0.2, ks_threshold: float = 0.1, p_value: float = 0.01,
            bins: int = 10, window: Mapping[str, Any] | None = None) -> DriftReport:  # fmt: skip
    """Drift of ``current`` against ``reference`` (tables, DataFrames, Parquet paths or sources).

    Args:
        features: the columns to compare (default: every column both share, minus the
            logger's ``_ts``/``_version``/... columns and a column named ``label``).
    """
    ref, cur = _table(reference), _table(current)
    names = list(features) if features is not None else [
        c for c in ref.column_names if c in cur.column_names and c not in META_COLUMNS and c != "label"]
    missing = [c for c in names if c not in ref.column_names or c not in cur.column_names]
    if missing:
        raise KeyError(f"drift: feature(s) {', '.join(missing)} missing from the reference or the window")
    out = []
    for name in names:
        r, c = ref.column(name), cur.column(name)
        if _is_numeric(r) and _is_numeric(c):
            rv = r.to_numpy(zero_copy_only=False).astype(float)
            cv = c.to_numpy(zero_copy_only=False).astype(float)
            p = psi_numeric(rv, cv, bins)
            stat, pv = ks_test(rv, cv)
            drifted = (p >= psi_threshold) or (pv < p_value and stat >= ks_threshold)
            out.append(FeatureDrift(name, "numeric", p, stat, pv, bool(drifted), len(rv), len(cv)))
        else:
            p = psi_categorical(r.to_pylist(), c.to_pylist())
            out.append(FeatureDrift(name, "categorical", p, None, None, bool(p >= psi_threshold),
                                    len(r), len(c)))  # fmt: skip
    scores = [f.psi for f in out if not math.isnan(f.psi)]
    return DriftReport(
        model=model, features=tuple(out), score=max(scores) if scores else math.nan,
        drifted=any(f.drifted for f in out), psi_threshold=psi_threshold, ks_threshold=ks_threshold,
        p_value=p_value, reference_rows=ref.num_rows, current_rows=cur.num_rows,
        window=dict(window or {}),
    )  # fmt: skip


def save_report(report: DriftReport, home: Any = None) -> str:
    """Store ``report`` as the artifact ``named/drift/<model>`` (JSON-able dict); its digest."""
    return _store(home).put_named("drift", report.model or "_", report.to_dict()).digest


def load_report(model: str, home: Any = None) -> DriftReport:
    """The latest stored drift report of ``model``.

    Raises:
        StoreError: no drift report was stored for that model.
    """
    return DriftReport.from_dict(_store(home).get_named("drift", model))


def _store(home: Any) -> Any:
    from rayline.config import Settings
    from rayline.store.artifacts import ArtifactStore

    settings = Settings(home=Path(home)) if home is not None else Settings()
    return ArtifactStore.for_settings(settings, sweep=False)
