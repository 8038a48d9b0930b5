"""The served-input logger: batched in memory, Parquet files by size or time, never failing; and
the `input_log` serve option through serve_model, `rayline serve --log-inputs` and flow steps."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from rayline.monitoring.input_log import InputLogger, input_log_options, monitor_location


def _files(root):
    return sorted(p for p in Path(root).rglob("part-*.parquet"))


def monitor_dir(home, model, log_dir=None):
    """The local folder of ``model``'s logged inputs (the artifact URL is a folder here)."""
    return Path(monitor_location(home, model, log_dir)[1])


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


# ------------------------------------------------------------ the serve option and its plumbing


def test_serve_option_is_checked_and_made_json_able(tmp_path, monkeypatch):
    from rayline.errors import UsageError
    from rayline.monitoring.input_log import input_log_spec

    monkeypatch.chdir(tmp_path)
    assert [input_log_spec(v) for v in (None, True, False)] == [None, True, False]
    got = input_log_spec({"flush_seconds": 0.5, "flush_records": 10, "max_buffered": 99, "dir": "logs"})
    assert got == {"flush_seconds": 0.5, "flush_records": 10, "max_buffered": 99, "dir": str(tmp_path / "logs")}
    for bad, why in (({"flush_every": 1}, "unknown option 'flush_every'"), ({"flush_seconds": 0}, "positive"),
                     ({"flush_records": True}, "positive"), ({"dir": ""}, "folder path"), ("yes", "True, False")):  # fmt: skip
        with pytest.raises(UsageError, match=why):
            input_log_spec(bad)
    # what the replica makes of it: the spec's value wins over the environment
    monkeypatch.setenv("RAYLINE_INPUT_LOG", "1")
    assert input_log_options({"input_log": got}) == got and input_log_options({"input_log": False}) is None


def test_logger_writes_under_the_given_dir_where_the_drift_trigger_reads(tmp_path):
    from rayline.monitoring.drift_check import window_files

    logs = tmp_path / "logs"
    lg = InputLogger(tmp_path / "home", "churn", 1, flush_seconds=60, dir=logs)
    lg.log([{"a": 1.0}])
    lg.close()
    assert Path(lg.root) == monitor_dir(tmp_path / "home", "churn", logs) == logs / "churn"
    assert [Path(f.path) for f in window_files(tmp_path / "home", "churn", log_dir=logs)] == _files(logs / "churn")
    assert window_files(tmp_path / "home", "churn") == [] and len(_files(logs)) == 1


def test_serve_cli_flags_reach_serve_model(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import rayline.serving.rollout as rollout
    from rayline.cli.serve import serve_cmd

    calls = []

    def fake_serve_model(name, version, alias, **kw):
        calls.append(kw["input_log"])
        return rollout.Deployment(name, name, 1, alias, "http://127.0.0.1:1", "RUNNING")

    monkeypatch.setattr(rollout, "serve_model", fake_serve_model)
    base = ["churn@production", "--detach", "--address", "127.0.0.1:1"]
    cli = CliRunner()
    for extra in ([], ["--log-inputs"], ["--no-log-inputs"], ["--log-dir", str(tmp_path / "logs")],
                  ["--log-inputs", "--log-flush-s", "2"]):  # fmt: skip
        out = cli.invoke(serve_cmd, base + extra)
        assert out.exit_code == 0, out.output
    assert calls == [None, True, False, {"dir": str(tmp_path / "logs")}, {"flush_seconds": 2.0}]
    bad = cli.invoke(serve_cmd, [*base, "--no-log-inputs", "--log-dir", "x"])
    assert bad.exit_code == 2 and "contradicts" in bad.output
    helped = cli.invoke(serve_cmd, ["start", "--help"])
    assert "--log-inputs" in helped.output and "--log-dir" in helped.output


def test_a_yaml_flow_can_end_with_a_rollout_that_logs_inputs(tmp_path):
    from rayline.engine.compiler import compile_plan
    from rayline.engine.worker import _bind
    from rayline.sdk.graph import Ref
    from rayline.sdk.yaml_flow import load_yaml_flow

    path = tmp_path / "retrain.yaml"
    path.write_text("""name: retrain
steps:
  data: {uses: "rayline.tasks.ingest:read_parquet", with: {path: "data/"}}
  model: {uses: "rayline.tasks.train:train_sklearn",
          with: {data: "${steps.data}", estimator: "sklearn.linear_model:LogisticRegression", label: y}}
  gate: {uses: "rayline.tasks.gate:gate_and_promote", with: {challenger: "${steps.model}", data: "${steps.data}",
         model_name: churn}}
  serve: {uses: "rayline.tasks.gate:rollout_if_promoted",
          with: {decision: "${steps.gate}", app_name: churn, input_log: {flush_seconds: 2}}}
outputs: "${steps.serve}"
""")
    graph = load_yaml_flow(path)
    node = graph.node("serve")
    assert node.spec.name == "rollout_if_promoted" and node.spec.resources.cpus == 0
    assert node.kwargs["decision"] == Ref("gate") and node.kwargs["app_name"] == "churn"
    assert node.kwargs["serve_kwargs"] == {"input_log": {"flush_seconds": 2}}  # on to serve_model
    plan = compile_plan(graph, {}, cluster=None)
    (planned,) = [n for n in plan.nodes if n.id == "serve"]
    _, kwargs = _bind(node.spec.fn, planned.template, [object()] * len(planned.inputs))
    assert kwargs["input_log"] == {"flush_seconds": 2} and "serve_kwargs" not in kwargs
