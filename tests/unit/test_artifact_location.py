"""Where artifacts live: the URL picks the file layer, the settings carry the URL and its
options, ``artifact_url``/``artifact_location`` give other code its place under it; the store
behind an fsspec URL (here ``memory://``) keeps the store's contract."""

from __future__ import annotations

import pickle
from pathlib import Path, PurePosixPath

import pytest

from rayline.config import Settings
from rayline.errors import ArtifactIntegrityError, UnsafeNameError
from rayline.store.artifact_files import LocalFiles
from rayline.store.artifact_fsspec import FsspecFiles
from rayline.store.artifact_location import (
    artifact_location,
    artifact_options,
    artifact_url,
    files_for,
)
from rayline.store.artifacts import ArtifactStore


def test_a_path_or_file_url_is_a_local_folder_anything_else_goes_through_fsspec(tmp_path: Path):
    assert isinstance(files_for(tmp_path / "a"), LocalFiles)
    local = files_for(f"file://{tmp_path}/shared")
    assert isinstance(local, LocalFiles) and local.root == tmp_path / "shared"
    remote = files_for("s3://bucket/prefix", {"anon": True})
    assert isinstance(remote, FsspecFiles) and remote.url == "s3://bucket/prefix"
    assert "anon" not in repr(remote)  # options may hold credentials: never shown


def test_settings_read_the_url_and_json_options_from_the_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("RAYLINE_ARTIFACTS_URL", "s3://bucket/rl")
    monkeypatch.setenv("RAYLINE_ARTIFACTS_OPTIONS", '{"key": "k", "secret": "s"}')
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    s = Settings(home=tmp_path)
    assert s.artifacts_url == "s3://bucket/rl" and s.artifacts_options == {"key": "k", "secret": "s"}
    assert artifact_options(s) == {"key": "k", "secret": "s", "endpoint_url": "http://127.0.0.1:9"}
    assert artifact_url(s, "checkpoints/run-1") == "s3://bucket/rl/checkpoints/run-1"
    with pytest.raises(UnsafeNameError):
        artifact_url(s, "../escape")


def test_the_default_is_the_folder_under_home(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("RAYLINE_ARTIFACTS_URL", raising=False)
    s = Settings(home=tmp_path)
    assert artifact_url(s, "logs") == str(tmp_path.resolve() / "artifacts" / "logs")
    fs, path = artifact_location(s, "logs")
    fs.makedirs(path, exist_ok=True)
    assert Path(path).is_dir() and ArtifactStore.for_settings(s).root == tmp_path.resolve() / "artifacts"


def test_a_store_behind_an_fsspec_url_keeps_the_contract():
    store = ArtifactStore("memory://rl-unit/store", b"k" * 32)
    info = store.put({"auc": 0.9})
    assert store.get(info.digest) == {"auc": 0.9} and store.root == PurePosixPath("/rl-unit/store")
    assert [d for d, _, has in store.object_files() if has] == [info.digest]
    store.put_named("models", "m", [1])
    assert store.get_named("models", "m") == [1]
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get(info.digest) == {"auc": 0.9} and len(pickle.dumps(store)) < 500
    fs = store.files.fs
    fs.pipe_file(f"{store.root}/objects/{info.digest[:2]}/{info.digest}", b"\x80\x05K\x01.")
    with pytest.raises(ArtifactIntegrityError):
        store.get(info.digest)
    assert store.put({"auc": 0.9}) == info and store.verify(info.digest)
