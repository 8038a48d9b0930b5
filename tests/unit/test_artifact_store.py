"""The artifact store: content addressing, atomic writes (F4, F19), signed pickles, safe names
and paths, the cache index, named artifacts and execution markers."""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing as mp
import os
import pickle
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import rayline.store.artifact_files as artifact_files
from rayline.errors import ArtifactIntegrityError, StoreError, UnsafeNameError
from rayline.store.artifact_encoding import to_bytes
from rayline.store.artifact_scan import collect_garbage
from rayline.store.artifacts import (
    ArtifactInfo,
    ArtifactStore,
    load_or_create_key,
    validate_name,
)
from tests.coordination import at_once

FORK = mp.get_context("fork")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def store(home: Path) -> ArtifactStore:
    return ArtifactStore.open(home)


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


def data_path(store: ArtifactStore, digest: str) -> Path:
    return store.root / "objects" / digest[:2] / digest


class Evil:
    """Unpickling this creates a file: it stands for any code a tampered pickle could run."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


# ------------------------------------------------------------------------------ the key


def test_open_creates_a_0600_key_outside_the_root_and_reuses_it(store: ArtifactStore, home: Path):
    key = home / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert not key.resolve().is_relative_to(store.root.resolve())
    digest = store.put({"auc": 0.9}).digest
    assert ArtifactStore.open(home).get(digest) == {"auc": 0.9}  # same key on reopening


def test_a_key_readable_by_others_is_refused(store: ArtifactStore, home: Path):
    (home / "secret.key").chmod(0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        ArtifactStore.open(home)


def _load_key(path: Path, start: Path, out: mp.Queue) -> None:
    while not start.exists():
        time.sleep(0.001)
    out.put(load_or_create_key(path))


def test_processes_creating_the_key_at_once_agree_on_one(tmp_path: Path):
    path, start, out = tmp_path / "home" / "secret.key", tmp_path / "go", FORK.Queue()
    procs = [FORK.Process(target=_load_key, args=(path, start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    start.touch()
    keys = {out.get(timeout=30) for _ in procs}
    for p in procs:
        p.join(timeout=30)
    assert keys == {path.read_bytes()}


# -------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "value, fmt",
    [
        (42, "pickle"),
        ({"a": [1, 2.5, "x"], "b": None}, "pickle"),
        (np.arange(12, dtype=np.float32).reshape(3, 4), "pickle"),
        (pd.DataFrame({"age": [31, 47], "city": ["Oslo", "Lima"]}, index=[10, 20]), "parquet"),
        (pa.table({"x": [1, 2, 3], "y": ["a", "b", None]}), "parquet"),
    ],
    ids=["int", "dict", "numpy", "pandas", "arrow"],
)
def test_values_round_trip_in_their_format(store: ArtifactStore, value, fmt):
    info = store.put(value)
    assert info.fmt == fmt and info.size == data_path(store, info.digest).stat().st_size
    assert info.digest == hashlib.sha256(data_path(store, info.digest).read_bytes()).hexdigest()
    back = store.get(info.digest)
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(back, value)
    elif isinstance(value, pa.Table):
        assert isinstance(back, pa.Table) and back.equals(value)
    elif isinstance(value, np.ndarray):
        np.testing.assert_array_equal(back, value)
        assert back.dtype == value.dtype
    else:
        assert back == value
    assert store.exists(info.digest) and store.verify(info.digest)
    assert store.info(info.digest) == info


def test_a_dataframe_arrow_cannot_hold_is_pickled_instead(store: ArtifactStore):
    df = pd.DataFrame({"mixed": [1, "two", 3.0]})
    info = store.put(df)
    assert info.fmt == "pickle"
    pd.testing.assert_frame_equal(store.get(info.digest), df)


def test_putting_plain_values_never_imports_pyarrow_or_pandas(tmp_path: Path):
    code = (
        "import sys\n"
        "from rayline.store.artifacts import ArtifactStore\n"
        f"s = ArtifactStore({str(tmp_path / 'a')!r}, b'k' * 32)\n"
        "d = s.put({'n': 1}).digest\n"
        "assert s.get(d) == {'n': 1}\n"
        "print(sorted(m for m in ('pyarrow', 'pandas', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_manifest_is_written_last_and_describes_the_object(store, monkeypatch):
    order, real = [], artifact_files.write_atomic

    def record(path: Path, data: bytes, *, sync: bool, **kw) -> None:
        real(path, data, sync=sync, **kw)
        order.append(path.name)

    monkeypatch.setattr(artifact_files, "write_atomic", record)
    info = store.put([1, 2, 3])
    assert order == [info.digest, f"{info.digest}.json"]
    manifest = json.loads(
        data_path(store, info.digest).with_name(f"{info.digest}.json").read_text()
    )
    assert manifest.keys() == {"digest", "size", "format", "created", "type", "hmac"}
    assert (manifest["digest"], manifest["size"], manifest["format"], manifest["type"]) == (
        info.digest, info.size, "pickle", "builtins.list",
    )  # fmt: skip


def test_the_same_value_twice_is_written_once(store, monkeypatch):
    first = store.put({"k": "v"})
    path = data_path(store, first.digest)
    before = (path.stat().st_ino, path.stat().st_mtime_ns)

    def no_write(*args, **kwargs):
        raise AssertionError("a second put of stored bytes must write nothing")

    monkeypatch.setattr(artifact_files, "write_atomic", no_write)
    assert store.put({"k": "v"}) == first
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == before


def test_a_truncated_object_is_rewritten_by_the_next_put(store: ArtifactStore):
    info = store.put("payload" * 100)
    data_path(store, info.digest).write_bytes(b"trunc")
    assert not store.verify(info.digest)
    assert store.put("payload" * 100) == info
    assert store.verify(info.digest) and store.get(info.digest) == "payload" * 100


def test_put_of_an_existing_small_value_costs_well_under_a_millisecond(store: ArtifactStore):
    store.put(7)
    timings = []
    for _ in range(200):
        t = time.perf_counter()
        store.put(7)
        timings.append(time.perf_counter() - t)
    assert sorted(timings)[100] < 0.001


# ------------------------------------------------------------------- crashes and disk full


class Crash(BaseException):
    """Stands for the process dying at this point."""


def test_data_without_its_manifest_does_not_exist(store, monkeypatch):
    real = artifact_files.write_atomic

    def die_before_manifest(path: Path, data: bytes, *, sync: bool, **kw) -> None:
        if path.name.endswith(".json"):
            raise Crash
        real(path, data, sync=sync, **kw)

    monkeypatch.setattr(artifact_files, "write_atomic", die_before_manifest)
    with pytest.raises(Crash):
        store.put("half-written")
    digest = hashlib.sha256(to_bytes("half-written")[0]).hexdigest()
    assert data_path(store, digest).exists()  # the data landed, the manifest did not
    assert not store.exists(digest) and not store.verify(digest)
    with pytest.raises(StoreError, match=f"no artifact {digest}"):
        store.get(digest)
    monkeypatch.undo()
    assert store.put("half-written").digest == digest  # resume completes it
    assert store.get(digest) == "half-written"


def _leftovers(store: ArtifactStore) -> set[str]:
    return {p for p in files_under(store.root) if p.endswith(".tmp")}


def test_disk_full_during_fsync_is_a_store_error_naming_the_path(store, monkeypatch):
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    value = np.zeros(1000)
    digest = hashlib.sha256(to_bytes(value)[0]).hexdigest()
    with pytest.raises(StoreError, match=f"no space left writing .*{digest}"):
        store.put(value)
    assert not data_path(store, digest).exists() and not store.exists(digest)
    assert _leftovers(store) == set()


def test_disk_full_after_a_partial_write_leaves_no_partial_file(store, monkeypatch):
    real_write = os.write

    def half_then_full(fd: int, data) -> int:
        if len(data) > 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(StoreError, match="no space left"):
        store.put(b"x" * 4096)
    monkeypatch.undo()
    assert [p for p in store.root.rglob("*") if p.is_file()] == []  # no partial, no temp file


def test_gc_removes_only_temp_files_left_longer_than_the_lease(store: ArtifactStore):
    """Old-style temp files beside an object name no writer: ``rayline store gc`` removes them
    once they have not changed for the lease's length."""
    info = store.put(1)
    shard = data_path(store, info.digest).parent
    old, fresh = shard / f".{info.digest}.1.aa.tmp", shard / f".{info.digest}.2.bb.tmp"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert collect_garbage(store, [info.digest], lease_ttl=3600).temp_files == [(str(old), 7)]
    assert not old.exists() and fresh.exists() and store.verify(info.digest)
    time.sleep(0.01)
    assert collect_garbage(store, [info.digest], lease_ttl=0).temp_files == [(str(fresh), 7)]
    assert not fresh.exists() and store.verify(info.digest)


