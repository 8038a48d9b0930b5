"""PSI, KS and the drift report (no Ray)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from rayline.monitoring.drift_stats import (
    DriftReport,
    compare,
    ks_test,
    load_report,
    psi_categorical,
    psi_numeric,
    save_report,
)


def test_psi_is_zero_for_the_same_sample_and_grows_with_the_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=5000)
    assert psi_numeric(ref, ref) == pytest.approx(0.0, abs=1e-9)
    same = psi_numeric(ref, rng.normal(size=5000))
    small = psi_numeric(ref, rng.normal(0.2, 1, size=5000))
    large = psi_numeric(ref, rng.normal(1.0, 1, size=5000))
    assert same < 0.02 < small < 0.2 < large


def test_psi_numeric_handles_constant_columns_nans_and_empty_samples():
    assert psi_numeric(np.ones(100), np.ones(50)) == pytest.approx(0.0, abs=1e-9)
    assert psi_numeric(np.ones(100), np.full(50, 2.0)) > 1.0
    assert psi_numeric([1.0, float("nan"), 2.0], [1.0, 2.0]) == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(psi_numeric([], [1.0]))


def test_psi_categorical_counts_new_and_vanished_categories():
    ref = ["a"] * 50 + ["b"] * 50
    assert psi_categorical(ref, ["b", "a"] * 25) == pytest.approx(0.0, abs=1e-9)
    assert psi_categorical(ref, ["c"] * 100) > 1.0
    assert psi_categorical(ref, ["a"] * 90 + ["b"] * 10) > 0.2


def test_ks_matches_scipy_and_detects_a_shift():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=2000)
    stat, p = ks_test(ref, rng.normal(size=2000))
    assert stat < 0.06 and p > 0.01
    stat, p = ks_test(ref, rng.normal(0.5, 1, size=2000))
    assert stat > 0.15 and p < 1e-6


def _frame(n: int, shift: float = 0.0, seed: int = 0, plan: str = "basic") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(shift, 1, n), "b": rng.normal(0, 1, n),
                         "plan": [plan] * (n // 2) + ["basic"] * (n - n // 2),
                         "label": rng.integers(0, 2, n)})  # fmt: skip


def test_compare_flags_only_the_shifted_features():
    report = compare(_frame(3000), _frame(1000, shift=1.0, seed=2, plan="pro"), model="churn")
    by = {f.name: f for f in report.features}
    assert set(by) == {"a", "b", "plan"}  # the label is not a feature
    assert by["a"].drifted and by["a"].kind == "numeric" and by["a"].psi > 0.2
    assert not by["b"].drifted and by["b"].ks is not None
    assert by["plan"].drifted and by["plan"].kind == "categorical" and by["plan"].ks is None
    assert report.drifted and report.drifted_features == ["a", "plan"]
    assert report.score == max(f.psi for f in report.features)
    calm = compare(_frame(3000), _frame(1000, seed=3), model="churn")
    assert not calm.drifted and calm.score < 0.1


def test_report_round_trips_through_json_and_the_artifact_store(tmp_path):
    report = compare(_frame(500), _frame(200, shift=2.0, seed=4), model="churn",
                     window={"files": 3})  # fmt: skip
    again = DriftReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.drifted_features == report.drifted_features
    assert again.score == pytest.approx(report.score)
    save_report(report, tmp_path)
    stored = load_report("churn", tmp_path)
    assert stored.window == {"files": 3} and stored.features == again.features
    html = stored._repr_html_()
    assert "<table>" in html and "plan" in html and "drift in churn" in html


def test_compare_names_missing_features():
    with pytest.raises(KeyError, match="zzz"):
        compare(_frame(10), _frame(10), features=["a", "zzz"])
