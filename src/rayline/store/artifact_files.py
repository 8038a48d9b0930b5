"""The artifact store's file layer: the few I/O methods every other part goes through.

``ArtifactFiles`` holds the store's root and does every path check and file operation: read,
atomic write (temp file under ``tmp/``), stat, remove, list, find temp files, exclusive create.
``ArtifactStore`` (``artifacts.py``) builds content addressing, signing, the cache and named
pointers on top of these methods only, so that a filesystem behind a URL (fsspec: ``s3://``,
``gs://``, a shared ``file://``) can take this class's place without touching the rest.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rayline.errors import StoreError, UnsafeNameError
from rayline.store.files import READ_FLAGS, WRITE_FLAGS, validate_name, write_atomic, write_error
from rayline.store.temp_files import TempWriter, parse_temp_name

__all__ = ["ArtifactFiles", "TempFile"]


@dataclass(frozen=True, slots=True)
class TempFile:
    """A temp file found in the store: where, how big, last change (epoch s), its writer."""

    path: Path
    size: int
    mtime: float
    writer: TempWriter


class ArtifactFiles:
    """Safe file operations under one root directory (created on first write, mode 0700).

    Names are validated and nothing resolving outside the root, nor any symbolic link, is
    followed.
    """

    __slots__ = ("_base", "_checked", "_root")

    def __init__(self, root: str | Path) -> None:
        self._root = Path(root).expanduser().absolute()
        self._base = self._root.resolve()
        self._checked: set[Path] = set()  # directories already proven to resolve inside root

    @property
    def root(self) -> Path:
        """The store's directory."""
        return self._root

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
        tmp_dir = self._root / "tmp"
        for directory in (tmp_dir, path.parent):
            if directory not in self._checked:  # known to exist (and to be inside): no system call
                self._make_dirs(directory)
                if directory.is_symlink() or not directory.resolve().is_relative_to(self._base):
                    raise UnsafeNameError(f"{directory} leads outside the artifact store {self._root}")
                self._checked.add(directory)
        try:
            write_atomic(path, data, sync=sync, tmp_dir=tmp_dir)
        except FileNotFoundError:  # removed meanwhile: make it again, once
            self._make_dirs(tmp_dir)
            self._make_dirs(path.parent)
            try:
                write_atomic(path, data, sync=sync, tmp_dir=tmp_dir)
            except OSError as e:
                raise write_error(path, e) from e
        except OSError as e:  # EXDEV: tmp/ is on another filesystem; write beside the target
            try:
                write_atomic(path, data, sync=sync)
            except OSError as again:
                raise write_error(path, again) from e

    def _stat(self, path: Path) -> tuple[int, float] | None:
        """(size, mtime) of the regular file at ``path`` (never followed), or None."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        return (st.st_size, st.st_mtime) if stat.S_ISREG(st.st_mode) else None

    def _remove(self, path: Path) -> bool:
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

    def _list(self, directory: Path) -> list[str]:
        """The names in ``directory`` (empty if it does not exist)."""
        try:
            return sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return []

    def _walk_temp(self, everywhere: bool) -> Iterator[TempFile]:
        """Temp files under ``tmp/`` or, ``everywhere``, anywhere in the store."""
        if everywhere:
            found = ((Path(d), n) for d, _dirs, names in os.walk(self._root) for n in names)
        else:
            tmp = self._root / "tmp"
            found = ((tmp, n) for n in self._list(tmp))
        for directory, name in found:
            writer = parse_temp_name(name)
            path = directory / name
            st = self._stat(path) if writer is not None else None
            if st is not None:
                yield TempFile(path, st[0], st[1], writer)

    def _create(self, path: Path) -> None:
        """Create the empty file ``path`` exclusively (FileExistsError if it is there)."""
        os.close(os.open(path, WRITE_FLAGS, 0o600))

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