# ------------------------------------------------------------------- integrity and signing


def test_a_flipped_byte_is_an_integrity_error_never_a_reuse(store: ArtifactStore):
    info = store.put({"weights": list(range(100))})
    path = data_path(store, info.digest)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ArtifactIntegrityError, match=f"{info.digest}.*{path}"):
        store.get(info.digest)
    assert not store.verify(info.digest)
    store.cache_put("k1", info.digest)
    assert store.cache_get("k1") is None  # a cache hit that does not verify is a miss
    store.discard(info.digest)  # what resume does before re-running the task
    assert store.put({"weights": list(range(100))}) == info and store.verify(info.digest)


def test_evil_payload_runs_when_unpickled_directly(tmp_path: Path):
    """Guards the next test: the payload really would execute if anything unpickled it."""
    target = tmp_path / "pwned"
    pickle.loads(pickle.dumps(Evil(target)))
    assert target.exists()


def test_a_swapped_pickle_payload_is_refused_and_never_runs(store: ArtifactStore, tmp_path):
    target = tmp_path / "pwned"
    evil = pickle.dumps(Evil(target))
    legit = store.put({"model": "ok"})
    data_path(store, legit.digest).write_bytes(evil)  # same name, new payload
    with pytest.raises(ArtifactIntegrityError):
        store.get(legit.digest)
    assert not target.exists()


