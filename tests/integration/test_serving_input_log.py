"""Served-input logging switched on with ``serve_model``'s ``input_log`` option (no environment
variable) on the session Ray: the records of /predict land as Parquet where the drift trigger
reads them, and an in-place update that does not say keeps logging."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_input_log_option_lands_served_records_in_parquet_and_survives_an_update(ray_session, home, tmp_path):
    import pyarrow.dataset as ds
    from ray import serve
    from sklearn.linear_model import LogisticRegression

    from rayline.models.registry.sql import ModelRegistry
    from rayline.monitoring.drift_check import read_window, window_files
    from rayline.serving.rollout import serve_model, stop_serving

    assert os.environ.get("RAYLINE_INPUT_LOG") is None and os.environ.get("RAYLINE_SERVE_REPLICA_ENV") is None
    reg, logs = ModelRegistry(home), tmp_path / "monitor"
    x = pd.DataFrame(np.random.RandomState(1).randn(100, 2), columns=["a", "b"])
    for c in (1.0, 0.1):
        reg.register("logged", LogisticRegression(C=c).fit(x, (x.a > 0).astype(int)))
    port = _free_port()
    opts = {"home": reg, "port": port, "health_check_period_s": 0.5, "health_check_timeout_s": 5, "bake_s": 0.5}

    def post_and_read(url: str, version: int, n: int) -> Any:
        for i in range(n):
            r = httpx.post(f"{url}/predict", json={"records": [{"a": float(i), "b": -1.0}]}, timeout=30)
            assert r.status_code == 200 and r.json()["version"] == version, r.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            table = read_window(window_files(reg.home, "logged", log_dir=logs))
            if table.num_rows and table.column("_version").to_pylist().count(version) >= n:
                return table
            time.sleep(0.2)
        raise AssertionError(f"the records served by v{version} were not logged under {logs}")

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        d = serve_model("logged", 1, None, input_log={"flush_seconds": 0.2, "dir": str(logs)}, **opts)
        assert d.spec["input_log"] == {"flush_seconds": 0.2, "dir": str(logs)}
        table = post_and_read(d.url, 1, 5)
        assert sorted(table.column("a").to_pylist()) == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert set(table.column_names) >= {"a", "b", "_ts", "_version", "_prediction"}
        assert not (home / "artifacts" / "monitor").exists()  # under dir, not <artifact URL>/monitor
        d2 = serve_model("logged", 2, None, **opts)  # an update that does not say: keeps logging
        assert d2.spec["input_log"] == d.spec["input_log"] and d2.previous_version == 1
        post_and_read(d2.url, 2, 3)
        assert len(ds.dataset(str(logs / "logged"), format="parquet").files) >= 2
        d3 = serve_model("logged", 1, None, input_log=False, **opts)  # off, explicitly
        assert d3.spec["input_log"] is False
    finally:
        stop_serving("logged", home=reg)
        serve.shutdown()
        reg.close()
