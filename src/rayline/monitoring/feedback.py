"""Feedback metrics: how the production model did, from its predictions and the true labels.

Feedback is Parquet files (a file, directory or glob) with a ``prediction`` column (what the
production model answered) and a ``label`` column (what turned out to be true), for example the
served-input log joined with late-arriving labels. ``feedback_metric`` scores the newest rows
with ``rayline.models.metrics.prediction_metric``; the ``Metric`` trigger
(``rayline.triggers.metric``) polls it.

Example::

    value, rows = feedback_metric("data/feedback/*.parquet", "accuracy", window_rows=5000)
"""

from __future__ import annotations

import os
from pathlib import Path

from rayline.models.metrics import prediction_metric

__all__ = ["feedback_files", "feedback_metric"]


def feedback_metric(path: str, metric: str = "accuracy", *, prediction: str = "prediction",
                    label: str = "label", window_rows: int | None = None) -> tuple[float, int]:  # fmt: skip
    """``metric`` of the predictions against the labels in the feedback under ``path``; (value,
    rows). NaN with 0 rows when there is no feedback yet."""
    import math

    import pyarrow.dataset as ds

    files = feedback_files(path)
    if not files:
        return math.nan, 0
    table = ds.dataset(files, format="parquet").to_table(columns=[prediction, label])
    if window_rows is not None and table.num_rows > window_rows:
        table = table.slice(table.num_rows - window_rows)
    if table.num_rows == 0:
        return math.nan, 0
    y, pred = table.column(label).to_pylist(), table.column(prediction).to_pylist()
    return float(prediction_metric(metric, y, pred)), table.num_rows


def feedback_files(path: str) -> list[str]:
    """The Parquet files under ``path`` (a file, directory or glob), oldest first."""
    import glob

    if any(ch in path for ch in "*?["):
        names = glob.glob(path, recursive=True)
    elif os.path.isdir(path):
        names = [str(p) for p in Path(path).rglob("*.parquet")]
    else:
        names = [path] if os.path.isfile(path) else []
    keep = [n for n in names if not os.path.basename(n).startswith((".", "_")) and os.path.isfile(n)]
    return sorted(keep, key=lambda n: (os.stat(n).st_mtime, n))