def test_a_planted_object_with_a_forged_signature_is_refused_and_never_runs(store, tmp_path):
    target = tmp_path / "pwned"
    evil = pickle.dumps(Evil(target))
    digest = hashlib.sha256(evil).hexdigest()
    path = data_path(store, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(evil)  # right name, right checksum
    manifest = {"digest": digest, "size": len(evil), "format": "pickle", "created": "",
                "type": "builtins.dict", "hmac": "0" * 64}  # fmt: skip
    path.with_name(f"{digest}.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactIntegrityError, match="not signed by this store's key"):
        store.get(digest)
    other = ArtifactStore(tmp_path / "elsewhere", b"another key of 32 bytes........")
    signed_elsewhere = other.put_bytes(evil, "pickle")
    manifest_path = data_path(other, digest).with_name(f"{digest}.json")
    path.with_name(f"{digest}.json").write_bytes(manifest_path.read_bytes())
    assert signed_elsewhere.digest == digest
    with pytest.raises(ArtifactIntegrityError):
        store.get(digest)
    assert not target.exists()


# ------------------------------------------------------------------------- names and paths


BAD_NAMES = ["../../etc/passwd", "%2e%2e%2f", "/etc/passwd", "a/b", "a\x00b", "a\\b", "..", ".",
             "", "x" * 129, "naïve", "sp ace"]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_unsafe_names_are_rejected_and_nothing_is_written(store, tmp_path, bad):
    before = files_under(tmp_path)
    with pytest.raises(UnsafeNameError, match=r"unsafe name .*\^\[A-Za-z0-9\._-\]\{1,128\}\$"):
        validate_name(bad)
    for call in (
        lambda: store.put_named("models", bad, 1),
        lambda: store.put_named(bad, "churn", 1),
        lambda: store.get_named(bad, "churn"),
        lambda: store.cache_put(bad, "0" * 64),
        lambda: store.cache_get(bad),
    ):
        with pytest.raises(UnsafeNameError):
            call()
    assert files_under(tmp_path) == before


@pytest.mark.parametrize(
    "bad, rule",
    [("%2e%2e%2f", "URL-encoded"), ("../x", "path separator"), ("/etc", "absolute path"),
     ("..", "'.' or '..'"), ("a\x00", "NUL"), ("x" * 129, "at most 128"), ("a b", "' '")],
)  # fmt: skip
def test_an_unsafe_name_error_says_which_rule_it_breaks(bad, rule):
    with pytest.raises(UnsafeNameError) as caught:
        validate_name(bad)
    assert rule in str(caught.value) and repr(bad) in str(caught.value)


@pytest.mark.parametrize("good", ["train", "model-v2.1", "A_b.C-d", "x" * 128, "..."])
def test_safe_names_pass(good):
    assert validate_name(good) == good


def test_malformed_digests_are_rejected(store: ArtifactStore):
    for bad in ["../" + "0" * 61, "A" * 64, "0" * 63, ""]:
        with pytest.raises(UnsafeNameError, match="not an artifact digest"):
            store.get(bad)


def test_a_symlink_pointing_out_of_the_root_is_refused(store: ArtifactStore, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "named").mkdir(parents=True)
    (store.root / "named" / "models").symlink_to(outside)
    with pytest.raises(UnsafeNameError, match="outside the artifact store"):
        store.put_named("models", "churn", {"w": 1})
    with pytest.raises(UnsafeNameError):
        store.get_named("models", "churn")
    (store.root / "cache").mkdir()
    (store.root / "cache" / "ab").symlink_to(outside)
    with pytest.raises(UnsafeNameError):
        store.cache_put("abcdef", store.put(1).digest)
    assert list(outside.iterdir()) == []


def test_a_symlinked_file_inside_the_root_is_not_followed(store: ArtifactStore):
    a, b = store.put("a"), store.put("b")
    path = data_path(store, a.digest)
    path.unlink()
    path.symlink_to(data_path(store, b.digest))
    with pytest.raises(UnsafeNameError, match="symbolic link"):
        store.get(a.digest)
    assert not store.verify(a.digest)


# ---------------------------------------------------------------- cache, names, markers


def test_cache_index_maps_keys_to_digests_and_rejects_forged_entries(store: ArtifactStore):
    assert store.cache_get("f00d") is None
    info, other = store.put("result"), store.put("other")
    store.cache_put("f00d", info.digest)
    assert store.cache_get("f00d") == info.digest
    entry = store.root / "cache" / "f0" / "f00d"
    entry.write_text(entry.read_text().replace(info.digest, other.digest))
    assert store.cache_get("f00d") is None  # a pointer edited by hand is not trusted
    store.cache_put("f00d", info.digest)
    store.discard(info.digest)
    assert store.cache_get("f00d") is None and not store.exists(info.digest)


def test_named_artifacts_round_trip_and_can_be_replaced(store: ArtifactStore):
    first = store.put_named("models", "churn", {"v": 1})
    assert isinstance(first, ArtifactInfo) and store.get_named("models", "churn") == {"v": 1}
    store.put_named("models", "churn", {"v": 2})
    assert store.get_named("models", "churn") == {"v": 2}
    assert store.named_digest("models", "missing") is None
    with pytest.raises(StoreError, match="no artifact named 'models/missing'"):
        store.get_named("models", "missing")


def test_concurrent_puts_of_one_value_leave_one_intact_object_and_no_temp_files(store: ArtifactStore):
    got = at_once(lambda: store.put({"weights": list(range(1000))}), 8, timeout=30)
    assert len(got) == 8 and len(set(got)) == 1
    assert store.get(got[0].digest) == {"weights": list(range(1000))} and store.verify(got[0].digest)
    assert [d for d, _, has in store.object_files() if has] == [got[0].digest]
    assert store.temp_files(everywhere=True) == []


def test_the_store_pickles_small_and_works_after_unpickling(store: ArtifactStore):
    info = store.put({"x": 1})
    blob = pickle.dumps(store)
    assert len(blob) < 500
    clone = pickle.loads(blob)
    assert clone.get(info.digest) == {"x": 1} and "secret" not in repr(clone)


def test_store_files_are_private(store: ArtifactStore):
    info = store.put(1)
    path = data_path(store, info.digest)
    for p in (path, path.with_name(f"{info.digest}.json")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    for d in (store.root, store.root / "objects", path.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700


# ------------------------------------------------------------- repair and killed writers


def test_a_put_over_damaged_bytes_rewrites_them(store: ArtifactStore):
    info = store.put({"weights": list(range(100))})
    path = data_path(store, info.digest)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))  # same size, one bit off: "already there" must not be trusted
    assert not store.verify(info.digest)
    assert store.put({"weights": list(range(100))}) == info
    assert store.verify(info.digest) and store.get(info.digest) == {"weights": list(range(100))}


def test_a_put_over_a_forged_manifest_rewrites_it(store: ArtifactStore):
    info = store.put("payload")
    manifest = data_path(store, info.digest).with_name(f"{info.digest}.json")
    record = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**record, "hmac": "0" * 64}))
    assert not store.verify(info.digest)
    assert store.put("payload") == info and store.verify(info.digest)


