"""The artifact store's contract on a real S3-compatible server (moto's server mode on loopback,
``tests/s3_server.py``): content addressing, manifest last, checksum and HMAC before unpickling,
damage detected and repaired, exclusive execution markers, and a store that reaches the bucket
from a process that knows nothing but the pickled store."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from rayline.config import Settings
from rayline.errors import ArtifactIntegrityError, StoreError
from rayline.store.artifact_fsspec import FsspecFiles
from rayline.store.artifact_location import artifact_location, artifact_url
from rayline.store.artifact_scan import scan_store
from rayline.store.artifacts import ArtifactStore
from tests.coordination import at_once

KEY = b"an s3 test key of 32 bytes......"


class Evil:
    """Unpickling this creates a file: it stands for any code a forged pickle could run."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.fixture
def url(s3_server) -> str:
    return s3_server.new_bucket() + "/rayline"


@pytest.fixture
def store(s3_server, url: str) -> ArtifactStore:
    return ArtifactStore(url, KEY, s3_server.options)


def key_of(store: ArtifactStore, digest: str, suffix: str = "") -> str:
    return f"{store.root}/objects/{digest[:2]}/{digest}{suffix}"


def test_values_round_trip_through_the_bucket_content_addressed(store, s3_server, tmp_path):
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    info = store.put(df)
    assert info.fmt == "parquet" and store.verify(info.digest)
    pd.testing.assert_frame_equal(store.get(info.digest), df)
    fs = s3_server.filesystem()
    data = fs.cat_file(key_of(store, info.digest))
    assert hashlib.sha256(data).hexdigest() == info.digest  # the key is the bytes' sha256
    assert store.put(df) == info  # the same bytes again: nothing new
    assert sorted(fs.find(str(store.root))) == [key_of(store, info.digest), key_of(store, info.digest, ".json")]
    assert store.url.startswith("s3://") and "secret" not in repr(store)


def test_the_manifest_is_written_after_the_bytes(store, monkeypatch):
    order, real = [], FsspecFiles.write

    def record(self, path, data, *, sync):
        real(self, path, data, sync=sync)
        order.append(path.name)

    monkeypatch.setattr(FsspecFiles, "write", record)
    info = store.put([1, 2, 3])
    assert order == [info.digest, f"{info.digest}.json"]


def test_a_reader_never_sees_an_object_without_its_manifest(store, s3_server):
    value = {"rows": list(range(20000))}
    info, seen, stop = [], [], threading.Event()
    reader = ArtifactStore(store.url, KEY, s3_server.options)

    def read() -> None:
        for _ in range(200):  # until the put is done and the reader has seen it once
            if stop.is_set() and seen:
                return
            for d, _data, has_manifest in reader.object_files():
                if has_manifest:
                    seen.append(reader.get(d) == value)  # a manifest: the whole value is there

    t = threading.Thread(target=read)
    t.start()
    try:
        info.append(store.put(value))
    finally:
        stop.set()
        t.join(timeout=60)
    assert seen and all(seen)  # never a manifest before its bytes
    # A writer that died between its two PUTs leaves bytes without a manifest: invisible.
    fs = s3_server.filesystem()
    half = store.put_bytes(b"half written")
    fs.rm_file(key_of(store, half.digest, ".json"))
    assert not store.exists(half.digest)
    with pytest.raises(StoreError, match="no artifact"):
        store.get(half.digest)
    assert [p.digest for p in scan_store(store, []).incomplete] == [half.digest]
    assert store.put_bytes(b"half written") == half and store.verify(half.digest)


