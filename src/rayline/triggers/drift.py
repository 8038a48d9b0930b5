"""The drift trigger: retrain when the served inputs drift away from the training reference.

Each poll (every ``interval`` s) reads the window of logged inputs of ``model`` (the Parquet files
the serving deployment's input logger wrote under ``<RAYLINE_ARTIFACTS_URL>/monitor/<model>/``, or
``log_dir``, modified in the last ``window_s`` seconds, at most ``max_rows`` of the newest rows),
compares it per feature with ``reference`` (a Parquet file, directory or glob: the training data)
and stores the ``DriftReport`` as the artifact ``named/drift/<model>`` (``rayline drift show
MODEL``); the computation is ``rayline.monitoring.drift_check``. If the score (the largest PSI) exceeds ``threshold`` it fires a run that records why:
``trigger = {"kind": "drift", "score": …, "features": {name: psi, …}, "drifted": [...],
"report": digest}`` (the report's artifact digest: ``ArtifactStore.get(digest)``).

A window fires once: the run key hashes the window's files, so the same logged data never starts
two retraining runs; new traffic that still drifts makes a new window (and, after ``cooldown``
seconds, a new run).

The ``Metric`` trigger (``rayline.triggers.metric``) fires on a falling production metric instead.

Example::

    @flow(schedule=Drift("churn", reference="data/train/*.parquet", threshold=0.2))
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
from rayline.monitoring.drift_check import check_drift
from rayline.monitoring.drift_stats import save_report
from rayline.triggers.policy import parse_overlap
from rayline.triggers.trigger import Fire, Poll

__all__ = ["Drift"]


@dataclass(frozen=True)
class Drift:
    """Fire when the logged inputs of ``model`` drift from ``reference`` (see the module docstring).

    Args:
        model: the served model's name (its inputs are logged under ``monitor/<model>``).
        reference: the training data: a Parquet file, directory or glob.
        threshold: fire when the largest per-feature PSI exceeds it (default 0.2).
        interval: seconds between checks (default 300); window_s: how far back (default 1 day).
        min_rows: fewer logged rows never fire (default 200); max_rows: newest rows compared.
        cooldown: seconds after a fire before another (default 0).
        features: the columns to compare (default: every shared column).
        log_dir: where the deployment logs its inputs, when not ``<artifact URL>/monitor``
            (``serve_model(..., input_log={"dir": ...})``).
    """

    model: str
    reference: str = ""
    threshold: float = 0.2
    interval: float = 300.0
    window_s: float = 86_400.0
    min_rows: int = 200
    max_rows: int = 50_000
    cooldown: float = 0.0
    home: str | None = None
    features: tuple[str, ...] | None = None
    log_dir: str | None = None
    overlap: str = "skip"
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    kind: ClassVar[str] = "drift"

    def __post_init__(self) -> None:
        if not self.model or not self.reference:
            raise DefinitionError("Drift needs a model name and a reference (training data path)")
        if self.interval <= 0 or self.threshold <= 0 or self.window_s <= 0:
            raise DefinitionError(f"Drift({self.model!r}): interval, threshold and window_s must be > 0")
        object.__setattr__(self, "overlap", parse_overlap(self.overlap, f"Drift({self.model!r}): "))
        object.__setattr__(self, "params", dict(self.params))
        if self.features is not None:
            object.__setattr__(self, "features", tuple(self.features))

    def resolved(self, base: Path) -> Drift:
        """This trigger with a relative local reference (and log_dir) made absolute against ``base``."""
        out = self
        if "://" not in self.reference and not os.path.isabs(os.path.expanduser(self.reference)):
            out = replace(out, reference=str(base / self.reference))
        if self.log_dir and not os.path.isabs(os.path.expanduser(self.log_dir)):
            out = replace(out, log_dir=str(base / self.log_dir))
        return out

    @property
    def key(self) -> str:
        return f"drift:{self.model}:{self.reference}>{self.threshold:g}"

    def describe(self) -> str:
        return (f"drift of {self.model}'s served inputs from {self.reference} above PSI "
                f"{self.threshold:g} (every {self.interval:g} s)")  # fmt: skip

    def poll(self, now: datetime, state: Mapping[str, Any]) -> Poll:
        st = dict(state)
        nxt = now + timedelta(seconds=self.interval)
        t = now.timestamp()
        if t - float(st.get("fired_at", -1e18)) < self.cooldown:
            return Poll((), st, nxt)
        report = check_drift(self.model, self.reference, home=self.home, since=t - self.window_s,
                             max_rows=self.max_rows, min_rows=self.min_rows, save=False,
                             log_dir=self.log_dir, psi_threshold=self.threshold,
                             features=self.features)  # fmt: skip
        if report is None:
            return Poll((), st, nxt, note=None)
        digest = save_report(report, self.home)
        st.update(score=report.score, checked_at=t)
        window = str(report.window.get("digest", ""))
        if not report.score > self.threshold or window == st.get("fired"):
            return Poll((), st, nxt)
        scores = {f.name: round(f.psi, 4) for f in report.features}
        reason = (f"drift: PSI {report.score:.3f} > {self.threshold:g} on "
                  f"{', '.join(report.drifted_features) or '-'} ({report.current_rows} served rows)")  # fmt: skip
        info = {"kind": "drift", "model": self.model, "score": report.score, "threshold": self.threshold,
                "features": scores, "drifted": report.drifted_features, "rows": report.current_rows,
                "window": window, "report": digest}  # fmt: skip
        fire = Fire(run_key=f"drift@{window[:40]}", reason=reason, info=info,
                    record_skip=st.get("skipped") != window, skip_takes_key=False)  # fmt: skip
        return Poll((fire,), st, nxt)

    def settle(self, state: dict[str, Any], fire: Fire, action: str) -> dict[str, Any]:
        window = fire.info["window"]
        if action == "skipped":
            return {**state, "skipped": window}
        out = {**state, "fired": window, "fired_at": state.get("checked_at")}
        out.pop("skipped", None)
        return out