def _temp_file(store: ArtifactStore, name: str, age_s: float = 0.0) -> Path:
    tmp = store.root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / name
    path.write_bytes(b"partial")
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_temp_files_name_their_writer(store: ArtifactStore):
    from rayline.store.temp_files import machine_id, parse_temp_name, temp_name

    writer = parse_temp_name(temp_name())
    assert writer.machine == machine_id() and writer.pid == os.getpid()
    assert abs(writer.started - time.time()) < 5
    assert parse_temp_name(".abc.12.ff.tmp").machine is None and parse_temp_name("abc") is None


def test_sweep_removes_dead_writers_files_and_keeps_live_ones(store: ArtifactStore):
    from rayline.store.temp_files import machine_id

    me, ms = machine_id(), int(time.time() * 1000)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dead_here = _temp_file(store, f".rl-{me}-{dead.pid}-{ms}-00000001.tmp")
    live_here = _temp_file(store, f".rl-{me}-{os.getppid()}-{ms}-00000002.tmp")  # pytest's parent
    reused = _temp_file(store, f".rl-{me}-{os.getppid()}-{ms - 10**12}-00000003.tmp")  # the pid is newer
    other = "f" * 16 if me != "f" * 16 else "e" * 16
    quiet_elsewhere = _temp_file(store, f".rl-{other}-1-{ms}-00000004.tmp", age_s=120)
    busy_elsewhere = _temp_file(store, f".rl-{other}-1-{ms}-00000005.tmp", age_s=1)
    gone = {t.path for t in store.sweep_temp_files(lease_ttl=30.0)}
    assert gone == {dead_here, reused, quiet_elsewhere}
    assert live_here.exists() and busy_elsewhere.exists() and not dead_here.exists()
    assert store.sweep_temp_files(lease_ttl=30.0, dry_run=True) == []


