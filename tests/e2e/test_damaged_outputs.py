"""Hole 1 of issue 12: a damaged output is repaired, not only refused. A byte of a committed
artifact is flipped after a real run on the shared local Ray; the next resume (or a read of the
output, which marks it lost) recomputes its producer and only what depends on it, the store
rewrites the damaged bytes, and every output of the run reads back. Tasks count their executions
in ``ran-<name>`` ledgers (tests/e2e/flows/damaged.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import rayline
from rayline.cli.main import cli
from rayline.errors import ArtifactIntegrityError
from rayline.store.artifacts import ArtifactStore
from rayline.store.states import RunStatus, TaskStatus
from tests.coordination import ledger

pytestmark = pytest.mark.usefixtures("ray_session")

DIAMOND = f"{Path(__file__).parent / 'flows' / 'damaged.py'}:diamond"
EXPECTED = {"load": list(range(1000)), "double": [2 * x for x in range(1000)], "total": 999000,
            "count": 1000}  # fmt: skip


def flip_a_byte(settings, digest: str) -> Path:
    path = settings.resolved_home / "artifacts" / "objects" / digest[:2] / digest
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    return path


def ran(folder: Path) -> dict[str, int]:
    return {name: ledger(folder, name) for name in EXPECTED}


def read_back_everything(run) -> None:
    for node, value in EXPECTED.items():
        assert run.output(node) == value, node
    assert run.result() == {"total": 999000, "count": 1000}


def first_run(settings, tmp_path: Path):
    folder = tmp_path / "ledgers"
    folder.mkdir()
    run = rayline.run(DIAMOND, settings=settings, folder=str(folder))
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert ran(folder) == dict.fromkeys(EXPECTED, 1)
    return run, folder


def test_resume_recomputes_a_damaged_output_and_only_what_depends_on_it(settings, tmp_path):
    run, folder = first_run(settings, tmp_path)
    digest = run.task("double").digest
    damaged = flip_a_byte(settings, digest)

    resumed = rayline.resume(run.run_id, settings=settings)
    assert resumed.status == RunStatus.SUCCEEDED, resumed.error
    assert ran(folder) == {"load": 1, "double": 2, "total": 2, "count": 1}
    assert resumed.task("double").digest == digest  # same bytes, now rewritten in place
    assert ArtifactStore.open(settings.resolved_home).verify(digest), damaged
    read_back_everything(rayline.load_run(run.run_id, settings=settings))

    shown = CliRunner().invoke(cli, ["runs", "show", run.run_id, "--json"])
    assert shown.exit_code == 0, shown.output
    events = json.loads(shown.stdout)["events"]
    assert [(e["kind"], e["node_id"], e["digest"]) for e in events] == [("output_lost", "double", digest)]


def test_reading_a_damaged_output_marks_it_lost_and_resume_repairs_it(settings, tmp_path):
    run, folder = first_run(settings, tmp_path)
    digest = run.task("double").digest
    flip_a_byte(settings, digest)

    loaded = rayline.load_run(run.run_id, settings=settings)
    with pytest.raises(ArtifactIntegrityError, match=f"rayline resume {run.run_id}"):
        loaded.output("double")
    marked = rayline.load_run(run.run_id, settings=settings)
    assert marked.status == RunStatus.INTERRUPTED and "output of task 'double' lost" in marked.error
    states = {t.node_id: t.status for t in marked.tasks}
    assert states == {"load": TaskStatus.SUCCEEDED, "double": TaskStatus.PENDING,
                      "total": TaskStatus.PENDING, "count": TaskStatus.SUCCEEDED}  # fmt: skip
    shown = CliRunner().invoke(cli, ["runs", "show", run.run_id])
    assert shown.exit_code == 0 and "output_lost: output of task 'double' lost" in shown.stdout, shown.output

    resumed = rayline.resume(run.run_id, settings=settings)
    assert resumed.status == RunStatus.SUCCEEDED, resumed.error
    assert ran(folder) == {"load": 1, "double": 2, "total": 2, "count": 1}
    read_back_everything(rayline.load_run(run.run_id, settings=settings))
