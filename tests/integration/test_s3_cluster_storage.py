"""What must be reachable from every node lives under the artifact URL, here a bucket on a real
S3-compatible server (moto, ``tests/s3_server.py``): Ray Train's checkpoints of ``train_torch``
and the served-input logs the drift check reads back from another process."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

import rayline
from rayline import flow
from rayline.monitoring.drift_check import check_drift, read_window, window_files
from rayline.monitoring.input_log import InputLogger
from rayline.store.states import RunStatus
from rayline.tasks.train import train_torch
from tests.integration.test_train_torch import make_mlp, toy_data


def _bucket_path(settings) -> str:
    return settings.artifacts_url.removeprefix("s3://").rstrip("/")


def test_served_inputs_are_logged_in_the_bucket_and_read_back_by_the_drift_check(s3_settings, s3_server):
    home = s3_settings.resolved_home
    rng = np.random.default_rng(0)
    lg = InputLogger(home, "churn", 2, flush_seconds=60, artifacts_url=s3_settings.artifacts_url)
    lg.log([{"a": float(x), "plan": "basic"} for x in rng.normal(3.0, 1.0, 300)])
    lg.close()
    keys = s3_server.filesystem().glob(f"{_bucket_path(s3_settings)}/monitor/churn/*/part-*.parquet")
    assert len(keys) == 1 and lg.written_files == 1
    assert not (home / "artifacts").exists() and not (home / "monitor").exists()  # nothing on this disk
    files = window_files(home, "churn")  # the settings' RAYLINE_ARTIFACTS_URL, from the environment
    assert [f.path for f in files] == keys
    assert read_window(files).num_rows == 300
    reference = pa.table({"a": rng.normal(0.0, 1.0, 300), "plan": ["basic"] * 300})
    report = check_drift("churn", reference, home=home)
    assert report is not None and report.drifted and report.window["files"] == 1
    # Another process, which knows only the environment, reads the same logs.
    code = ("from rayline.monitoring.drift_check import window_files, read_window; "
            f"print(read_window(window_files({str(home)!r}, 'churn')).num_rows)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "300"


@flow
def train_in_the_bucket():
    return train_torch(toy_data(400), model_fn=make_mlp, label="y", epochs=2, lr=0.02, batch_size=64)


@pytest.mark.usefixtures("ray_session")
def test_train_torch_checkpoints_land_in_the_bucket(s3_settings, s3_server):
    run = rayline.run(train_in_the_bucket, settings=s3_settings)
    assert run.status == RunStatus.SUCCEEDED, run.error
    model = run.result()
    where = f"{_bucket_path(s3_settings)}/train/{run.run_id}/train_torch"
    assert model.checkpoint_path == f"s3://{where}" and model.epochs_completed == 2
    found = s3_server.filesystem().find(where)
    assert any(p.endswith("meta.json") for p in found), found  # the epochs' checkpoints, in the bucket
    assert not (s3_settings.resolved_home / "artifacts" / "train").exists()