def test_opening_the_store_sweeps_and_gc_finds_old_style_temp_files(home: Path):
    from rayline.store.temp_files import machine_id

    store = ArtifactStore.open(home)
    info = store.put(1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = _temp_file(store, f".rl-{machine_id()}-{dead.pid}-{int(time.time() * 1000)}-0000000a.tmp")
    beside = data_path(store, info.digest).with_name(f".{info.digest}.{dead.pid}.aa.tmp")
    beside.write_bytes(b"partial")
    os.utime(beside, (time.time() - 120, time.time() - 120))
    ArtifactStore.open(home, lease_ttl=30.0)
    assert not left.exists() and beside.exists()  # open looks in tmp/ only: cheap
    assert [t.path for t in store.sweep_temp_files(30.0, everywhere=True)] == [beside]
    assert store.verify(info.digest)


def test_a_symlinked_tmp_folder_is_refused(home: Path, tmp_path: Path):
    store = ArtifactStore.open(home)
    outside = tmp_path / "outside"
    outside.mkdir()
    store.root.mkdir(parents=True, exist_ok=True)
    (store.root / "tmp").symlink_to(outside)
    with pytest.raises(UnsafeNameError, match="leads outside"):
        store.put("never written outside")
    assert list(outside.iterdir()) == []


# -------------------------------------------------------------------------- large values


def test_a_large_array_is_streamed_into_its_file_and_hashed_as_written(store: ArtifactStore):
    value = np.random.default_rng(3).random(300_000)  # 2.4 MB: over STREAM_MIN
    info = store.put(value)
    data = data_path(store, info.digest).read_bytes()
    assert info.fmt == "pickle" and info.size == len(data)
    assert info.digest == hashlib.sha256(data).hexdigest()
    assert data == to_bytes(value)[0]  # the same bytes as the in-memory encoding
    np.testing.assert_array_equal(store.get(info.digest), value)
    assert store.put(value) == info and store.temp_files() == []


def test_a_read_only_array_loads_writable(store: ArtifactStore):
    value = np.frombuffer(np.arange(400_000, dtype=np.float64).tobytes())  # as Ray hands them out
    assert not value.flags.writeable
    back = store.get(store.put(value).digest)
    np.testing.assert_array_equal(back, value)
    assert back.flags.writeable and back.dtype == value.dtype


def test_a_large_value_that_cannot_be_encoded_leaves_nothing_behind(store: ArtifactStore):
    import threading

    with pytest.raises(TypeError):
        store.put([np.zeros(300_000), threading.Lock()])
    assert store.temp_files() == [] and not (store.root / "objects").exists()


def test_a_large_frame_is_streamed_as_an_arrow_file_and_loads_back_as_a_frame(store: ArtifactStore):
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"x": rng.random(100_000), "n": np.arange(100_000), "s": ["a", "b"] * 50_000})
    info = store.put(df)
    assert info.fmt == "arrow" and info.digest == hashlib.sha256(data_path(store, info.digest).read_bytes()).hexdigest()
    pd.testing.assert_frame_equal(store.get(info.digest), df)
    table = pa.table({"x": rng.random(200_000)})
    assert store.get(store.put(table).digest).equals(table)
