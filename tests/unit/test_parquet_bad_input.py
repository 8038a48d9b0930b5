"""F16 (corrupt files: fail or quarantine) and F18 (empty input: fail or skip), without Ray."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayline.connectors import CorruptFileError, DataError, EmptyInputError
from rayline.connectors import parquet as pqc


def good_file(path: Path, values=(1, 2, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"v": list(values)}), path)
    return path


def truncated(path: Path) -> None:
    data = good_file(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])


CORRUPT = {
    "zero-bytes": (lambda p: p.write_bytes(b""), "Parquet file size is 0 bytes"),
    "random-bytes": (lambda p: p.write_bytes(bytes(range(256)) * 8), "magic bytes not found"),
    "csv-named-parquet": (lambda p: p.write_text("id,age\n1,30\n2,40\n"), "magic bytes not found"),
    "truncated-footer": (truncated, "magic bytes not found"),
}


def folder_with(tmp_path: Path, kind: str) -> Path:
    for i in (0, 2):
        good_file(tmp_path / f"part-{i}.parquet", values=(i, i + 1))
    make, _ = CORRUPT[kind]
    make(tmp_path / "part-1.parquet")
    return tmp_path


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_a_corrupt_file_fails_naming_the_file_and_pyarrows_reason(tmp_path, kind):
    folder = folder_with(tmp_path, kind)
    with pytest.raises(CorruptFileError) as err:
        pqc.open(str(folder))
    text = str(err.value)
    assert "part-1.parquet" in text and str(folder / "part-1.parquet") in text
    assert CORRUPT[kind][1] in text and "on_bad_file='quarantine'" in text
    assert isinstance(err.value, DataError) and err.value.retryable is False
    assert (folder / "part-1.parquet").exists()  # "fail" never moves anything


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_quarantine_moves_the_file_aside_with_its_reason_and_reads_the_rest(tmp_path, kind):
    folder = folder_with(tmp_path, kind)
    src = pqc.open(str(folder), on_bad_file="quarantine", context="run r1, task 'ingest'")
    assert [Path(f.path).name for f in src.files] == ["part-0.parquet", "part-2.parquet"]
    assert sorted(src.to_table().column("v").to_pylist()) == [0, 1, 2, 3]
    moved = folder / "_quarantine" / "part-1.parquet"
    assert not (folder / "part-1.parquet").exists() and moved.exists()
    reason = (folder / "_quarantine" / "part-1.parquet.reason.txt").read_text()
    assert CORRUPT[kind][1] in reason and "run r1" in reason and str(folder / "part-1.parquet") in reason
    assert len(src.quarantined) == 1 and src.quarantined[0].moved_to == str(moved)
    again = pqc.open(str(folder))  # the _quarantine folder is never read
    assert len(again.files) == 2 and not again.quarantined


def test_quarantine_in_nested_partitions_keeps_names_apart(tmp_path):
    for y in ("year=1", "year=2"):
        good_file(tmp_path / y / "ok.parquet")
        (tmp_path / y / "bad.parquet").write_bytes(b"nope")
    src = pqc.open(str(tmp_path), on_bad_file="quarantine")
    assert src.num_rows == 6 and len(src.quarantined) == 2
    assert sorted(p.name for p in (tmp_path / "_quarantine").iterdir()) == [
        "year=1__bad.parquet", "year=1__bad.parquet.reason.txt",
        "year=2__bad.parquet", "year=2__bad.parquet.reason.txt",
    ]  # fmt: skip


def test_no_files_fails_or_skips_by_policy(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyInputError, match="no Parquet files found at .*nothing to train on"):
        pqc.open(str(tmp_path / "empty"))
    with pytest.raises(EmptyInputError, match="no Parquet files found"):
        pqc.open(str(tmp_path / "does-not-exist"))
    src = pqc.open(str(tmp_path / "empty"), on_empty="skip")
    assert src.empty and src.num_rows == 0 and "no Parquet files" in src.note
    assert src.to_table().num_rows == 0 and list(src.iter_batches()) == []


def test_zero_row_files_fail_or_skip_by_policy(tmp_path):
    pq.write_table(pa.table({"v": pa.array([], pa.int64())}), tmp_path / "empty.parquet")
    with pytest.raises(EmptyInputError, match="have zero rows"):
        pqc.open(str(tmp_path))
    src = pqc.open(str(tmp_path), on_empty="skip")
    assert src.empty and src.schema.names == ["v"]
    assert all(s.empty for s in src.shards(2))


def test_everything_filtered_out_fails_or_skips_by_policy(tmp_path):
    good_file(tmp_path / "a.parquet")
    with pytest.raises(EmptyInputError, match=r"no rows to read from .* after filter .*\(3 rows before it\)"):
        pqc.open(str(tmp_path), filter=[("v", ">", 100)])
    src = pqc.open(str(tmp_path), filter=[("v", ">", 100)], on_empty="skip")
    assert src.empty and src.to_table().num_rows == 0


def test_every_file_quarantined_is_empty_input(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"")
    with pytest.raises(EmptyInputError, match="every Parquet file .* was quarantined"):
        pqc.open(str(tmp_path), on_bad_file="quarantine")


def test_incremental_exclusion_skips_files_already_seen(tmp_path):
    good_file(tmp_path / "a.parquet")
    first = pqc.open(str(tmp_path), exclude=set())
    seen = {(e["path"], e["size"], e["mtime"]) for e in first.seen}
    good_file(tmp_path / "b.parquet", values=(7,))
    second = pqc.open(str(tmp_path), exclude=seen)
    assert [Path(f.path).name for f in second.files] == ["b.parquet"] and second.num_rows == 1
    assert {Path(e["path"]).name for e in second.seen} == {"a.parquet", "b.parquet"}
    with pytest.raises(EmptyInputError, match="no new Parquet files"):
        pqc.open(str(tmp_path), exclude={(e["path"], e["size"], e["mtime"]) for e in second.seen})


def test_quarantine_that_cannot_move_the_file_fails_with_both_reasons(tmp_path, monkeypatch):
    from rayline.connectors import quarantine

    folder = folder_with(tmp_path, "zero-bytes")

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(quarantine.os, "replace", refuse)
    with pytest.raises(CorruptFileError, match="(?s)0 bytes.*could not be moved.*read-only file system"):
        pqc.open(str(folder), on_bad_file="quarantine")
