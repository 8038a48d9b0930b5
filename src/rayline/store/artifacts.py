"""The artifact store: content-addressed, atomic, signed task outputs on a local (or shared) disk.

Layout under ``root`` (``RAYLINE_HOME/artifacts``)::

    objects/<d[:2]>/<digest>        the bytes: Parquet for tables, cloudpickle otherwise
    objects/<d[:2]>/<digest>.json   manifest, written last (digest, size, format, created,
                                    type, hmac)
    cache/<k[:2]>/<key>             cache index: "<digest> <hmac>" (metadata apart from the bytes)
    named/<namespace>/<name>        named pointers (models, reports): "<digest> <hmac>"
    runs/<run_id>/starts/<node>.<k> one empty file per execution of a node (counts Ray retries)

``digest`` is the sha256 of the stored bytes. Every write goes to a temp file in the same
directory, is fsynced and ``os.replace``d into place, so a reader sees a complete file or none;
the manifest goes last, so an object without one does not exist. Reads check the sha256 and an
HMAC-SHA256 (key at ``RAYLINE_HOME/secret.key``, outside the root) before anything is unpickled.

The store holds only a path and a key: cheap to build and to pickle into Ray workers.

Example::

    store = ArtifactStore.open(Path("~/.rayline").expanduser())
    info = store.put({"auc": 0.91})       # ArtifactInfo(digest='3f…', size=30, fmt='pickle')
    assert store.get(info.digest) == {"auc": 0.91}
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import pickle
import re
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rayline.errors import ArtifactIntegrityError, StoreError, UnsafeNameError
from rayline.store.files import (
    DIGEST,
    READ_FLAGS,
    WRITE_FLAGS,
    check_digest,
    fsync_dir,
    load_or_create_key,
    validate_name,
    write_atomic,
    write_error,
)

__all__ = ["ArtifactInfo", "ArtifactStore", "load_or_create_key", "validate_name"]

_TMP = re.compile(r"\..+\.tmp")


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """Where a stored value lives: its sha256 ``digest``, ``size`` in bytes and format."""

    digest: str
    size: int
    fmt: str


def _to_bytes(value: Any) -> tuple[bytes, str, str]:
    """(bytes, format, type). Tables become Parquet; pyarrow/pandas load only for their types."""
    module = type(value).__module__
    if module.startswith(("pyarrow", "pandas")):
        import pyarrow as pa

        table, kind = None, "arrow"
        if isinstance(value, pa.Table):
            table = value
        elif module.startswith("pandas"):
            import pandas as pd

            if isinstance(value, pd.DataFrame):
                try:
                    table, kind = pa.Table.from_pandas(value), "pandas"
                except (pa.ArrowException, TypeError, ValueError):
                    table = None  # mixed-type object columns and the like: pickle instead
        if table is not None:
            import pyarrow.parquet as pq

            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            return sink.getvalue().to_pybytes(), "parquet", kind
    import cloudpickle

    kind = f"{module}.{type(value).__qualname__}"
    return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), "pickle", kind


def _from_bytes(data: bytes, fmt: str, kind: str) -> Any:
    if fmt == "pickle":
        # Safe only because the caller checked the sha256 and the HMAC first.
        return pickle.loads(data)  # noqa: S301
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(pa.BufferReader(data))
        return table.to_pandas() if kind == "pandas" else table
    return data


class ArtifactStore:
    """Content-addressed, atomic, signed storage of task outputs.

    Args:
        root: the store's directory (created on first write, mode 0700).
        key: the HMAC key (at least 16 bytes), kept outside ``root``.
    """

    __slots__ = ("_base", "_checked", "_key", "_root")

    def __init__(self, root: str | Path, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < 16:
            raise StoreError("the artifact store's HMAC key must be at least 16 bytes")
        self._root = Path(root).expanduser().absolute()
        self._base = self._root.resolve()
        self._key = bytes(key)
        self._checked: set[Path] = set()  # directories already proven to resolve inside root

    @classmethod
    def open(cls, home: str | Path) -> ArtifactStore:
        """The store at ``home/artifacts`` signed with ``home/secret.key`` (created if missing)."""
        home = Path(home).expanduser()
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(home / "artifacts", load_or_create_key(home / "secret.key"))

    @property
    def root(self) -> Path:
        """The store's directory."""
        return self._root

    def __reduce__(self) -> tuple[Any, ...]:
        return (ArtifactStore, (self._root, self._key))

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self._root)!r})"  # never the key

    # ------------------------------------------------------------------------------ paths

    def _path(self, *parts: str) -> Path:
        """``root/parts…``, each part a safe name, refused if it resolves outside the root."""
        for part in parts:
            validate_name(part)
        path = self._root.joinpath(*parts)
        # Names are validated (no separators, no ".."), so only a symlinked directory could lead
        # outside; check each directory once per process (hot path: every task output).
        if path.parent in self._checked:
            if path.is_symlink():
                raise UnsafeNameError(f"{path} is a symbolic link; the store never follows one")
            return path
        if not path.resolve().is_relative_to(self._base):
            raise UnsafeNameError(f"{path} resolves outside the artifact store {self._root}")
        if path.parent.is_dir():
            self._checked.add(path.parent)
        return path

    def _object(self, digest: str) -> Path:
        return self._path("objects", check_digest(digest)[:2], digest)

    def _make_dirs(self, directory: Path) -> None:
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                pass
            except OSError as e:
                raise write_error(d, e) from e

    def _write(self, path: Path, data: bytes, *, sync: bool) -> None:
        try:
            write_atomic(path, data, sync=sync)
        except FileNotFoundError:
            self._make_dirs(path.parent)
            try:
                write_atomic(path, data, sync=sync)
            except FileNotFoundError as e:
                raise write_error(path, e) from e

    def _read(self, path: Path) -> bytes:
        try:
            fd = os.open(path, READ_FLAGS)
        except FileNotFoundError:
            raise
        except OSError as e:
            if e.errno == errno.ELOOP:
                msg = f"{path} is a symbolic link; the store never follows one"
                raise UnsafeNameError(msg) from e
            raise StoreError(f"could not read {path}: {e.strerror}") from e
        try:
            with os.fdopen(fd, "rb") as f:
                return f.read()
        except OSError as e:
            raise StoreError(f"could not read {path}: {e.strerror}") from e

    def _mac(self, *fields: object) -> str:
        msg = "\n".join(["rayline-v1", *map(str, fields)]).encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    # ---------------------------------------------------------------------------- objects

    def put(self, value: Any) -> ArtifactInfo:
        """Store ``value``: a pyarrow Table or pandas DataFrame as Parquet, anything else pickled.

        Writes nothing if the same bytes are already stored.

        Raises:
            StoreError: the write failed (e.g. disk full); nothing partial is left in place.
        """
        data, fmt, kind = _to_bytes(value)
        return self._put(data, fmt, kind)

    def put_bytes(self, data: bytes, fmt: str = "bytes") -> ArtifactInfo:
        """Store already-serialised bytes; ``get`` decodes ``pickle``/``parquet``, else bytes."""
        return self._put(bytes(data), validate_name(fmt), "bytes")

    def _put(self, data: bytes, fmt: str, kind: str) -> ArtifactInfo:
        digest = hashlib.sha256(data).hexdigest()
        path = self._object(digest)
        manifest = path.with_name(f"{digest}.json")
        info = ArtifactInfo(digest, len(data), fmt)
        try:
            m, d = os.lstat(manifest), os.lstat(path)
            if stat.S_ISREG(m.st_mode) and m.st_size and d.st_size == len(data):
                return info  # already stored; a truncated or missing copy is rewritten below
        except FileNotFoundError:
            pass
        self._write(path, data, sync=True)
        record = {
            "digest": digest, "size": len(data), "format": fmt,
            "created": datetime.now(UTC).isoformat(), "type": kind,
            "hmac": self._mac("object", digest, len(data), fmt, kind),
        }  # fmt: skip
        self._write(manifest, json.dumps(record).encode(), sync=True)
        if os.environ.get("RAYLINE_DB_SYNC", "").lower() == "full":
            fsync_dir(path.parent)  # power-loss durability of the names, as asked
        return info

    def _manifest(self, digest: str) -> tuple[Path, dict[str, Any]]:
        path = self._object(digest)
        where = path.with_name(f"{digest}.json")
        try:
            raw = self._read(where)
        except FileNotFoundError:
            raise StoreError(f"no artifact {digest} in {self._root}") from None
        try:
            m = json.loads(raw)
            ok = m["digest"] == digest and isinstance(m["size"], int)
            mac = self._mac("object", digest, m["size"], m["format"], m["type"])
            ok = ok and hmac.compare_digest(mac, str(m["hmac"]))
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise ArtifactIntegrityError(
                f"artifact {digest}: manifest {where} is damaged or not signed by this store's "
                "key; it will not be used. Re-run the task that produced it"
            )
        return path, m

    def _verified_bytes(self, digest: str) -> tuple[bytes, dict[str, Any]]:
        path, m = self._manifest(digest)
        try:
            data = self._read(path)
        except FileNotFoundError:
            raise ArtifactIntegrityError(
                f"artifact {digest}: manifest present but data {path} is missing"
            ) from None
        if len(data) != m["size"] or hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactIntegrityError(
                f"artifact {digest}: checksum mismatch in {path} (the file was changed or "
                "damaged); it will not be used. Re-run the task that produced it"
            )
        return data, m

    def get(self, digest: str) -> Any:
        """The stored value, after checking its sha256 and its HMAC (before any unpickling).

        Raises:
            ArtifactIntegrityError: the bytes or the manifest fail a check.
            StoreError: no such artifact.
        """
        data, m = self._verified_bytes(digest)
        return _from_bytes(data, m["format"], m["type"])

    def get_bytes(self, digest: str) -> bytes:
        """The stored bytes, checked as ``get`` checks them."""
        return self._verified_bytes(digest)[0]

    def exists(self, digest: str) -> bool:
        """Whether the object's manifest is in place (a cheap check; ``verify`` reads it all)."""
        manifest = self._object(digest).with_name(f"{digest}.json")
        try:
            return stat.S_ISREG(os.lstat(manifest).st_mode)
        except FileNotFoundError:
            return False

    def verify(self, digest: str) -> bool:
        """Whether the object is present and passes its checksum and signature. Never raises."""
        try:
            self._verified_bytes(digest)
        except StoreError:
            return False
        return True

    def info(self, digest: str) -> ArtifactInfo:
        """Digest, size and format from the object's (signature-checked) manifest."""
        _, m = self._manifest(digest)
        return ArtifactInfo(digest, m["size"], m["format"])

    def discard(self, digest: str) -> None:
        """Remove an object, manifest first.

        ``put`` rewrites a missing or truncated object by itself; one damaged in place (``verify``
        is False) must be discarded before a new ``put`` of the same bytes can replace it.
        """
        path = self._object(digest)
        path.with_name(f"{digest}.json").unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    # ------------------------------------------------------------------- pointers and cache

    def _put_pointer(self, path: Path, kind: str, digest: str, *, sync: bool) -> None:
        rel = path.relative_to(self._root).as_posix()
        line = f"{digest} {self._mac(kind, rel, digest)}\n"
        self._write(path, line.encode(), sync=sync)

    def _get_pointer(self, path: Path, kind: str) -> str | None:
        try:
            digest, mac = self._read(path).decode("ascii").split()
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            return None  # absent, or torn by a crash: a miss
        rel = path.relative_to(self._root).as_posix()
        if not DIGEST.fullmatch(digest) or not hmac.compare_digest(
            mac, self._mac(kind, rel, digest)
        ):
            return None
        return digest

    def _cache_path(self, key: str) -> Path:
        return self._path("cache", validate_name(key)[:2].replace(".", "_"), key)

    def cache_put(self, key: str, digest: str) -> None:
        """Record that cache ``key`` resolves to the stored object ``digest``."""
        self._put_pointer(self._cache_path(key), "cache", check_digest(digest), sync=False)

    def cache_get(self, key: str) -> str | None:
        """The digest cached under ``key``, or None if absent or if it no longer verifies."""
        digest = self._get_pointer(self._cache_path(key), "cache")
        return digest if digest is not None and self.verify(digest) else None

    def put_named(self, namespace: str, name: str, value: Any) -> ArtifactInfo:
        """Store ``value`` and point ``named/<namespace>/<name>`` at it (replacing any)."""
        path = self._path("named", namespace, name)
        info = self.put(value)
        self._put_pointer(path, "named", info.digest, sync=True)
        return info

    def named_digest(self, namespace: str, name: str) -> str | None:
        """The digest ``namespace/name`` points at, or None."""
        return self._get_pointer(self._path("named", namespace, name), "named")

    def get_named(self, namespace: str, name: str) -> Any:
        """The value stored under ``namespace/name``, checked as ``get`` checks it.

        Raises:
            StoreError: nothing is stored under that name.
        """
        digest = self.named_digest(namespace, name)
        if digest is None:
            raise StoreError(f"no artifact named '{namespace}/{name}' in {self._root}")
        return self.get(digest)

    # ------------------------------------------------------------------ attempts and cleanup

    def mark_start(self, run_id: str, node_id: str) -> int:
        """Record one execution of ``node_id`` in ``run_id``; return its number (1, 2, …).

        Each call creates ``runs/<run_id>/starts/<node_id>.<k>`` exclusively, so executions that
        Ray retried on its own are counted even though the driver never saw them fail.
        """
        directory = self._path("runs", run_id, "starts")
        validate_name(node_id)
        k = 1
        while True:
            try:
                os.close(os.open(directory / f"{node_id}.{k}", WRITE_FLAGS, 0o600))
                return k
            except FileExistsError:
                k += 1
            except FileNotFoundError:
                self._make_dirs(directory)
            except OSError as e:
                raise write_error(directory / f"{node_id}.{k}", e) from e

    def cleanup_tmp(self, older_than_s: float = 3600) -> int:
        """Remove temp files (``.*.tmp``) left by crashed writers; return how many."""
        cutoff, removed = time.time() - older_than_s, 0
        for dirpath, _dirs, files in os.walk(self._root):
            for name in files:
                if not _TMP.fullmatch(name):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                    if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed
