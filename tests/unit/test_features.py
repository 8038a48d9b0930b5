"""Feature pipelines: fitted once, applied identically to tables, DataFrames and serving records."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from rayline.connectors import EmptyInputError
from rayline.models.features import (
    BatchFn,
    DaskML,
    FeaturePipeline,
    FittedFeatures,
    Impute,
    OneHot,
    Ordinal,
    StandardScale,
)
from rayline.models.training_data import Split
from rayline.tasks.features import apply_features, fit_features


def add_ratio(df: pd.DataFrame) -> pd.DataFrame:
    df["ratio"] = df["income"] / (df["age"] + 1.0)
    return df


def churn_frame(n: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, n)
    age[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({
        "age": age,
        "income": rng.lognormal(10, 0.5, n),
        "plan": rng.choice(["basic", "pro", "team"], n, p=[0.6, 0.3, 0.1]),
        "churned": rng.integers(0, 2, n),
    })  # fmt: skip


SPEC = [
    {"impute": {"columns": ["age"], "strategy": "median"}},
    {"standard_scale": ["age", "income"]},
    {"one_hot": ["plan"]},
]


def test_fit_on_a_table_then_the_same_transform_on_serving_records():
    train = pa.Table.from_pandas(churn_frame())
    fitted = FeaturePipeline.from_spec(SPEC).fit(train)
    assert fitted.output_columns == ("age", "income", "churned", "plan=basic", "plan=pro", "plan=team")

    rows = churn_frame(5, seed=1)
    records = rows.to_dict("records")
    records[0]["age"] = None  # a serving request with a missing value
    rows.loc[0, "age"] = np.nan
    from_records = fitted.transform(records)
    from_frame = fitted.transform(rows)
    from_arrow = fitted.transform(pa.Table.from_pandas(rows)).to_pandas()
    pd.testing.assert_frame_equal(from_records, from_frame, check_dtype=False)
    pd.testing.assert_frame_equal(from_arrow, from_frame, check_dtype=False)
    assert not from_frame[["age", "income"]].isna().any().any()


def test_fitted_state_is_small_json_and_round_trips():
    fitted = FeaturePipeline.from_spec(SPEC).fit(churn_frame())
    text = fitted.to_json()
    assert len(text) < 2000
    doc = json.loads(text)
    assert doc["steps"][2]["state"]["categories"]["plan"] == ["basic", "pro", "team"]
    again = FittedFeatures.from_json(text)
    rows = churn_frame(50, seed=2)
    pd.testing.assert_frame_equal(again.transform(rows), fitted.transform(rows))


def test_standard_scale_streams_in_batches_and_matches_numpy():
    df = churn_frame(1000).dropna()
    one_pass = FeaturePipeline([StandardScale(["income"])]).fit(df)
    streamed = FeaturePipeline([StandardScale(["income"])]).fit(pa.Table.from_pandas(df), batch_size=37)
    s1, s2 = one_pass.states[0], streamed.states[0]
    assert s1["mean"]["income"] == pytest.approx(df["income"].mean())
    assert s1["std"]["income"] == pytest.approx(df["income"].std(ddof=0))
    assert s2["mean"]["income"] == pytest.approx(s1["mean"]["income"])
    assert s2["std"]["income"] == pytest.approx(s1["std"]["income"])


def test_a_step_is_fitted_on_the_output_of_the_steps_before_it():
    df = pd.DataFrame({"x": [1.0, np.nan, 3.0, np.nan]})
    fitted = FeaturePipeline([Impute(["x"], strategy="constant", value=10.0), StandardScale(["x"])]).fit(df)
    assert fitted.states[1]["mean"]["x"] == pytest.approx(np.mean([1, 10, 3, 10]))
    out = fitted.transform(df)["x"]
    assert out.mean() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [("mean", 3.0), ("median", 2.0), ("most_frequent", 1.0), ("constant", -1.0)],
)
def test_impute_strategies(strategy, expected):
    df = pd.DataFrame({"x": [1.0, 1.0, 3.0, 7.0, np.nan]})
    step = Impute(["x"], strategy=strategy, value=-1.0 if strategy == "constant" else None)
    fitted = FeaturePipeline([step]).fit(df)
    assert fitted.transform(df)["x"].iloc[4] == pytest.approx(expected)


def test_unseen_categories_encode_as_zeros_or_unknown():
    train = pd.DataFrame({"plan": ["a", "b", "a", "c", "a", "b"]})
    onehot = FeaturePipeline([OneHot(["plan"], max_categories=2)]).fit(train)
    out = onehot.transform([{"plan": "c"}, {"plan": "zzz"}, {"plan": "a"}])
    assert list(out.columns) == ["plan=a", "plan=b"]
    assert out.to_numpy().tolist() == [[0, 0], [0, 0], [1, 0]]
    ordinal = FeaturePipeline([Ordinal(["plan"])]).fit(train)
    assert ordinal.transform([{"plan": "c"}, {"plan": "zzz"}, {"plan": None}])["plan"].tolist() == [2, -1, -1]


def test_batch_fn_runs_your_function_and_is_saved_by_name():
    df = churn_frame(20).fillna(0)
    fitted = FeaturePipeline([BatchFn(add_ratio), StandardScale(["ratio"])]).fit(df)
    assert "ratio" in fitted.output_columns
    again = FittedFeatures.from_json(fitted.to_json())
    pd.testing.assert_frame_equal(again.transform(df), fitted.transform(df))
    local = FeaturePipeline([BatchFn(lambda d: d)]).fit(df)
    with pytest.raises(ValueError, match="module level"):
        local.to_json()


def test_bad_specs_and_columns_say_what_to_fix():
    with pytest.raises(ValueError, match="unknown features step 'scale'"):
        FeaturePipeline.from_spec([{"scale": ["age"]}])
    with pytest.raises(KeyError, match="column 'salary' is not in the data"):
        FeaturePipeline([StandardScale(["salary"])]).fit(churn_frame())
    with pytest.raises(TypeError, match="'plan' is .*not numeric; encode it"):
        FeaturePipeline([StandardScale(["plan"])]).fit(churn_frame())


def test_empty_data_is_refused_naming_the_task():
    with pytest.raises(EmptyInputError, match="fit_features.*0 rows"):
        fit_features(churn_frame().iloc[:0], SPEC)


def test_tasks_called_directly_fit_and_apply_to_each_kind_of_data():
    df = churn_frame()
    fitted = fit_features(Split(train=df, test=df.iloc[:10]), SPEC)
    assert fitted.digest is None  # no run, so no JSON artifact
    assert isinstance(apply_features(df, fitted), pd.DataFrame)
    assert isinstance(apply_features(pa.Table.from_pandas(df), fitted), pa.Table)
    both = apply_features(Split(train=df, test=df.iloc[:10]), fitted)
    assert isinstance(both, Split) and len(both.test) == 10


def test_a_dask_ml_preprocessor_fits_with_dask_and_matches_the_native_step():
    from dask_ml.preprocessing import StandardScaler

    df = churn_frame(2000).dropna()
    via_dask = FeaturePipeline.from_dask_ml(StandardScaler(), ["age", "income"]).fit(df)
    native = FeaturePipeline([StandardScale(["age", "income"])]).fit(df)
    a, b = via_dask.transform(df), native.transform(df)
    np.testing.assert_allclose(a[["age", "income"]], b[["age", "income"]], rtol=1e-4, atol=1e-5)
    again = FittedFeatures.from_json(via_dask.to_json())
    assert isinstance(again.steps[0], DaskML)
    np.testing.assert_allclose(again.transform(df)[["age", "income"]], a[["age", "income"]])
