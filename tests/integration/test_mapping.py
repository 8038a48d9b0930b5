"""Fan-out over run-time values on the shared local Ray: a map over an upstream output whose
items fail and resume one by one, an empty map, maps of maps, the README's example via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import rayline
from rayline.cli.main import cli
from rayline.store.states import RunStatus, TaskStatus
from tests.coordination import ledger
from tests.integration.flows import mapped

OVER_OUTPUT = f"{mapped.__file__}:over_output"  # a source, so that the run can be resumed

pytestmark = pytest.mark.usefixtures("ray_session")
ROOT = Path(__file__).resolve().parents[2]


def test_a_map_over_an_upstream_output_resumes_only_its_failed_items(settings, tmp_path):
    (tmp_path / "fail").write_text("7 42 93")
    run = rayline.run(OVER_OUTPUT, folder=str(tmp_path), settings=settings)
    assert run.status == RunStatus.FAILED
    by_id = {t.node_id: t for t in run.tasks}
    failed = sorted(n for n, t in by_id.items() if t.status == TaskStatus.FAILED)
    assert failed == ["square[42]", "square[7]", "square[93]"]
    assert sum(1 for n, t in by_id.items() if n.startswith("square[") and t.status.ok) == 97
    assert by_id["square"].status == TaskStatus.UPSTREAM_FAILED
    assert by_id["total"].status == TaskStatus.UPSTREAM_FAILED
    assert "item 7 is listed" in (by_id["square[7]"].error_message or "")
    assert ledger(tmp_path, "square") == 100

    (tmp_path / "fail").unlink()
    resumed = rayline.resume(run.run_id, settings=settings)
    assert resumed.status == RunStatus.SUCCEEDED
    assert resumed.result() == sum(x * x for x in range(100))
    assert ledger(tmp_path, "square") == 103  # exactly the three failed items ran again
    assert [ledger(tmp_path, f"square-{x}") for x in (7, 42, 93, 0, 99)] == [2, 2, 2, 1, 1]
    assert ledger(tmp_path, "listing") == 1


def test_a_map_over_an_empty_list_gives_an_empty_list(settings, tmp_path):
    run = rayline.run(OVER_OUTPUT, folder=str(tmp_path), n=0, settings=settings)
    assert run.status == RunStatus.SUCCEEDED and run.result() == 0
    assert sorted(t.node_id for t in run.tasks) == ["listing", "square", "total"]
    assert ledger(tmp_path, "square") == 0


def test_maps_of_maps_keep_their_order(settings):
    run = rayline.run(mapped.maps_of_maps, n=5, settings=settings)
    assert run.status == RunStatus.SUCCEEDED
    sums = [sum(range(i)) for i in range(5)]
    assert run.result() == sum(sums)
    ids = {t.node_id for t in run.tasks}
    assert {"total[0]", "total[4]", "rows-1[3]", "count[3]"} <= ids


def test_the_readme_flow_runs_from_the_cli_with_a_parameter(home, tmp_path, ray_address, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## A flow in ten lines", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    (tmp_path / "hello.py").write_text(code)
    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "hello.py"), "-p", "n=10", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "SUCCEEDED"
    shown = CliRunner().invoke(cli, ["runs", "show", data["run_id"], "--json"])
    tasks = {t["node_id"]: t for t in json.loads(shown.stdout)["tasks"]}
    assert {f"square[{i}]" for i in range(10)} <= set(tasks)