def test_a_damaged_object_is_detected_and_rewritten_by_the_next_put(store, s3_server):
    info = store.put({"weights": list(range(100))})
    fs = s3_server.filesystem()
    raw = bytearray(fs.cat_file(key_of(store, info.digest)))
    raw[len(raw) // 2] ^= 0x01
    fs.pipe_file(key_of(store, info.digest), bytes(raw))
    assert not store.verify(info.digest)
    with pytest.raises(ArtifactIntegrityError, match="checksum mismatch"):
        store.get(info.digest)
    assert [p.digest for p in scan_store(store, [info.digest]).damaged] == [info.digest]
    assert store.put({"weights": list(range(100))}) == info
    assert store.get(info.digest) == {"weights": list(range(100))}


def test_a_forged_object_is_refused_before_it_is_unpickled(store, s3_server, tmp_path):
    """Someone with write access to the bucket but not the key (it stays in RAYLINE_HOME) plants
    a pickle with a correct checksum: it never runs."""
    target = tmp_path / "pwned"
    payload = pickle.dumps(Evil(target))
    digest = hashlib.sha256(payload).hexdigest()
    fs = s3_server.filesystem()
    fs.pipe_file(key_of(store, digest), payload)
    forged = {"digest": digest, "size": len(payload), "format": "pickle", "created": "now",
              "type": "builtins.dict", "hmac": "0" * 64}  # fmt: skip
    fs.pipe_file(key_of(store, digest, ".json"), json.dumps(forged).encode())
    with pytest.raises(ArtifactIntegrityError, match="not signed by this store's key"):
        store.get(digest)
    signed_elsewhere = ArtifactStore(store.url, b"another key of 32 bytes.........", s3_server.options)
    theirs = signed_elsewhere.put(Evil(target))
    with pytest.raises(ArtifactIntegrityError):
        store.get(theirs.digest)
    assert not target.exists()
    assert not [p for p in fs.find(str(store.root)) if "key" in Path(p).name]  # no key in the bucket


def test_concurrent_writers_of_one_object_leave_it_intact_on_s3(store):
    got = at_once(lambda: store.put({"weights": list(range(1000))}), 4)
    assert len(got) == 4 and len(set(got)) == 1
    assert store.get(got[0].digest) == {"weights": list(range(1000))} and store.verify(got[0].digest)
    assert [d for d, _, has in store.object_files() if has] == [got[0].digest]


def test_a_pickled_store_reaches_the_bucket_from_a_process_without_its_environment(store, tmp_path):
    """What a Ray worker gets: the URL, the storage options and the key travel in the pickle."""
    blob = tmp_path / "store.pkl"
    blob.write_bytes(pickle.dumps(store))
    code = ("import pickle, sys; s = pickle.loads(open(sys.argv[1], 'rb').read()); "
            "print(s.put({'from': 'worker'}).digest)")  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code, str(blob)], capture_output=True, text=True,
                         env=env, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert store.get(out.stdout.strip()) == {"from": "worker"}


def test_settings_take_the_endpoint_and_credentials_from_the_aws_environment(s3_server, url, home, monkeypatch):
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(home=home, artifacts_url=url)
    store = ArtifactStore.for_settings(settings)
    info = store.put("via AWS_ENDPOINT_URL")
    assert store.get(info.digest) == "via AWS_ENDPOINT_URL"
    assert (home / "secret.key").exists() and not (home / "artifacts").exists()
    assert pickle.loads(pickle.dumps(store)).files.options["endpoint_url"] == s3_server.endpoint
    fs, path = artifact_location(settings, "checkpoints/run-1")
    fs.pipe_file(f"{path}/epoch-1", b"ckpt")
    assert artifact_url(settings, "checkpoints/run-1") == f"{url}/checkpoints/run-1"
    assert s3_server.filesystem().cat_file(f"{url.removeprefix('s3://')}/checkpoints/run-1/epoch-1") == b"ckpt"


def test_rayline_store_verify_and_gc_work_on_the_bucket(s3_settings, s3_server):
    from click.testing import CliRunner

    from rayline.cli.main import cli

    store = ArtifactStore.for_settings(s3_settings)
    kept, damaged = store.put_named("models", "m", [1, 2]), store.put("soon damaged")
    key = key_of(store, damaged.digest)
    fs = s3_server.filesystem()
    fs.pipe_file(key, fs.cat_file(key)[:-1])
    checked = CliRunner().invoke(cli, ["store", "verify", "--json"])
    assert checked.exit_code == 1, checked.output
    report = json.loads(checked.stdout)
    assert [d["digest"] for d in report["damaged"]] == [damaged.digest] and report["objects"] == 2
    swept = CliRunner().invoke(cli, ["store", "gc", "--dry-run"])
    assert swept.exit_code == 0, swept.output
    assert store.verify(kept.digest) and store.get_named("models", "m") == [1, 2]
