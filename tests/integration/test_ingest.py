"""read_parquet in real runs on the shared local Ray: F16 corrupt files, F17 drift, F18 empty
input, incremental reads, bounded streaming past the object store, shards in Ray tasks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rayline
from rayline import flow, task
from rayline.store.states import RunStatus, TaskStatus
from rayline.tasks import read_parquet

pytestmark = pytest.mark.usefixtures("ray_session")


def write(path: Path, values) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"v": pa.array(list(values), pa.int64())}), path)
    return path


@task
def total(source, ledger: str = "") -> dict:
    """A downstream consumer: streams the source and sums it (records that it ran)."""
    if ledger:
        Path(ledger).write_text("ran")
    if source.empty:
        return {"rows": 0, "empty": True}
    rows = sum(b.num_rows for b in source.iter_batches())
    return {"rows": rows, "sum": int(source.to_table().column("v").to_numpy().sum()), "empty": False}


@flow
def ingest(path: str, on_bad_file: str = "fail", on_empty: str = "fail", ledger: str = ""):
    return total(read_parquet(path, on_bad_file=on_bad_file, on_empty=on_empty), ledger)


@flow
def ingest_new(path: str):
    return total(read_parquet(path, incremental=True, on_empty="skip"))


def corrupt_folder(folder: Path) -> Path:
    write(folder / "part-0.parquet", [1, 2, 3])
    write(folder / "part-9.parquet", [10])
    (folder / "zero.parquet").write_bytes(b"")
    (folder / "random.parquet").write_bytes(os.urandom(2048))
    (folder / "table.parquet").write_text("a,b\n1,2\n")
    data = write(folder / "cut.parquet", [5]).read_bytes()
    (folder / "cut.parquet").write_bytes(data[:-10])
    return folder


def test_quarantine_sets_corrupt_files_aside_and_the_run_succeeds_with_warnings(settings, tmp_path):
    """F16, on_bad_file='quarantine'."""
    folder = corrupt_folder(tmp_path / "data")
    run = rayline.run(ingest, settings=settings, path=str(folder), on_bad_file="quarantine")
    assert run.status == RunStatus.SUCCEEDED_WITH_WARNINGS
    assert run.result() == {"rows": 4, "sum": 16, "empty": False}
    assert run.counters["quarantined_files"] == 4
    assert any("4 unreadable Parquet file(s) moved to" in w and "cut.parquet" in w for w in run.warnings)
    moved = sorted(p.name for p in (folder / "_quarantine").iterdir())
    assert moved == sorted(f"{n}.parquet{s}" for n in ("cut", "random", "table", "zero") for s in ("", ".reason.txt"))
    assert sorted(p.name for p in folder.glob("*.parquet")) == ["part-0.parquet", "part-9.parquet"]


def test_a_corrupt_file_fails_the_run_before_any_downstream_task_runs(settings, tmp_path):
    """F16, on_bad_file='fail': a data error, one attempt, downstream never starts."""
    folder = corrupt_folder(tmp_path / "data")
    ledger = tmp_path / "downstream-ran"
    run = rayline.run(ingest, settings=settings, path=str(folder), ledger=str(ledger))
    assert run.status == RunStatus.FAILED
    read = run.task("read_parquet")
    assert read.status == TaskStatus.FAILED and read.attempts == 1
    assert "CorruptFileError" in read.error_type
    for name in ("zero.parquet", "random.parquet", "table.parquet", "cut.parquet"):
        assert name in read.error_message
    assert "magic bytes not found" in read.error_message and "0 bytes" in read.error_message
    assert run.task("total").status == TaskStatus.UPSTREAM_FAILED and not ledger.exists()
    assert not (folder / "_quarantine").exists()


def test_schema_drift_in_the_second_file_fails_the_run_with_the_diff(settings, tmp_path):
    """F17 through a run (every drift kind is covered in tests/unit/test_parquet_schema.py)."""
    write(tmp_path / "part-0000.parquet", [1, 2])
    pq.write_table(pa.table({"v": ["1", "2"]}), tmp_path / "part-0001.parquet")
    run = rayline.run(ingest, settings=settings, path=str(tmp_path))
    assert run.status == RunStatus.FAILED
    msg = run.task("read_parquet").error_message
    assert "part-0001.parquet: column 'v' is string, the first file (part-0000.parquet) has int64" in msg


def test_empty_input_fails_or_skips_by_policy_and_never_reaches_training_silently(settings, tmp_path):
    """F18: zero-row file; 'fail' fails the run, 'skip' ends it SKIPPED before training."""
    pq.write_table(pa.table({"v": pa.array([], pa.int64())}), tmp_path / "empty.parquet")
    failed = rayline.run(ingest, settings=settings, path=str(tmp_path))
    assert failed.status == RunStatus.FAILED
    assert "EmptyInputError" in failed.task("read_parquet").error_type
    assert "zero rows; nothing to train on" in failed.task("read_parquet").error_message
    skipped = rayline.run(ingest, settings=settings, path=str(tmp_path), on_empty="skip")
    assert skipped.status == RunStatus.SKIPPED
    assert "zero rows" in skipped.error and "on_empty='skip'" in skipped.error
    assert skipped.task("read_parquet").status == TaskStatus.SKIPPED
    assert skipped.task("total").status == TaskStatus.SKIPPED  # never ran


def test_incremental_reads_only_files_that_landed_since_the_last_successful_run(settings, tmp_path):
    write(tmp_path / "day-1.parquet", [1, 2])
    write(tmp_path / "day-2.parquet", [3])
    first = rayline.run(ingest_new, settings=settings, path=str(tmp_path))
    assert first.status == RunStatus.SUCCEEDED and first.result()["sum"] == 6
    write(tmp_path / "day-3.parquet", [100, 200])
    second = rayline.run(ingest_new, settings=settings, path=str(tmp_path))
    assert second.status == RunStatus.SUCCEEDED
    assert second.result() == {"rows": 2, "sum": 300, "empty": False}
    third = rayline.run(ingest_new, settings=settings, path=str(tmp_path))
    assert third.status == RunStatus.SKIPPED and "no new Parquet files" in third.error
    # Drift across runs: the only new file is checked against what earlier runs read.
    pq.write_table(pa.table({"v": ["7"]}), tmp_path / "day-4.parquet")
    fourth = rayline.run(ingest_new, settings=settings, path=str(tmp_path))
    assert fourth.status == RunStatus.FAILED
    assert "day-4.parquet: column 'v' is string, the contract says int64" in fourth.task("read_parquet").error_message


@task
def stream_and_measure(source, batch_size: int) -> dict:
    pool = pa.default_memory_pool()
    base = pool.bytes_allocated()
    peak = rows = biggest = 0
    for batch in source.iter_batches(batch_size):
        rows += batch.num_rows
        biggest = max(biggest, batch.num_rows)
        peak = max(peak, pool.bytes_allocated() - base)
    return {"rows": rows, "biggest": biggest, "peak": peak}


@flow
def stream_big(path: str, batch_size: int = 65_536):
    return stream_and_measure(read_parquet(path), batch_size)


def test_a_folder_larger_than_the_object_store_streams_with_bounded_memory(settings, tmp_path):
    """The session's object store is 150 MB; the folder decodes to 224 MB of Arrow. Only the
    small source travels through Ray; the worker holds a few batches at a time."""
    rows = 1_000_000
    for i in range(14):
        pq.write_table(pa.table({"a": np.zeros(rows), "b": np.full(rows, float(i))}),
                       tmp_path / f"p{i:02d}.parquet", row_group_size=125_000)  # fmt: skip
    run = rayline.run(stream_big, settings=settings, path=str(tmp_path))
    out = run.result()
    assert out["rows"] == 14 * rows and out["biggest"] <= 65_536
    assert out["peak"] < 64 * 2**20, f"peak Arrow memory {out['peak'] / 2**20:.0f} MB"


def shard_ids(shard) -> list[int]:
    return [i for b in shard.iter_batches(1000) for i in b.column("v").to_pylist()]


def test_shards_read_in_ray_tasks_cover_every_row_once(tmp_path):
    from rayline.connectors import parquet as pqc
    from rayline.connectors.shards import run_on_shards, stream_batches

    for i in range(5):
        pq.write_table(pa.table({"v": np.arange(i * 700, (i + 1) * 700)}), tmp_path / f"p{i}.parquet",
                       row_group_size=128)  # fmt: skip
    src = pqc.open(str(tmp_path))
    parts = run_on_shards(src, 3, shard_ids)
    assert [len(p) for p in parts] == [1166, 1167, 1167]
    assert sorted(i for p in parts for i in p) == list(range(3500))
    streamed = [i for b in stream_batches(src, 2, batch_size=500) for i in b.column("v").to_pylist()]
    assert sorted(streamed) == list(range(3500))


def test_to_ray_dataset_applies_projection_and_filter_for_sources_and_shards(tmp_path):
    from rayline.connectors import parquet as pqc

    for year in (2024, 2025):
        pq.write_table(pa.table({"v": np.arange(100), "w": np.ones(100)}), _mk(tmp_path / f"year={year}") / "p.parquet")
    src = pqc.open(str(tmp_path), columns=["v", "year"], filter=[("v", "<", 10)])
    rds = src.to_ray_dataset()
    rows = rds.take_all()
    assert len(rows) == 20 and set(rows[0]) == {"v", "year"}
    assert sorted({r["year"] for r in rows}) == [2024, 2025] and max(r["v"] for r in rows) == 9
    shard = src.shards(2)[1]
    shard_rows = shard.to_ray_dataset().take_all()
    assert len(shard_rows) == shard.num_rows == 10 and {r["year"] for r in shard_rows} == {2025}


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p
