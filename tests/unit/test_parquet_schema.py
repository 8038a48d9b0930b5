"""F17: the schema contract. Drift is put in the SECOND file, where first-file inference misses it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayline.connectors import SchemaContractError
from rayline.connectors import parquet as pqc
from rayline.connectors.schema import SchemaContract, parse_type
from rayline.errors import DefinitionError

BASE = {
    "id": pa.array([1, 2, 3], pa.int64()),
    "age": pa.array([30, 40, 50], pa.int64()),
    "ts": pa.array([0, 1000, 2000], pa.timestamp("ms")),
}


def write(path: Path, columns: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def drifted(tmp_path: Path, **changes) -> Path:
    """part-0000 has the base schema; part-0001 applies ``changes`` (None drops a column)."""
    write(tmp_path / "part-0000.parquet", BASE)
    second = {k: v for k, v in {**BASE, **changes}.items() if v is not None}
    write(tmp_path / "part-0001.parquet", second)
    return tmp_path


DECLARED = {"id": "int64", "age": "int64", "ts": "timestamp[ms]"}


@pytest.mark.parametrize("schema", [None, DECLARED], ids=["first-file-reference", "declared"])
@pytest.mark.parametrize(
    "change, expected",
    [
        ({"age": None}, "part-0001.parquet: column 'age' (int64 in {ref}) is missing"),
        ({"age": pa.array(["30", "40", "50"])}, "part-0001.parquet: column 'age' is string, {says} int64"),
        ({"age": pa.array([30, 40, 50], pa.int32())}, "part-0001.parquet: column 'age' is int32, {says} int64"),
        ({"ts": pa.array([0, 1, 2], pa.timestamp("us"))},
         "part-0001.parquet: column 'ts' is timestamp[us], {says} timestamp[ms] (a timestamp unit"),
    ],
    ids=["dropped", "int-to-string", "int32-vs-int64", "timestamp-unit"],
)  # fmt: skip
def test_incompatible_drift_in_the_second_file_is_rejected_with_file_column_and_types(
    tmp_path, schema, change, expected
):
    folder = drifted(tmp_path, **change)
    with pytest.raises(SchemaContractError) as err:
        pqc.open(str(folder), schema=schema)
    ref = "the contract" if schema else "the first file (part-0000.parquet)"
    says = "the contract says" if schema else "the first file (part-0000.parquet) has"
    assert expected.format(ref=ref, says=says) in str(err.value)
    assert "fix:" in str(err.value)


@pytest.mark.parametrize("schema", [None, DECLARED], ids=["first-file-reference", "declared"])
def test_an_added_column_is_allowed_by_additive_and_read_as_nulls_where_absent(tmp_path, schema):
    folder = drifted(tmp_path, score=pa.array([0.1, 0.2, 0.3]))
    src = pqc.open(str(folder), schema=schema, schema_evolution="additive")
    assert src.schema.names == ["id", "age", "ts", "score"]
    scores = src.to_table().column("score").to_pylist()
    assert scores == [None, None, None, 0.1, 0.2, 0.3]


@pytest.mark.parametrize("schema", [None, DECLARED], ids=["first-file-reference", "declared"])
def test_an_added_column_is_rejected_by_strict(tmp_path, schema):
    folder = drifted(tmp_path, score=pa.array([0.1, 0.2, 0.3]))
    with pytest.raises(SchemaContractError, match=r"part-0001.parquet: column 'score' \(double\) is not in"):
        pqc.open(str(folder), schema=schema, schema_evolution="strict")


def test_widening_policy_reads_int32_as_the_declared_int64_and_nothing_else(tmp_path):
    folder = drifted(tmp_path, age=pa.array([30, 40, 50], pa.int32()))
    src = pqc.open(str(folder), schema=DECLARED, schema_evolution="widening")
    table = src.to_table()
    assert table.schema.field("age").type == pa.int64()
    assert table.column("age").to_pylist() == [30, 40, 50, 30, 40, 50]
    narrowing = drifted(tmp_path / "n", age=pa.array([30, 40, 50], pa.int64()))
    with pytest.raises(SchemaContractError, match="narrowing would lose data"):
        pqc.open(str(narrowing), schema={"age": "int32"}, schema_evolution="widening")


def test_every_problem_in_every_file_is_reported_together(tmp_path):
    write(tmp_path / "a.parquet", BASE)
    write(tmp_path / "b.parquet", {**BASE, "age": pa.array(["x", "y", "z"])})
    write(tmp_path / "c.parquet", {"id": BASE["id"], "ts": BASE["ts"]})
    with pytest.raises(SchemaContractError) as err:
        pqc.open(str(tmp_path), schema=DECLARED)
    assert len(err.value.problems) == 2
    assert "b.parquet: column 'age' is string" in str(err.value)
    assert "c.parquet: column 'age' (int64 in the contract) is missing" in str(err.value)


def test_an_added_column_with_different_types_in_two_files_is_rejected(tmp_path):
    write(tmp_path / "a.parquet", BASE)
    write(tmp_path / "b.parquet", {**BASE, "x": pa.array([1, 2, 3])})
    write(tmp_path / "c.parquet", {**BASE, "x": pa.array(["1", "2", "3"])})
    with pytest.raises(SchemaContractError, match="c.parquet: added column 'x' is string, but b.parquet"):
        pqc.open(str(tmp_path))


def test_type_names_and_schemas_are_accepted_and_bad_ones_rejected():
    assert parse_type("timestamp[ms]") == pa.timestamp("ms")
    assert parse_type("float32") == pa.float32()
    c = SchemaContract.of(pa.schema([("a", pa.int8())]), "strict")
    assert c.schema.field("a").type == pa.int8()
    with pytest.raises(DefinitionError, match="column 'a' has unknown Arrow type name 'integer64'"):
        SchemaContract.of({"a": "integer64"})
    with pytest.raises(DefinitionError, match="schema_evolution='loose'"):
        SchemaContract.of(None, "loose")
