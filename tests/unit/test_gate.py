"""The evaluation gate's decision (no Ray): same data, declared metric and margin, history kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from rayline.config import Settings
from rayline.models.registry.sql import ModelRegistry
from rayline.tasks.gate import GateDecision, gate_and_promote, rollout_if_promoted
from rayline.tasks.train import train_sklearn


def _data(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    x["label"] = (x.a - 0.5 * x.b > 0).astype(int)
    return x


@pytest.fixture
def reg(home, store_url):
    """The registry in the run store's database, on SQLite and on PostgreSQL."""
    with ModelRegistry(Settings(home=home, db_url=store_url)) as r:
        yield r


def test_first_challenger_is_promoted_when_there_is_no_champion(reg):
    model = train_sklearn(_data(300, 0), estimator=LogisticRegression(), label="label")
    d = gate_and_promote(model, _data(200, 1), model_name="churn", home=reg)
    assert d.promoted and d.champion_version is None and d.challenger_version == 1
    assert reg.aliases("churn") == {"production": 1}
    assert d.challenger_score > 0.9 and d.rows == 200


def test_worse_challenger_is_registered_but_not_promoted(reg):
    good = train_sklearn(_data(300, 0), estimator=LogisticRegression(), label="label")
    gate_and_promote(good, _data(200, 1), model_name="churn", home=reg)
    bad = train_sklearn(_data(300, 2), estimator=DummyClassifier(strategy="most_frequent"), label="label")
    d = gate_and_promote(bad, _data(200, 1), model_name="churn", home=reg)
    assert not d.promoted and (d.challenger_version, d.champion_version) == (2, 1)
    assert d.challenger_score < d.champion_score
    assert reg.aliases("churn") == {"production": 1}
    last = reg.history("churn")[-1]
    assert last.event == "gate_rejected" and "does not beat" in (last.reason or "")
    assert [v.version for v in reg.versions("churn")] == [1, 2]  # every candidate kept


def test_better_challenger_must_beat_the_margin(reg):
    weak = train_sklearn(_data(300, 0), estimator=DummyClassifier(strategy="most_frequent"), label="label")
    gate_and_promote(weak, _data(200, 1), model_name="churn", home=reg)
    good = train_sklearn(_data(300, 0), estimator=LogisticRegression(), label="label")
    d = gate_and_promote(good, _data(200, 1), model_name="churn", home=reg, margin=0.9)
    assert not d.promoted  # better, but not by 0.9 accuracy
    d = gate_and_promote(d.challenger_version, _data(200, 1), model_name="churn", home=reg, margin=0.05)
    assert d.promoted and reg.aliases("churn") == {"production": 2}
    promote = reg.history("churn", "production")[-1]
    assert promote.event == "promote" and "beats champion v1" in (promote.reason or "")


def test_challenger_registered_by_register_model_is_gated_not_registered_again(reg):
    good = train_sklearn(_data(300, 0), estimator=LogisticRegression(), label="label")
    mv = reg.register("churn", good)
    d = gate_and_promote(mv, _data(200, 1), model_name="churn", home=reg)
    assert d.promoted and d.challenger_version == mv.version == 1
    assert [v.version for v in reg.versions("churn")] == [1]
    with pytest.raises(ValueError, match="version of 'churn', not of 'other'"):
        gate_and_promote(mv, _data(200, 1), model_name="other", home=reg)


def test_champion_registered_as_a_plain_estimator_is_scored_on_the_same_rows(reg):
    df = _data(300, 0)
    reg.register("churn", DummyClassifier(strategy="most_frequent").fit(df[["a", "b"]], df.label))
    reg.promote("churn", 1, "production")
    good = train_sklearn(df, estimator=LogisticRegression(), label="label")
    d = gate_and_promote(good, _data(100, 5), model_name="churn", home=reg, label="label")
    assert d.promoted and d.champion_score < 0.7 < d.challenger_score


def test_mode_must_fit_the_metric_and_nothing_rolls_out_without_promotion(reg):
    with pytest.raises(ValueError, match="contradicts"):
        gate_and_promote(1, _data(10, 0), model_name="churn", home=reg, metric="rmse", mode="max")
    d = GateDecision("churn", "production", "accuracy", "max", 0.0, 2, 1, 0.5, 0.9, False, "worse", 10)
    out = rollout_if_promoted(d, app_name="churn", home=reg)
    assert out.action == "none" and out.version == 1
