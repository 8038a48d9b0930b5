"""``rayline store verify [--repair]`` and ``rayline store gc [--dry-run]``, end to end through
the command line (click's ``CliRunner``) on runs made with ``--local`` (no Ray): exit codes, JSON,
what is reported, repaired, removed and kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rayline.cli.main import cli
from rayline.store.artifacts import ArtifactStore
from rayline.store.temp_files import machine_id
from tests.coordination import ledger

DIAMOND = f"{Path(__file__).parent / 'flows' / 'damaged.py'}:diamond"


@pytest.fixture(autouse=True)
def _isolated(home, monkeypatch):
    for name in ("RAY_ADDRESS", "RAYLINE_RAY_ADDRESS", "RAYLINE_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return home


def rayline(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def as_json(*args: object) -> tuple[int, dict]:
    result = rayline(*args, "--json")
    return result.exit_code, json.loads(result.stdout)


def a_run(tmp_path: Path) -> tuple[dict, Path]:
    folder = tmp_path / "ledgers"
    folder.mkdir()
    code, run = as_json("run", DIAMOND, "-p", f"folder={folder}", "--local")
    assert code == 0, run
    return as_json("runs", "show", run["run_id"])[1], folder  # with every task's digest


def digest_of(run: dict, node: str) -> str:
    return next(t["digest"] for t in run["tasks"] if t["node_id"] == node)


def flip_a_byte(home: Path, digest: str) -> None:
    path = home / "artifacts" / "objects" / digest[:2] / digest
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def test_verify_reports_a_sound_store_with_exit_0(tmp_path):
    a_run(tmp_path)
    code, report = as_json("store", "verify")
    assert code == 0 and report["objects"] >= 4
    assert report["damaged"] == report["incomplete"] == report["orphaned"] == []


def test_verify_finds_a_damaged_output_and_repair_lets_resume_recompute_it(home, tmp_path):
    run, folder = a_run(tmp_path)
    digest = digest_of(run, "double")
    flip_a_byte(home, digest)

    text = rayline("store", "verify")
    assert text.exit_code == 1 and f"damaged     {digest}" in text.stdout, text.output
    assert f"run {run['run_id']} task 'double'" in text.stdout
    code, report = as_json("store", "verify")
    assert code == 1 and [p["digest"] for p in report["damaged"]] == [digest]
    assert report["used_by"] == [{"run_id": run["run_id"], "node_id": "double", "digest": digest}]

    code, repaired = as_json("store", "verify", "--repair")
    assert code == 0 and repaired["marked_lost"][0]["changed"] is True
    code, shown = as_json("runs", "show", run["run_id"])
    assert shown["status"] == "INTERRUPTED"
    states = {t["node_id"]: t["status"] for t in shown["tasks"]}
    assert states == {"load": "SUCCEEDED", "double": "PENDING", "total": "PENDING", "count": "SUCCEEDED"}
    assert [e["kind"] for e in shown["events"]] == ["output_lost"]
    assert as_json("store", "verify")[0] == 0  # the damaged object was discarded

    code, resumed = as_json("resume", run["run_id"], "--local")
    assert code == 0 and resumed["status"] == "SUCCEEDED", resumed
    assert [ledger(folder, n) for n in ("load", "double", "total", "count")] == [1, 2, 2, 1]
    resumed = as_json("runs", "show", run["run_id"])[1]
    assert digest_of(resumed, "double") == digest and ArtifactStore.open(home).verify(digest)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_gc_removes_dead_writers_temp_files_and_unreferenced_objects_only(home, tmp_path):
    run, _ = a_run(tmp_path)
    store = ArtifactStore.open(home)
    unreferenced = store.put("nobody refers to me" * 1000)
    estimator = store.put("an estimator, named only inside a model")
    store.put_named("models", "churn", {"artifact": estimator.digest})
    incomplete = store.root / "objects" / ("ab" * 32)[:2] / ("ab" * 32)
    incomplete.parent.mkdir(exist_ok=True)
    incomplete.write_bytes(b"bytes whose manifest never landed")
    temp = store.root / "tmp" / f".rl-{machine_id()}-{_dead_pid()}-{int(time.time() * 1000)}-0000000f.tmp"
    temp.write_bytes(b"x" * 5000)
    old = time.time() - 7200
    for digest in (unreferenced.digest, "ab" * 32):
        os.utime(store.root / "objects" / digest[:2] / digest, (old, old))

    code, young = as_json("store", "gc", "--dry-run")  # default --min-age 3600: only the old ones
    assert code == 0 and young["dry_run"] and {o["digest"] for o in young["objects"]} == {
        unreferenced.digest, "ab" * 32}  # fmt: skip
    assert temp.exists() and incomplete.exists() and store.verify(unreferenced.digest)
    code, done = as_json("store", "gc")
    assert code == 0 and done["bytes_freed"] == young["bytes_freed"] >= unreferenced.size + 5000
    assert [t["path"] for t in done["temp_files"]] == [str(temp)] and not temp.exists()
    assert not store.exists(unreferenced.digest) and not incomplete.exists()
    assert store.verify(estimator.digest)  # referenced from inside the named model
    for t in run["tasks"]:
        assert store.verify(t["digest"]), t["node_id"]
    text = rayline("store", "gc", "--min-age", "0")
    assert text.exit_code == 0 and "removed 0 temp files and 0 objects: 0.0 MB freed" in text.stdout
