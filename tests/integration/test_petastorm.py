"""read_petastorm on a fixture written by petastorm's own writer: the pure-pyarrow reader and the
bridge to petastorm's make_reader in the side env give identical values; the Unischema pickle is
unpickled with an allow-list; the side env is built here when it is missing (never skipped)."""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayline.connectors import SchemaContractError, connector
from rayline.connectors.petastorm import PetastormSource, read_petastorm, to_numpy
from rayline.connectors.petastorm_bridge import (
    PetastormBridgeError,
    PetastormBridgeSource,
    build_env,
)
from rayline.connectors.petastorm_codecs import (
    UNISCHEMA_KEY,
    PetastormDataError,
    UnsafePickleError,
    load_unischema,
)
from rayline.connectors.petastorm_decode import decode_column
from rayline.connectors.petastorm_predicates import (
    in_lambda,
    in_negate,
    in_pseudorandom_split,
    in_reduce,
    in_set,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "petastorm_small"
ARRAYS = str(FIXTURES / "arrays")
IMAGES = str(FIXTURES / "images")


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_petastorm_fixture", FIXTURES / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE = _fixture_module()


@pytest.fixture(scope="module")
def side_env() -> Path:
    """The petastorm side env, built now if missing (a build failure fails the test)."""
    start = time.monotonic()
    env = build_env()
    print(f"petastorm side env ready in {time.monotonic() - start:.1f}s: {env}")
    return env


def value(table: pa.Table, name: str, i: int):
    col = table.column(name).combine_chunks()
    if isinstance(col.type, pa.FixedShapeTensorType):
        v = col.storage[i]
        return None if not v.is_valid else v.values.to_numpy(zero_copy_only=False).reshape(col.type.shape)
    v = col[i].as_py()
    return np.asarray(v, dtype=np.float32) if pa.types.is_list(col.type) else v


# ---------------------------------------------------------------------------- pure pyarrow
def test_pyarrow_engine_decodes_every_codec_to_the_values_petastorm_wrote():
    src = read_petastorm(ARRAYS)
    assert isinstance(src, PetastormSource) and src.num_rows == MAKE.ARRAY_ROWS
    table = src.to_table()
    assert table.schema.field("features").type == pa.fixed_shape_tensor(pa.float32(), [4])
    assert table.schema.field("patch").type == pa.fixed_shape_tensor(pa.uint8(), [4, 4, 3])
    assert table.schema.field("ragged").type == pa.list_(pa.float32())
    order = table.column("id").to_pylist()
    for i in range(MAKE.ARRAY_ROWS):
        row, want = order.index(i), MAKE.arrays_row(i)
        for name, expected in want.items():
            got = value(table, name, row)
            if expected is None:
                assert got is None, (name, i)
            elif isinstance(expected, np.ndarray):
                assert got.dtype == expected.dtype and np.array_equal(got, expected), (name, i)
            else:
                assert got == expected, (name, i)


def test_pyarrow_engine_streams_batches_projects_filters_and_shards():
    src = read_petastorm(ARRAYS, columns=["patch", "id"], filter=[("label", "=", 1)])
    batches = list(src.iter_batches(3))
    assert max(b.num_rows for b in batches) <= 3 and batches[0].schema.names == ["patch", "id"]
    ids = sorted(i for b in batches for i in b.column("id").to_pylist())
    assert ids == [i for i in range(MAKE.ARRAY_ROWS) if i % 3 == 1]
    arrays = next(read_petastorm(ARRAYS, columns=["patch"]).iter_batches(5, batch_format="numpy"))
    assert arrays["patch"].shape == (5, 4, 4, 3) and arrays["patch"].dtype == np.uint8
    shards = read_petastorm(ARRAYS, columns=["id"]).shards(4)
    seen = [i for s in shards for i in s.to_table().column("id").to_pylist()]
    assert sorted(seen) == list(range(MAKE.ARRAY_ROWS)) and [s.num_rows for s in shards] == [6] * 4
    assert connector("petastorm").open(ARRAYS, columns=["id"]).num_rows == MAKE.ARRAY_ROWS


def test_unknown_fields_and_plain_parquet_are_refused_with_the_fix(tmp_path):
    with pytest.raises(SchemaContractError, match="(?s)field .nope..*the fields are: id, label"):
        read_petastorm(ARRAYS, columns=["id", "nope"])
    pq.write_table(pa.table({"a": [1]}), tmp_path / "part-0.parquet")
    with pytest.raises(PetastormDataError, match="(?s)no _common_metadata.*.parquet. connector"):
        read_petastorm(str(tmp_path))


def test_a_corrupt_encoded_value_names_its_field():
    src = read_petastorm(ARRAYS)
    fields = src.unischema.fields
    stored = src.parquet.to_table().column("patch").combine_chunks()[0].as_py()
    cut = pa.array([stored[: len(stored) // 2]], pa.binary())  # a truncated savez_compressed zip
    with pytest.raises(PetastormDataError, match="field 'patch'.*not a valid encoded ndarray.*truncated"):
        decode_column(fields["patch"], cut)
    with pytest.raises(PetastormDataError, match="field 'features'.*no NUMPY magic"):
        decode_column(fields["features"], pa.array([b"not an npy value"], pa.binary()))


def test_images_decode_through_pillow_as_petastorm_returns_them():
    pytest.importorskip("PIL", reason="Pillow is optional: the image codec test needs it")
    table = read_petastorm(IMAGES).to_table()
    petastorm_photo = np.load(FIXTURES / "images_photo_petastorm.npy")  # what make_reader returned
    for i in range(MAKE.IMAGE_ROWS):
        want = MAKE.images_row(i)
        assert np.array_equal(value(table, "rgb", i), want["rgb"])  # PNG: lossless, RGB order
        assert np.array_equal(value(table, "gray", i), want["gray"])
        # JPEG is lossy: compare with petastorm's own (OpenCV) decoding; libjpeg builds may differ by 1-2
        assert np.abs(value(table, "photo", i).astype(int) - petastorm_photo[i]).max() <= 2


def test_images_without_pillow_fail_with_a_message_that_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    with pytest.raises(PetastormDataError, match="(?s)need Pillow.*pip install pillow"):
        read_petastorm(IMAGES).to_table()
    assert read_petastorm(IMAGES, columns=["id"]).to_table().column("id").to_pylist() == list(range(6))


# ---------------------------------------------------------------------------- restricted unpickling
class Boom:
    """Unpickling this would run ``os.system`` (a classic pickle exploit)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_dataset(tmp_path: Path, payload: bytes) -> Path:
    ds = tmp_path / "evil"
    shutil.copytree(ARRAYS, ds)
    schema = pq.read_schema(ds / "_common_metadata")
    pq.write_metadata(schema.with_metadata({**schema.metadata, UNISCHEMA_KEY: payload}), ds / "_common_metadata")
    return ds


def test_restricted_unpickler_refuses_a_malicious_global_and_never_runs_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Boom(marker))
    assert b"system" in payload
    with pytest.raises(UnsafePickleError, match=r"'posix\.system'|'os\.system'"):
        load_unischema(payload)
    for name in ("eval", "getattr", "exec", "__import__"):
        with pytest.raises(UnsafePickleError, match=f"builtins.{name}"):
            load_unischema(b"\x80\x04\x8c\x08builtins\x8c" + bytes([len(name)]) + name.encode() + b"\x93.")
    with pytest.raises(UnsafePickleError, match="numpy.load"):
        load_unischema(pickle.dumps(np.load))
    with pytest.raises(UnsafePickleError, match="_common_metadata"):
        read_petastorm(str(_malicious_dataset(tmp_path, payload)))
    assert not marker.exists()


def test_restricted_unpickler_loads_petastorms_real_schema_into_inert_stand_ins():
    raw = pq.read_metadata(Path(ARRAYS) / "_common_metadata").metadata[UNISCHEMA_KEY]
    schema = load_unischema(raw)
    assert schema.name == "ArraysSchema" and list(schema.fields)[:3] == ["id", "label", "name"]
    patch = schema.fields["patch"]
    assert (patch.numpy_dtype, patch.shape, type(patch.codec).__name__) == (np.uint8, (4, 4, 3), "CompressedNdarrayCodec")
    assert type(schema.fields["id"].codec._spark_type).__name__ == "LongType"
    assert "petastorm" not in sys.modules and "pyspark" not in sys.modules
    assert pickle.loads(pickle.dumps(schema)).fields["id"] == schema.fields["id"]  # travels to Ray workers


# ---------------------------------------------------------------------------- the bridge
def test_bridge_and_pyarrow_engines_read_identical_values(side_env):
    bridged = read_petastorm(ARRAYS, engine="bridge")
    assert isinstance(bridged, PetastormBridgeSource) and bridged.num_rows == MAKE.ARRAY_ROWS
    assert bridged.to_table().equals(read_petastorm(ARRAYS).to_table())
    cols = ["patch", "score", "id"]
    assert read_petastorm(ARRAYS, engine="bridge", columns=cols).to_table().equals(
        read_petastorm(ARRAYS, columns=cols).to_table()
    )


def label_is_two(label) -> bool:
    """A predicate function at module level: it must travel by value (the side env cannot
    import this test module)."""
    return label == 2


def test_bridge_shards_and_predicates_use_petastorms_reader(side_env):
    shards = read_petastorm(ARRAYS, engine="bridge", columns=["id"]).shards(3)
    tables = [s.to_table() for s in shards]
    assert [t.num_rows for t in tables] == [s.num_rows for s in shards] == [8, 8, 8]
    assert sorted(i for t in tables for i in t.column("id").to_pylist()) == list(range(MAKE.ARRAY_ROWS))

    def ids(predicate) -> list[int]:
        src = read_petastorm(ARRAYS, engine="bridge", columns=["id", "label"], predicate=predicate)
        return sorted(src.to_table().column("id").to_pylist())

    assert ids(in_set([2], "label")) == [i for i in range(24) if i % 3 == 2]
    assert ids(in_lambda(["label"], label_is_two)) == [i for i in range(24) if i % 3 == 2]
    assert ids(in_negate(in_set([0, 1], "label"))) == [i for i in range(24) if i % 3 == 2]
    assert ids(in_reduce([in_set([1], "label"), in_lambda(["id"], lambda v: v > 12)], all)) == [13, 16, 19, 22]
    split = [ids(in_pseudorandom_split([0.5, 0.5], k, "id")) for k in (0, 1)]
    assert sorted(split[0] + split[1]) == list(range(24)) and not set(split[0]) & set(split[1])


def test_bridge_stdout_carries_only_the_arrow_stream(side_env):
    def noisy(v) -> bool:  # runs in the bridge process; prints must not corrupt the stream
        print("noise on stdout " * 20)
        sys.stdout.write("\x00garbage")
        os.write(1, b"raw bytes on fd 1")
        return True

    src = read_petastorm(ARRAYS, engine="bridge", columns=["id"], predicate=in_lambda(["id"], noisy))
    assert sorted(src.to_table().column("id").to_pylist()) == list(range(MAKE.ARRAY_ROWS))


def test_bridge_refuses_a_malicious_unischema_too(side_env, tmp_path):
    marker = tmp_path / "pwned"
    evil = _malicious_dataset(tmp_path, pickle.dumps(Boom(marker)))
    with pytest.raises(UnsafePickleError):  # checked on this side before any process starts
        read_petastorm(str(evil), engine="bridge")
    source = PetastormBridgeSource(url=str(evil), env=str(side_env), row_groups=(8, 8, 8))
    with pytest.raises(PetastormBridgeError, match="not one of petastorm's"):  # and in the bridge
        source.to_table()
    assert not marker.exists()


def test_bridge_failures_carry_the_bridge_stderr(side_env):
    src = read_petastorm(ARRAYS, engine="bridge", columns=["id"], predicate=in_set([1], "no_such_field"))
    with pytest.raises(PetastormBridgeError, match="(?s)exited with 1.*no_such_field"):
        src.to_table()


def test_bridge_reads_plain_parquet_with_petastorms_batch_reader(side_env, tmp_path):
    table = pa.table({"a": pa.array(range(10), pa.int64()), "b": [f"v{i}" for i in range(10)],
                      "c": pa.array([i / 2 for i in range(10)], pa.float64())})  # fmt: skip
    pq.write_table(table, tmp_path / "part-0.parquet", row_group_size=4)
    src = read_petastorm(str(tmp_path), engine="bridge")
    assert src.schema is None and src.num_rows == 10 and len(src.row_groups) == 3
    assert src.to_table().equals(table)


def test_bridge_without_a_side_env_says_how_to_build_it(tmp_path):
    with pytest.raises(PetastormBridgeError, match="make petastorm-env"):
        read_petastorm(ARRAYS, engine="bridge", env=tmp_path / "none")


# ---------------------------------------------------------------------------- Ray Data
def test_ray_datasets_from_both_engines_hold_the_same_tensors(ray_session, side_env):
    cols = ["id", "features", "patch"]
    direct = read_petastorm(ARRAYS, columns=cols).to_ray_dataset()
    bridged = read_petastorm(ARRAYS, engine="bridge", columns=cols).to_ray_dataset()
    results = []
    for ds in (direct, bridged):
        batches = list(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
        table = pa.concat_tables(batches).sort_by("id")
        results.append(table)
        assert table.num_rows == MAKE.ARRAY_ROWS
    assert results[0].equals(results[1])
    patch = to_numpy(results[1].column("patch").combine_chunks())
    assert patch.shape == (MAKE.ARRAY_ROWS, 4, 4, 3) and patch.dtype == np.uint8
    assert np.array_equal(patch[5], MAKE.arrays_row(5)["patch"])
