"""The served-input logger: batched in memory, Parquet files by size or time, never failing."""

from __future__ import annotations

import time

import pyarrow.dataset as ds

from rayline.serving.input_log import InputLogger, input_log_options, monitor_dir


def _files(root):
    return sorted(p for p in root.rglob("part-*.parquet"))


def test_flushes_every_n_records_and_on_close(tmp_path):
    lg = InputLogger(tmp_path, "churn", 3, flush_records=10, flush_seconds=60)
    try:
        lg.log([{"a": float(i), "plan": "x"} for i in range(10)], list(range(10)))
        deadline = time.monotonic() + 5
        while not _files(monitor_dir(tmp_path, "churn")) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(_files(monitor_dir(tmp_path, "churn"))) == 1
        lg.log([{"a": 99.0, "plan": "y"}])
    finally:
        lg.close()
    files = _files(monitor_dir(tmp_path, "churn"))
    assert len(files) == 2 and files[0].parent.parent == monitor_dir(tmp_path, "churn")
    t = ds.dataset([str(f) for f in files], format="parquet").to_table()
    assert t.num_rows == 11 and set(t.column("_version").to_pylist()) == {3}
    assert sorted(t.column("a").to_pylist())[-1] == 99.0
    assert lg.stats()["logged"] == 11 and lg.dropped == 0


def test_flushes_after_t_seconds_and_drops_past_the_bound(tmp_path):
    lg = InputLogger(tmp_path, "m", flush_records=10_000, flush_seconds=0.1, max_buffered=5)
    try:
        lg.log([{"a": 1}] * 8)
        assert lg.dropped == 3
        deadline = time.monotonic() + 5
        while not _files(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _files(tmp_path)
    finally:
        lg.close()


def test_options_from_the_spec_or_the_environment(monkeypatch):
    monkeypatch.delenv("RAYLINE_INPUT_LOG", raising=False)
    assert input_log_options({}) is None
    assert input_log_options({"input_log": True}) == {}
    assert input_log_options({"input_log": {"flush_seconds": 1}}) == {"flush_seconds": 1}
    monkeypatch.setenv("RAYLINE_INPUT_LOG", '{"flush_records": 5}')
    assert input_log_options({}) == {"flush_records": 5}
    assert input_log_options({"input_log": False}) is None
