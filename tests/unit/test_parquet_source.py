"""ParquetSource without Ray: projection, filter push-down, hive partitions, shards, bounded
streaming, fsspec URLs, pickling, lazy imports."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from rayline.connectors import SchemaContractError
from rayline.connectors import parquet as pqc


def write_folder(folder: Path, files: int = 4, rows: int = 1000, row_group: int = 300) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        ids = np.arange(rows) + i * rows
        table = pa.table({
            "id": ids,
            "age": (ids % 90).astype(np.int32),
            "x": ids.astype(np.float32) / 7,
            "name": [f"n{j}" for j in ids],
        })  # fmt: skip
        pq.write_table(table, folder / f"part-{i:04d}.parquet", row_group_size=row_group)
    return folder


def test_projection_returns_only_the_asked_columns_and_the_filter_reduces_rows(tmp_path):
    folder = write_folder(tmp_path / "d")
    src = pqc.open(str(folder), columns=["id", "age"], filter=[("age", ">", 80)])
    table = src.to_table()
    assert table.column_names == ["id", "age"]
    assert src.num_rows == table.num_rows == sum(1 for i in range(4000) if i % 90 > 80)
    assert min(table.column("age").to_pylist()) == 81
    as_expr = pqc.open(str(folder), columns=["id"], filter=pc.field("age") > 80)
    assert as_expr.num_rows == src.num_rows and as_expr.to_table().column_names == ["id"]


def test_an_unknown_column_is_rejected_with_the_columns_that_exist(tmp_path):
    folder = write_folder(tmp_path / "d", files=1)
    with pytest.raises(SchemaContractError, match="(?s)column 'agee' was asked for.*the columns are: id, age, x, name"):
        pqc.open(str(folder), columns=["agee"])


def test_hive_partitions_become_columns_and_a_partition_filter_prunes_files(tmp_path):
    for year in (2024, 2025):
        for region in ("eu", "us"):
            write_folder(tmp_path / f"year={year}" / f"region={region}", files=1, rows=100)
    src = pqc.open(str(tmp_path))
    assert src.partitioning == ("year", "region")
    assert src.schema.field("year").type == pa.int64() and src.schema.field("region").type == pa.string()
    table = src.to_table()
    assert table.num_rows == 400 and sorted(set(table.column("year").to_pylist())) == [2024, 2025]
    only = pqc.open(str(tmp_path), filter=[("year", "=", 2025), ("region", "=", "eu")], columns=["id", "region"])
    assert only.num_rows == 100 and set(only.to_table().column("region").to_pylist()) == {"eu"}


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 64])
def test_shards_cover_every_row_exactly_once_and_are_balanced(tmp_path, n):
    folder = write_folder(tmp_path / "d", files=3, rows=1000, row_group=256)
    src = pqc.open(str(folder), columns=["id"])
    shards = src.shards(n)
    sizes = [s.num_rows for s in shards]
    assert len(shards) == n and max(sizes) - min(sizes) <= 1 and sum(sizes) == 3000
    ids = [i for s in shards for b in s.iter_batches(100) for i in b.column("id").to_pylist()]
    assert sorted(ids) == list(range(3000))
    assert [s.to_table().num_rows for s in shards] == sizes
    assert all(len(pickle.dumps(s)) < 20_000 for s in shards)


def test_shards_of_a_filtered_source_keep_the_filter_and_still_cover_every_row(tmp_path):
    folder = write_folder(tmp_path / "d", files=3, rows=1000, row_group=256)
    src = pqc.open(str(folder), columns=["id"], filter=[("age", "<", 10)])
    shards = src.shards(4)
    ids = sorted(i for s in shards for i in s.to_table().column("id").to_pylist())
    assert ids == sorted(src.to_table().column("id").to_pylist()) and len(ids) == src.num_rows
    assert sum(s.num_rows for s in shards) == src.num_rows
    twice = shards[1].shards(2)
    assert sum(s.num_rows for s in twice) == shards[1].num_rows


def test_iter_batches_keeps_memory_bounded_on_data_larger_than_the_bound(tmp_path):
    """Arrow size of the folder: 256 MB; the reader holds a few row groups (~20-30 MB here)."""
    folder = tmp_path / "big"
    folder.mkdir()
    rows = 1_000_000
    for i in range(16):  # zeros compress to almost nothing on disk, but decode to 16 MB per file
        t = pa.table({"a": np.zeros(rows), "b": np.full(rows, float(i))})
        pq.write_table(t, folder / f"p{i}.parquet", row_group_size=100_000)
    src = pqc.open(str(folder))
    arrow_bytes = src.num_rows * 16
    pool = pa.default_memory_pool()
    base, peak, n, biggest = pool.bytes_allocated(), 0, 0, 0
    for batch in src.iter_batches(batch_size=50_000):
        n += batch.num_rows
        biggest = max(biggest, batch.num_rows)
        peak = max(peak, pool.bytes_allocated() - base)
        del batch
    assert n == 16 * rows and biggest <= 50_000
    assert peak < arrow_bytes / 4, f"peak {peak / 1e6:.0f} MB for {arrow_bytes / 1e6:.0f} MB of data"


def test_memory_filesystem_urls_are_read_through_fsspec(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    for i in range(2):
        with fs.open(f"/rayline-test/ds/part-{i}.parquet", "wb") as f:
            pq.write_table(pa.table({"v": [i, i + 10]}), f)
    fs.pipe("/rayline-test/ds/_SUCCESS", b"")
    try:
        src = pqc.open("memory://rayline-test/ds", filter=[("v", ">", 0)])
        assert src.protocol == "memory" and len(src.files) == 2
        assert sorted(src.to_table().column("v").to_pylist()) == [1, 10, 11]
        assert src.paths[0].startswith("memory://")
        assert sum(b.num_rows for s in src.shards(2) for b in s.iter_batches()) == 3
    finally:
        fs.rm("/rayline-test", recursive=True)


def test_file_urls_and_single_files_are_accepted(tmp_path):
    folder = write_folder(tmp_path / "d", files=2, rows=50)
    assert pqc.open(f"file://{folder}").num_rows == 100
    one = pqc.open(str(folder / "part-0001.parquet"))
    assert one.num_rows == 50 and one.root == str(folder)


def test_a_source_pickles_small_and_reads_the_same_after(tmp_path):
    folder = write_folder(tmp_path / "d")
    src = pqc.open(str(folder), columns=["id"], filter=pc.field("age") > 85)
    copy = pickle.loads(pickle.dumps(src))
    assert copy.to_table().equals(src.to_table()) and copy.num_rows == src.num_rows
    assert len(pickle.dumps(src)) < 10_000
    assert "4 files" in repr(src)


def test_importing_the_task_library_imports_neither_ray_nor_pyarrow():
    code = (
        "import sys, rayline.tasks, rayline.connectors; "
        "print(sorted(m for m in ('ray', 'pyarrow', 'dask') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = "import sys; from rayline.tasks import read_parquet; print(read_parquet.name, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["read_parquet", "False"]


def test_batches_come_as_arrow_pandas_or_numpy(tmp_path):
    src = pqc.open(str(write_folder(tmp_path / "d", files=1, rows=10)), columns=["id", "x"])
    arrow = next(src.iter_batches(4))
    frame = next(src.iter_batches(4, batch_format="pandas"))
    arrays = next(src.iter_batches(4, batch_format="numpy"))
    assert isinstance(arrow, pa.RecordBatch) and arrow.num_rows == 4
    assert list(frame.columns) == ["id", "x"] and len(frame) == 4
    assert arrays["id"].tolist() == [0, 1, 2, 3] and arrays["x"].dtype == np.float32


def test_a_shard_cut_inside_a_row_group_is_not_offered_as_a_pyarrow_dataset(tmp_path):
    from rayline.errors import DefinitionError

    src = pqc.open(str(write_folder(tmp_path / "d", files=1, rows=100, row_group=100)))
    assert src.to_arrow_dataset().count_rows() == 100
    with pytest.raises(DefinitionError, match="inside a row group.*iter_batches"):
        src.shards(3)[1].to_arrow_dataset()
