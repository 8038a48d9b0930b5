"""The metric trigger: retrain when a tracked metric of the production model goes bad.

The metric is computed from labelled feedback: Parquet files (a file, directory or glob) with a
``prediction`` column (what the production model answered) and a ``label`` column (what turned
out to be true), for example the served-input log joined with late-arriving labels. Each poll
(every ``interval`` s) reads the newest ``window_rows`` rows and computes ``metric`` (``accuracy``,
``precision``, ``recall``, ``f1``, ``rmse``, ``mae``, ``r2``). It fires when the metric is below
``threshold`` (above it for ``rmse`` and ``mae``), at most once per feedback snapshot (the run key
is the snapshot's hash, as for ``NewData``), and records ``{"kind": "metric", "metric": …,
"value": …, "threshold": …, "rows": …}`` on the run. The metric itself is computed by
``rayline.monitoring.feedback``.

Example::

    @flow(schedule=Metric("data/feedback/*.parquet", metric="accuracy", threshold=0.8))
    def retrain(): ...
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from rayline.errors import DefinitionError
from rayline.monitoring.feedback import feedback_metric
from rayline.triggers.policy import parse_overlap
from rayline.triggers.trigger import Fire, Poll

__all__ = ["Metric"]

_LOWER_IS_BETTER = ("rmse", "mae")


@dataclass(frozen=True)
class Metric:
    """Fire when ``metric`` over the feedback under ``feedback`` crosses ``threshold``.

    Args:
        feedback: Parquet file, directory or glob with prediction and label columns.
        metric: ``accuracy`` (default) …; ``rmse``/``mae`` fire when *above* the threshold.
        threshold: the bound; min_rows: less feedback never fires (default 100).
        window_rows: only the newest rows count (default 10 000).
    """

    feedback: str
    metric: str = "accuracy"
    threshold: float = 0.8
    prediction: str = "prediction"
    label: str = "label"
    min_rows: int = 100
    window_rows: int = 10_000
    interval: float = 300.0
    overlap: str = "skip"
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    kind: ClassVar[str] = "metric"

    def __post_init__(self) -> None:
        if not self.feedback:
            raise DefinitionError("Metric needs the path of the labelled feedback")
        if self.metric not in ("accuracy", "precision", "recall", "f1", "rmse", "mae", "r2"):
            raise DefinitionError(f"Metric({self.feedback!r}): unknown metric {self.metric!r}")
        if self.interval <= 0:
            raise DefinitionError(f"Metric({self.feedback!r}): interval must be > 0")
        object.__setattr__(self, "overlap", parse_overlap(self.overlap, f"Metric({self.feedback!r}): "))
        object.__setattr__(self, "params", dict(self.params))

    def resolved(self, base: Path) -> Metric:
        path = os.path.expanduser(self.feedback)
        return self if "://" in path or os.path.isabs(path) else replace(self, feedback=str(base / path))

    @property
    def key(self) -> str:
        return f"metric:{self.feedback}:{self.metric}"

    def describe(self) -> str:
        side = "above" if self.metric in _LOWER_IS_BETTER else "below"
        return f"{self.metric} on {self.feedback} {side} {self.threshold:g} (every {self.interval:g} s)"

    def bad(self, value: float) -> bool:
        if value != value:  # NaN: no verdict
            return False
        return value > self.threshold if self.metric in _LOWER_IS_BETTER else value < self.threshold

    def poll(self, now: datetime, state: Mapping[str, Any]) -> Poll:
        from rayline.triggers.newdata import take_snapshot

        st = dict(state)
        nxt = now + timedelta(seconds=self.interval)
        snap = take_snapshot(self.feedback)
        if snap.files == 0 or snap.digest == st.get("fired"):
            return Poll((), st, nxt)
        value, rows = feedback_metric(self.feedback, self.metric, prediction=self.prediction,
                                      label=self.label, window_rows=self.window_rows)  # fmt: skip
        st.update(value=value, rows=rows)
        if rows < self.min_rows or not self.bad(value):
            return Poll((), st, nxt)
        side = ">" if self.metric in _LOWER_IS_BETTER else "<"
        reason = f"{self.metric} {value:.4f} {side} {self.threshold:g} on {rows} labelled rows"
        info = {"kind": "metric", "metric": self.metric, "value": value, "threshold": self.threshold,
                "rows": rows, "feedback": self.feedback, "snapshot": snap.digest}  # fmt: skip
        fire = Fire(run_key=f"metric@{snap.digest[:40]}", reason=reason, info=info,
                    record_skip=st.get("skipped") != snap.digest, skip_takes_key=False)  # fmt: skip
        return Poll((fire,), st, nxt)

    def settle(self, state: dict[str, Any], fire: Fire, action: str) -> dict[str, Any]:
        digest = fire.info["snapshot"]
        if action == "skipped":
            return {**state, "skipped": digest}
        out = {**state, "fired": digest}
        out.pop("skipped", None)
        return out
