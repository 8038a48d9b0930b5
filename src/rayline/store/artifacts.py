"""The artifact store: content-addressed, atomic, signed task outputs, in a folder or behind a URL.

Layout under ``root`` (``RAYLINE_ARTIFACTS_URL``; default ``RAYLINE_HOME/artifacts``)::

    objects/<d[:2]>/<digest>        the bytes: Parquet (Arrow IPC when large) for tables, cloudpickle otherwise
    objects/<d[:2]>/<digest>.json   manifest, written last (digest, size, format, created,
                                    type, hmac)
    cache/<k[:2]>/<key>             cache index: "<digest> <hmac>" (metadata apart from the bytes)
    named/<namespace>/<name>        named pointers (models, reports): "<digest> <hmac>"
    tmp/.rl-<machine>-<pid>-<ms>-<hex>.tmp   writes in progress, named after their writer

``digest`` is the sha256 of the stored bytes. Every write is atomic — locally a temp file under
``tmp/``, fsynced and ``os.replace``d into place; on object storage (``s3://``, ``gs://``, …) one
PUT of the whole object — so a reader sees a complete file or none; the manifest
goes last, so an object without one does not exist. Reads check the sha256 and an HMAC-SHA256
(key at ``RAYLINE_HOME/secret.key``, outside the root) before anything is unpickled. A ``put``
of bytes already stored compares them with the stored copy and rewrites a damaged one. Temp
files of writers that are gone (``temp_files.writer_gone``) are removed when the store is opened.

Every file operation goes through ``self._files``, an ``ArtifactFiles`` (``artifact_files.py``:
``LocalFiles`` for a folder, ``FsspecFiles`` for a URL). The HMAC key never goes to the URL: it
stays in ``RAYLINE_HOME`` and travels to Ray workers inside the pickled store. Scans of the whole store (``verify``, ``gc``) live in
``artifact_scan.py``; the byte formats in ``artifact_encoding.py``.

The store holds a path (or a URL and its options) and a key: cheap to pickle into Ray workers.

Example::

    store = ArtifactStore.open(Path("~/.rayline").expanduser())
    info = store.put({"auc": 0.91})       # ArtifactInfo(digest='3f…', size=30, fmt='pickle')
    assert store.get(info.digest) == {"auc": 0.91}
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rayline.errors import ArtifactIntegrityError, StoreError
from rayline.store.artifact_encoding import encode, from_bytes, size_hint, to_bytes
from rayline.store.artifact_files import ArtifactFiles, HashedWrite, TempFile
from rayline.store.artifact_location import files_for
from rayline.store.artifact_pointers import SignedPointers
from rayline.store.files import (
    DIGEST,
    check_digest,
    load_or_create_key,
    validate_name,
    write_error,
)
from rayline.store.temp_files import writer_gone

log = logging.getLogger("rayline.artifacts")

#: Values at least this large (``size_hint``) are streamed into the store, not built in memory.
STREAM_MIN = 1 << 20

__all__ = ["ArtifactInfo", "ArtifactStore", "TempFile", "load_or_create_key", "validate_name"]


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """Where a stored value lives: its sha256 ``digest``, ``size`` in bytes and format."""

    digest: str
    size: int
    fmt: str


class ArtifactStore(SignedPointers):
    """Content-addressed, atomic, signed storage of task outputs.

    Args:
        root: the store's directory (created on first write, mode 0700), an fsspec URL
            (``s3://bucket/prefix``), or an ``ArtifactFiles``.
        key: the HMAC key (at least 16 bytes), kept outside ``root``.
        options: fsspec storage options for a URL (endpoint, credentials, …).
    """

    __slots__ = ("_files", "_key")

    def __init__(
        self, root: str | Path | ArtifactFiles, key: bytes, options: dict[str, Any] | None = None
    ) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < 16:
            raise StoreError("the artifact store's HMAC key must be at least 16 bytes")
        self._files: ArtifactFiles = (
            files_for(root, options) if isinstance(root, str | Path) else root
        )
        self._key = bytes(key)

    @classmethod
    def open(cls, home: str | Path, *, lease_ttl: float = 30.0, url: str | None = None,
             options: dict[str, Any] | None = None) -> ArtifactStore:  # fmt: skip
        """The store at ``url`` (default ``home/artifacts``) signed with ``home/secret.key``
        (created if missing). ``ArtifactStore.for_settings`` opens the one the settings name.

        Removes the temp files of writers that are gone (``sweep_temp_files(lease_ttl)``).
        """
        home = Path(home).expanduser()
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = cls(url or home / "artifacts", load_or_create_key(home / "secret.key"), options)
        store.sweep_temp_files(lease_ttl)
        return store

    @classmethod
    def for_settings(cls, settings: Any, *, sweep: bool = True) -> ArtifactStore:
        """The store ``settings`` name (``artifacts_url``, ``artifacts_options``; the key in
        ``RAYLINE_HOME``). ``sweep``: remove dead writers' temp files, as ``open`` does."""
        from rayline.store.artifact_location import artifact_options

        home = settings.resolved_home
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        url = settings.artifacts_url or settings.artifact_root
        store = cls(url, load_or_create_key(home / "secret.key"), artifact_options(settings))
        if sweep:
            store.sweep_temp_files(settings.lease_ttl)
        return store

    def __reduce__(self) -> tuple[Any, ...]:
        return (ArtifactStore, (self._files, self._key))

    def __repr__(self) -> str:
        return f"ArtifactStore({self._files.url!r})"  # never the key

    root = property(lambda self: self._files.root, doc="``Path``, or ``PurePosixPath`` of a URL.")
    url = property(lambda self: self._files.url, doc="The store as people name it: path or URL.")
    files = property(lambda self: self._files, doc="The file layer (``ArtifactFiles``).")

    def _object(self, digest: str) -> Path:
        return self._files.path("objects", check_digest(digest)[:2], digest)

    def _mac(self, *fields: object) -> str:
        msg = "\n".join(["rayline-v1", *map(str, fields)]).encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    # ---------------------------------------------------------------------------- objects

    def put(self, value: Any) -> ArtifactInfo:
        """Store ``value``: a pyarrow Table or pandas DataFrame as Parquet, anything else pickled.

        Writes nothing if the same bytes are already stored intact; a stored copy that differs
        (damaged on disk) or whose manifest fails its signature is rewritten. A large array,
        table or byte string (``size_hint`` of 1 MiB or more) is encoded straight into its file
        and hashed as it is written: its bytes are never built in memory first.

        Raises:
            StoreError: the write failed (e.g. disk full); nothing partial is left in place.
        """
        hint = size_hint(value)
        if hint is not None and hint >= STREAM_MIN:
            write = self._files.open_write()
            try:
                fmt, kind = encode(value, write)
            except BaseException as e:
                write.discard()
                if isinstance(e, OSError):  # the disk refused the streamed bytes (full, read-only)
                    raise write_error(write.temp or self.root, e) from e
                raise
            return self._publish(write.digest, write.size, fmt, kind, write)
        data, fmt, kind = to_bytes(value)
        return self._put(data, fmt, kind)

    def put_bytes(self, data: bytes, fmt: str = "bytes") -> ArtifactInfo:
        """Store already-serialised bytes; ``get`` decodes ``pickle``/``parquet``, else bytes."""
        return self._put(bytes(data), validate_name(fmt), "bytes")

    def _put(self, data: bytes, fmt: str, kind: str) -> ArtifactInfo:
        return self._publish(hashlib.sha256(data).hexdigest(), len(data), fmt, kind, data)

    def _publish(self, digest: str, size: int, fmt: str, kind: str, data: bytes | HashedWrite) -> ArtifactInfo:
        """Place the object (unless an intact copy is there), then its signed manifest."""
        path = self._object(digest)
        manifest = path.with_name(f"{digest}.json")
        info = ArtifactInfo(digest, size, fmt)
        m, d = self._files.stat(manifest), self._files.stat(path)
        intact = d is not None and d[0] == size and self._intact(path, digest)
        written = isinstance(data, HashedWrite)
        if intact and m is not None and m[0] and _passes(self._manifest, digest):
            if written:
                data.discard()
            return info  # already stored intact: nothing to write
        if m is not None and d is not None:
            log.warning("artifact %s in %s was damaged; rewriting it", digest, self.url)
        if intact and written:
            data.discard()
        elif written:
            self._files.place(data, path, sync=True)
        elif not intact:
            self._files.write(path, data, sync=True)
        record = {
            "digest": digest, "size": size, "format": fmt,
            "created": datetime.now(UTC).isoformat(), "type": kind,
            "hmac": self._mac("object", digest, size, fmt, kind),
        }  # fmt: skip
        self._files.write(manifest, json.dumps(record).encode(), sync=True)
        if os.environ.get("RAYLINE_DB_SYNC", "").lower() == "full":
            self._files.sync_dir(path.parent)  # power-loss durability of the names, as asked
        return info

    def _intact(self, path: Path, digest: str) -> bool:
        try:
            return hashlib.sha256(self._files.read(path)).hexdigest() == digest
        except (FileNotFoundError, StoreError):
            return False

    def _manifest(self, digest: str) -> tuple[Path, dict[str, Any]]:
        path = self._object(digest)
        where = path.with_name(f"{digest}.json")
        try:
            raw = self._files.read(where)
        except FileNotFoundError:
            raise StoreError(f"no artifact {digest} in {self.url}") from None
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
            data = self._files.read(path)
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
        return from_bytes(data, m["format"], m["type"])

    def get_bytes(self, digest: str) -> bytes:
        """The stored bytes, checked as ``get`` checks them."""
        return self._verified_bytes(digest)[0]

    def exists(self, digest: str) -> bool:
        """Whether the object's manifest is in place (a cheap check; ``verify`` reads it all)."""
        return self._files.stat(self._object(digest).with_name(f"{digest}.json")) is not None

    def verify(self, digest: str) -> bool:
        """Whether the object is present and passes its checksum and signature. Never raises."""
        return _passes(self._verified_bytes, digest)

    def info(self, digest: str) -> ArtifactInfo:
        """Digest, size and format from the object's (signature-checked) manifest."""
        _, m = self._manifest(digest)
        return ArtifactInfo(digest, m["size"], m["format"])

    def discard(self, digest: str) -> None:
        """Remove an object, manifest first.

        ``put`` rewrites a missing, truncated or damaged object by itself; ``rayline store
        verify --repair`` and ``gc`` discard the ones nothing should read any more.
        """
        path = self._object(digest)
        self._files.remove(path.with_name(f"{digest}.json"))
        self._files.remove(path)


    # ------------------------------------------------------------- temp files and listings

    def temp_files(self, *, everywhere: bool = False) -> list[TempFile]:
        """Temp files under ``tmp/`` (or, ``everywhere``, anywhere in the store)."""
        return list(self._files.walk_temp(everywhere))

    def sweep_temp_files(
        self, lease_ttl: float = 30.0, *, everywhere: bool = False, dry_run: bool = False
    ) -> list[TempFile]:
        """Remove the temp files of writers that are gone (``temp_files.writer_gone``).

        Returns what was removed (or, ``dry_run``, what would be). ``everywhere`` also looks
        beside the objects, where older versions of rayline left their temp files.
        """
        now, gone = time.time(), []
        for t in self._files.walk_temp(everywhere):
            if writer_gone(t.writer, mtime=t.mtime, now=now, ttl=lease_ttl):
                if dry_run or self._files.remove(t.path):
                    gone.append(t)
        return gone

    def object_files(self) -> Iterator[tuple[str, tuple[int, float] | None, bool]]:
        """Every object's ``(digest, (size, mtime) of its data or None, has a manifest)``."""
        objects = self.root / "objects"
        for shard in self._files.listdir(objects):
            names = set(self._files.listdir(objects / shard))
            for name in sorted(names):
                digest = name.removesuffix(".json")
                if not DIGEST.fullmatch(digest) or (name == digest and f"{digest}.json" in names):
                    continue  # not an object, or met again through its manifest
                yield digest, self._files.stat(objects / shard / digest), f"{digest}.json" in names


def _passes(check: Callable[[str], object], digest: str) -> bool:
    """Whether ``check(digest)`` (a read that verifies) raises no ``StoreError``."""
    try:
        check(digest)
    except StoreError:
        return False
    return True
