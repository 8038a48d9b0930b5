"""The artifact store's files behind an fsspec URL: ``s3://``, ``gs://``, ``abfs://``, ``memory://``.

On object storage one PUT of a whole object is atomic (a multipart upload too: the object
appears only when it completes), so a write is a single ``pipe_file`` of the bytes: no temp file,
no rename. A reader sees the old object, the new one or none. The artifact store writes an
object's bytes first and its manifest last, so an object without its manifest is invisible.

The filesystem is built on first use in each process (``fsspec.core.url_to_fs(url, **options)``)
and never pickled: a Ray worker gets the URL and the options, and credentials the options do not
carry come from that node's own environment (``AWS_*`` variables, instance roles, ``~/.aws``).
Directory listings are never served from fsspec's cache: other nodes write the same bucket.

Example::

    files = FsspecFiles("s3://bucket/rayline", {"endpoint_url": "http://127.0.0.1:9000"})
    files.write(files.path("objects", "ab", "abcd…"), b"…", sync=True)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from rayline.errors import StoreError
from rayline.store.artifact_files import HashedWrite, TempFile
from rayline.store.files import validate_name

__all__ = ["FsspecFiles"]

#: Filesystems without directories: nothing to make before a write.
FLAT = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "memory", "oss", "r2"})


class FsspecFiles:
    """The ``ArtifactFiles`` methods over an fsspec filesystem rooted at ``url``.

    Args:
        url: e.g. ``s3://bucket/prefix``.
        options: fsspec storage options (``RAYLINE_ARTIFACTS_OPTIONS``), e.g. ``endpoint_url``,
            ``key``/``secret``, ``client_kwargs``.
    """

    __slots__ = ("_fs", "_made", "_options", "_root", "_url")

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self._url = url.rstrip("/")
        self._options = dict(options or {})
        self._fs: Any = None
        self._root: PurePosixPath | None = None
        self._made: set[PurePosixPath] = set()

    def __reduce__(self) -> tuple[Any, ...]:
        return (FsspecFiles, (self._url, self._options))

    def __repr__(self) -> str:
        return f"FsspecFiles({self._url!r})"  # never the options: they may hold credentials

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (built on first use in this process)."""
        if self._fs is None:
            from fsspec.core import url_to_fs

            try:
                fs, root = url_to_fs(self._url, **self._options)
            except (ImportError, ValueError) as exc:
                raise StoreError(
                    f"cannot open the artifact store {self._url}: {exc}. For s3:// install "
                    "rayline[s3] (s3fs), gs:// rayline[gcs] (gcsfs), abfs:// rayline[azure] (adlfs)"
                ) from exc
            self._root = PurePosixPath(root)
            self._fs = fs
        return self._fs

    @property
    def protocol(self) -> str:
        p = self.fs.protocol
        return p if isinstance(p, str) else p[0]

    @property
    def root(self) -> PurePosixPath:
        self.fs  # noqa: B018 (resolves the root)
        assert self._root is not None
        return self._root

    @property
    def url(self) -> str:
        return self._url

    @property
    def options(self) -> dict[str, Any]:
        return dict(self._options)

    def path(self, *parts: str) -> PurePosixPath:
        for part in parts:
            validate_name(part)
        return self.root.joinpath(*parts)

    def _error(self, what: str, path: PurePosixPath, exc: Exception) -> StoreError:
        return StoreError(f"could not {what} {self._url}/{path.relative_to(self.root)}: {exc}")

    def read(self, path: PurePosixPath) -> bytes:
        try:
            return self.fs.cat_file(str(path))
        except FileNotFoundError:
            raise
        except Exception as exc:  # botocore, aiohttp, gcsfs errors: all are a failed read
            raise self._error("read", path, exc) from exc

    def write(self, path: PurePosixPath, data: bytes, *, sync: bool) -> None:
        self.make_dirs(path.parent)
        try:
            self.fs.pipe_file(str(path), bytes(data))
        except Exception as exc:
            raise self._error("write", path, exc) from exc

    def open_write(self) -> HashedWrite:
        """A write kept in memory until ``place`` PUTs it whole."""
        return HashedWrite()

    def place(self, write: HashedWrite, path: PurePosixPath, *, sync: bool) -> None:
        data, write.chunks = b"".join(write.chunks), []
        self.write(path, data, sync=sync)

    def stat(self, path: PurePosixPath) -> tuple[int, float] | None:
        self.fs.invalidate_cache(str(path))
        try:
            info = self.fs.info(str(path))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._error("stat", path, exc) from exc
        if info.get("type") != "file":
            return None
        return int(info.get("size") or 0), mtime_of(info)

    def remove(self, path: PurePosixPath) -> bool:
        if self.stat(path) is None:
            return False
        try:
            self.fs.rm_file(str(path))
        except FileNotFoundError:
            return False
        except PermissionError:
            return False
        except Exception as exc:
            raise self._error("remove", path, exc) from exc
        return True

    def listdir(self, directory: PurePosixPath) -> list[str]:
        self.fs.invalidate_cache(str(directory))
        try:
            found = self.fs.ls(str(directory), detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except Exception as exc:
            raise self._error("list", directory, exc) from exc
        return sorted({PurePosixPath(p).name for p in found if PurePosixPath(p) != directory})

    def walk_temp(self, everywhere: bool) -> Iterator[TempFile]:
        return iter(())  # writes are single atomic PUTs: there are no temp files

    def make_dirs(self, directory: PurePosixPath) -> None:
        if self.protocol in FLAT or directory in self._made:
            return
        try:
            self.fs.makedirs(str(directory), exist_ok=True)
        except Exception as exc:
            raise self._error("make", directory, exc) from exc
        self._made.add(directory)

    def sync_dir(self, directory: PurePosixPath) -> None:
        return None  # an object is durable once its PUT returns


def mtime_of(info: dict[str, Any]) -> float:
    """Last change of an fsspec ``info`` record (epoch s); now when the filesystem gives none,
    so that ``gc`` treats it as young rather than old."""
    for key in ("LastModified", "mtime", "last_modified", "updated", "modified", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return time.time()
