"""Drift over a window of served inputs: which logged files, their rows, the report.

The serving deployment's input logger (``rayline.monitoring.input_log``) writes Parquet files
under the artifact URL, ``<RAYLINE_ARTIFACTS_URL>/monitor/<model>/`` (or the deployment's
``log_dir``, a folder or a URL); ``check_drift`` lists and reads the recent ones through the
same filesystem (a folder, or object storage that any host reaches) and compares them per
feature with the training reference (``rayline.monitoring.drift_stats.compare``), storing the
report. The ``Drift`` trigger (``rayline.triggers.drift``) polls it.

Example::

    report = check_drift("churn", "data/train/*.parquet", since=time.time() - 3600)
    report.score if report else "nothing logged yet"
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayline.monitoring.drift_stats import DriftReport, compare, save_report
from rayline.monitoring.input_log import monitor_location
from rayline.store.artifact_fsspec import mtime_of

__all__ = ["LoggedFile", "check_drift", "read_window", "window_files"]


@dataclass(frozen=True, slots=True)
class LoggedFile:
    """One file of logged inputs: its path in ``fs``, size and last change (epoch s)."""

    fs: Any
    path: str
    size: int
    mtime: float


def window_files(home: str | Path, model: str, *, since: float | None = None,
                 log_dir: str | Path | None = None) -> list[LoggedFile]:  # fmt: skip
    """The logged-input files of ``model`` (oldest first), those modified at or after ``since``;
    under ``log_dir`` when the deployment logs there (``input_log={"dir": ...}``)."""
    fs, root = monitor_location(home, model, log_dir)
    fs.invalidate_cache(root)  # other hosts write there: never a cached listing
    try:
        found = fs.glob(f"{root.rstrip('/')}/*/part-*.parquet", detail=True)
    except FileNotFoundError:
        return []
    out = []
    for path, info in found.items():
        mtime = mtime_of(info)
        if since is None or mtime >= since:
            out.append(LoggedFile(fs, path, int(info.get("size") or 0), mtime))
    return sorted(out, key=lambda f: (f.mtime, f.path))


def read_window(files: list[LoggedFile], max_rows: int | None = None) -> Any:
    """The rows of ``files`` as one table (the newest ``max_rows`` when given)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for f in files:
        with f.fs.open(f.path, "rb") as fh:
            tables.append(pq.read_table(fh))
    if not tables:
        return pa.table({})
    table = pa.concat_tables(tables, promote_options="permissive")
    if max_rows is not None and table.num_rows > max_rows:
        table = table.slice(table.num_rows - max_rows)
    return table


def _digest(files: list[LoggedFile]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"\0{f.path}\0{f.size}".encode())
    return h.hexdigest()


def check_drift(model: str, reference: Any, *, home: Any = None, since: float | None = None,
                max_rows: int | None = 50_000, min_rows: int = 1, save: bool = True,
                log_dir: str | Path | None = None, **compare_kwargs: Any) -> DriftReport | None:  # fmt: skip
    """Compare the logged inputs of ``model`` (since ``since``) with ``reference``; store and
    return the report, or None when fewer than ``min_rows`` rows were logged."""
    from rayline.config import Settings

    home = Path(home) if home is not None else Settings().resolved_home
    files = window_files(home, model, since=since, log_dir=log_dir)
    current = read_window(files, max_rows)
    if current.num_rows < max(min_rows, 1):
        return None
    ts = current.column("_ts").to_pylist() if "_ts" in current.column_names else []
    window = {"files": len(files), "digest": _digest(files), "first_ts": min(ts) if ts else None,
              "last_ts": max(ts) if ts else None, "reference": str(reference)[:500]}  # fmt: skip
    report = compare(reference, current, model=model, window=window, **compare_kwargs)
    if save:
        save_report(report, home)
    return report
