"""The artifact store's file layer: the few I/O methods every other part goes through.

``ArtifactFiles`` is that interface: read, atomic write, stat, remove, list, find temp files,
exclusive create, path checks, all under one root. ``ArtifactStore`` (``artifacts.py``) builds
content addressing, signing, the cache and named pointers on these methods only. Two
implementations:

- ``LocalFiles`` (here): a local or shared POSIX folder (a plain path or ``file://``); every
  write goes to a temp file under ``tmp/``, is fsynced and ``os.replace``d into place;
- ``FsspecFiles`` (``artifact_fsspec.py``): any other fsspec URL (``s3://``, ``gs://``,
  ``abfs://``), where one PUT of a whole object is atomic.

``artifact_location.files_for(url, options)`` picks one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from rayline.errors import StoreError, UnsafeNameError
from rayline.store.files import (
    READ_FLAGS,
    WRITE_FLAGS,
    fsync_dir,
    validate_name,
    write_atomic,
    write_error,
)
from rayline.store.temp_files import TempWriter, parse_temp_name, temp_name

__all__ = ["ArtifactFiles", "HashedWrite", "LocalFiles", "TempFile"]


@dataclass(frozen=True, slots=True)
class TempFile:
    """A temp file found in the store: where, how big, last change (epoch s), its writer."""

    path: Path | PurePosixPath
    size: int
    mtime: float
    writer: TempWriter


class HashedWrite:
    """A write in progress whose bytes are hashed (sha256) as they are written, so that a large
    value is read once: into a temp file (``fd``, at ``temp``) or, for object storage, into
    memory until its one PUT. ``ArtifactFiles.place`` publishes it; ``discard`` drops it.

    Small writes (a pickle's opcodes) are gathered into ``BLOCK``-sized system calls; a large
    one (an array's buffer) goes from the value's memory to the file, after the gathered bytes
    are topped up from its head."""

    BLOCK = 1 << 20
    __slots__ = ("_hash", "_pending", "chunks", "fd", "size", "temp")

    def __init__(self, fd: int | None = None, temp: Path | None = None) -> None:
        self._hash = hashlib.sha256()
        self._pending = bytearray()
        self.fd, self.temp = fd, temp
        self.chunks: list[bytes] = []
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        n = view.nbytes
        self._hash.update(view)
        self.size += n
        if self.fd is None:
            self.chunks.append(bytes(view))  # the value's own buffers may change after put
            return n
        if len(self._pending) + n < self.BLOCK:
            self._pending += view
            return n
        if self._pending:
            head = self.BLOCK - len(self._pending)
            self._pending += view[:head]
            view = view[head:]
            self._flush()
        while view:
            view = view[os.write(self.fd, view) :]
        return n

    def _flush(self) -> None:
        view, self._pending = memoryview(self._pending), bytearray()
        while view:
            view = view[os.write(self.fd, view) :]  # type: ignore[arg-type]

    @property
    def digest(self) -> str:
        """The sha256 of everything written (hex)."""
        return self._hash.hexdigest()

    def close(self, *, sync: bool = False) -> None:
        if self.fd is not None and self.fd >= 0:
            try:
                self._flush()
            except BaseException:
                os.close(self.fd)
                self.fd = -1
                raise
            fd, self.fd = self.fd, -1
            try:
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)

    def discard(self) -> None:
        """Drop what was written (the temp file is removed)."""
        self._pending = bytearray()
        self.close()
        self.chunks = []
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)


class ArtifactFiles(Protocol):
    """What the artifact store asks of a filesystem. Paths are ``root / name / …`` values
    (``Path`` locally, ``PurePosixPath`` of ``bucket/prefix/…`` behind a URL); every name
    passed to ``path`` is validated. Instances pickle small (a path or a URL and its options)."""

    @property
    def root(self) -> Any:
        """The store's root (``Path`` or ``PurePosixPath``)."""

    @property
    def url(self) -> str:
        """The root as people and other nodes name it: a local path or ``s3://bucket/prefix``."""

    def path(self, *parts: str) -> Any:
        """``root/parts…``, each part a safe name (``files.validate_name``)."""

    def read(self, path: Any) -> bytes:
        """The file's bytes; FileNotFoundError if it is absent, StoreError if unreadable."""

    def write(self, path: Any, data: bytes, *, sync: bool) -> None:
        """Place ``data`` at ``path`` atomically: a reader sees the old file, the new one or
        none, never part of one. StoreError if it fails (nothing partial is left)."""

    def open_write(self) -> HashedWrite:
        """A write whose bytes are hashed as they go (for a value streamed out by its encoder)."""

    def place(self, write: HashedWrite, path: Any, *, sync: bool) -> None:
        """Publish ``write`` at ``path`` atomically, as ``write`` does; StoreError if it fails
        (the write is discarded either way)."""

    def stat(self, path: Any) -> tuple[int, float] | None:
        """``(size, mtime)`` of the regular file at ``path``, or None."""

    def remove(self, path: Any) -> bool:
        """Remove ``path``; False if it was not there or cannot be removed."""

    def listdir(self, directory: Any) -> list[str]:
        """The names in ``directory``, sorted (empty if it does not exist)."""

    def walk_temp(self, everywhere: bool) -> Iterator[TempFile]:
        """Temp files under ``tmp/`` (``everywhere``: anywhere under the root)."""

    def make_dirs(self, directory: Any) -> None:
        """Make ``directory`` and its parents where the filesystem has directories."""

    def sync_dir(self, directory: Any) -> None:
        """Make the names in ``directory`` durable where the filesystem needs it."""


class LocalFiles:
    """Safe file operations under one local root directory (created on first write, mode 0700).

    Names are validated and nothing resolving outside the root, nor any symbolic link, is
    followed.
    """

    __slots__ = ("_base", "_checked", "_root")

    def __init__(self, root: str | Path) -> None:
        self._root = Path(root).expanduser().absolute()
        self._base = self._root.resolve()
        self._checked: set[Path] = set()  # directories already proven to resolve inside root

    def __reduce__(self) -> tuple[Any, ...]:
        return (LocalFiles, (self._root,))

    @property
    def root(self) -> Path:
        """The store's directory."""
        return self._root

    @property
    def url(self) -> str:
        return str(self._root)

    def path(self, *parts: str) -> Path:
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

    def make_dirs(self, directory: Path) -> None:
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

    def _inside(self, *directories: Path) -> None:
        """Make ``directories`` (once per process) and refuse any that leads outside the root."""
        for directory in directories:
            if directory not in self._checked:  # known to exist (and to be inside): no system call
                self.make_dirs(directory)
                if directory.is_symlink() or not directory.resolve().is_relative_to(self._base):
                    raise UnsafeNameError(f"{directory} leads outside the artifact store {self._root}")
                self._checked.add(directory)

    def open_write(self) -> HashedWrite:
        """A temp file under ``tmp/`` (named after its writer, as ``write``'s are)."""
        tmp = self._root / "tmp" / temp_name()
        self._inside(tmp.parent)
        try:
            try:
                return HashedWrite(os.open(tmp, WRITE_FLAGS, 0o600), tmp)
            except FileNotFoundError:  # removed meanwhile: make it again, once
                self.make_dirs(tmp.parent)
                return HashedWrite(os.open(tmp, WRITE_FLAGS, 0o600), tmp)
        except OSError as e:
            raise write_error(tmp, e) from e

    def place(self, write: HashedWrite, path: Path, *, sync: bool) -> None:
        """fsync (``sync``) and rename the temp file to ``path``."""
        assert write.temp is not None, "not a local write"
        try:
            self._inside(path.parent)
            write.close(sync=sync)
            os.replace(write.temp, path)
        except OSError as e:
            write.discard()
            raise write_error(path, e) from e
        except BaseException:
            write.discard()
            raise

    def write(self, path: Path, data: bytes, *, sync: bool) -> None:
        tmp_dir = self._root / "tmp"
        self._inside(tmp_dir, path.parent)
        try:
            write_atomic(path, data, sync=sync, tmp_dir=tmp_dir)
        except FileNotFoundError:  # removed meanwhile: make it again, once
            self.make_dirs(tmp_dir)
            self.make_dirs(path.parent)
            try:
                write_atomic(path, data, sync=sync, tmp_dir=tmp_dir)
            except OSError as e:
                raise write_error(path, e) from e
        except OSError as e:  # EXDEV: tmp/ is on another filesystem; write beside the target
            try:
                write_atomic(path, data, sync=sync)
            except OSError as again:
                raise write_error(path, again) from e

    def stat(self, path: Path) -> tuple[int, float] | None:
        """(size, mtime) of the regular file at ``path`` (never followed), or None."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        return (st.st_size, st.st_mtime) if stat.S_ISREG(st.st_mode) else None

    def remove(self, path: Path) -> bool:
        """Remove ``path``; False if it was already gone or cannot be removed (read-only)."""
        try:
            os.unlink(path)
        except (FileNotFoundError, PermissionError):
            return False
        except OSError as e:
            if e.errno == errno.EROFS:
                return False
            raise StoreError(f"could not remove {path}: {e.strerror}") from e
        return True

    def listdir(self, directory: Path) -> list[str]:
        """The names in ``directory`` (empty if it does not exist)."""
        try:
            return sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return []

    def walk_temp(self, everywhere: bool) -> Iterator[TempFile]:
        """Temp files under ``tmp/`` or, ``everywhere``, anywhere in the store."""
        if everywhere:
            found = ((Path(d), n) for d, _dirs, names in os.walk(self._root) for n in names)
        else:
            tmp = self._root / "tmp"
            found = ((tmp, n) for n in self.listdir(tmp))
        for directory, name in found:
            writer = parse_temp_name(name)
            path = directory / name
            st = self.stat(path) if writer is not None else None
            if st is not None:
                yield TempFile(path, st[0], st[1], writer)

    def read(self, path: Path) -> bytes:
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

    def sync_dir(self, directory: Path) -> None:
        fsync_dir(directory)
