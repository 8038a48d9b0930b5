"""Where artifacts live: the artifact URL, its storage options, and places under it.

``RAYLINE_ARTIFACTS_URL`` (default: the folder ``RAYLINE_HOME/artifacts``) is a plain path, a
shared ``file://`` path, or any fsspec URL (``s3://bucket/prefix``, ``gs://…``, ``abfs://…``).
``RAYLINE_ARTIFACTS_OPTIONS`` (JSON) holds fsspec storage options. For ``s3://``, an
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) set where the store is opened becomes the
``endpoint_url`` option, so that Ray workers started without it reach the same server; the
credentials stay where the AWS tools look for them on each node (environment, ``~/.aws``,
instance roles) unless the options name them.

Everything else that must be reachable from every node (Ray Train's ``storage_path``, registered
models, served-input logs, task logs) asks ``artifact_location`` for its place::

    fs, path = artifact_location(settings, "checkpoints/run-1")   # (fsspec fs, "bucket/p/…")
    url = artifact_url(settings, "checkpoints/run-1")              # "s3://bucket/p/checkpoints/run-1"
    url = store_url(store, "train", run_id)                       # the same, from a task's store
    path, fs = ray_storage(url, store)          # RunConfig(storage_path=path, storage_filesystem=fs)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rayline.store.files import validate_name

__all__ = ["artifact_location", "artifact_options", "artifact_url", "files_for", "is_local", "ray_storage",
           "store_url"]


def is_local(url: str | Path) -> bool:
    """Whether ``url`` is a folder on this machine's filesystem (a path or ``file://``)."""
    return isinstance(url, Path) or "://" not in url or url.startswith(("file://", "local://"))


def _local_path(url: str | Path) -> Path:
    text = str(url)
    for scheme in ("file://", "local://"):
        text = text.removeprefix(scheme)
    return Path(text).expanduser()


def files_for(url: str | Path, options: dict[str, Any] | None = None) -> Any:
    """The ``ArtifactFiles`` for ``url``: ``LocalFiles`` for a path or ``file://``,
    ``FsspecFiles`` for any other fsspec URL."""
    if is_local(url):
        from rayline.store.artifact_files import LocalFiles

        return LocalFiles(_local_path(url))
    from rayline.store.artifact_fsspec import FsspecFiles

    return FsspecFiles(str(url), options)


def artifact_options(settings: Any) -> dict[str, Any]:
    """The storage options for ``settings.artifacts_url``: ``artifacts_options``, plus, for
    ``s3://``, the endpoint from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` when the
    options name none."""
    options = dict(settings.artifacts_options or {})
    url = settings.artifacts_url or ""
    if url.startswith(("s3://", "s3a://")) and "endpoint_url" not in options:
        client = options.get("client_kwargs") or {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and "endpoint_url" not in client:
            options["endpoint_url"] = endpoint
    return options


def _sub(parts: str) -> list[str]:
    return [validate_name(p) for p in parts.strip("/").split("/") if p] if parts else []


def artifact_url(settings: Any, sub: str = "") -> str:
    """The artifact URL (or local folder) joined with ``sub`` (``"a/b"``, each part a safe
    name): what Ray Train's ``storage_path`` or a log writer on any node is given."""
    base = settings.artifacts_url or str(settings.artifact_root)
    parts = _sub(sub)
    if is_local(base):
        return str(_local_path(base).joinpath(*parts))
    return "/".join([base.rstrip("/"), *parts])


def artifact_location(settings: Any, sub: str = "") -> tuple[Any, str]:
    """``(fsspec filesystem, path)`` of ``sub`` under the artifact URL, for code that writes
    its own files there (checkpoints, logs, registered models). A local folder gives fsspec's
    local filesystem and an absolute path."""
    from fsspec.core import url_to_fs

    url = artifact_url(settings, sub)
    if is_local(url):
        return url_to_fs(str(_local_path(url)))
    return url_to_fs(url, **artifact_options(settings))


def store_url(store: Any, *parts: str) -> str:
    """``parts`` (safe names) under an artifact store (an ``ArtifactStore`` or its files): a
    local path, or a URL such as ``s3://bucket/prefix/train/<run_id>``."""
    files = getattr(store, "files", store)
    names = [validate_name(p) for p in parts]
    if isinstance(files.root, Path):
        return str(files.root.joinpath(*names))
    return "/".join([files.url.rstrip("/"), *names])


def ray_storage(url: str, store: Any = None) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for Ray Train's and Ray Tune's ``RunConfig``.

    A local folder is returned as it is, with no filesystem. A URL gets the path inside its
    filesystem (``bucket/prefix/…``, no scheme, as Ray asks when a filesystem is given) and a
    pyarrow filesystem over fsspec's: the artifact store's own when ``url`` lies under it (its
    endpoint and storage options), else one built from the URL. Ray pickles it to every Train
    worker and Tune trial, so each node writes its checkpoints there itself.
    """
    if is_local(url):
        return str(_local_path(url)), None
    import pyarrow.fs as pafs

    files = getattr(store, "files", store)
    base, want = str(getattr(files, "url", "")).rstrip("/"), url.rstrip("/")
    if base and hasattr(files, "fs") and (want == base or want.startswith(base + "/")):
        fs = files.fs
    else:
        from fsspec.core import url_to_fs

        fs = url_to_fs(url)[0]
    path = fs._strip_protocol(url)
    return path, pafs.PyFileSystem(pafs.FSSpecHandler(fs))
