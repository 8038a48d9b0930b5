"""Safe file primitives for the stores: names, atomic writes, the HMAC key.

Every name that becomes a path component passes ``validate_name``; every file is written by
``write_atomic`` (temp file in the same directory, fsync, ``os.replace``), so a reader sees a
complete file or none, and a failed write (disk full included) leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import time
from pathlib import Path

from rayline.errors import StoreError, StoreUnusableError, UnsafeNameError
from rayline.store.temp_files import temp_name

KEY_BYTES = 32
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_NAME_RULE = "names must match ^[A-Za-z0-9._-]{1,128}$"
DIGEST = re.compile(r"[0-9a-f]{64}")
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str):
        return f"a name must be a string, not {type(name).__name__}"
    if not name:
        return "it is empty"
    if "\x00" in name:
        return "it contains a NUL byte"
    if "%" in name:
        return "it contains '%' (URL-encoded text such as %2e%2e%2f is refused)"
    if name.startswith("/"):
        return "it is an absolute path"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if name in (".", ".."):
        return "it names a directory ('.' or '..')"
    if len(name) > 128:
        return f"it is {len(name)} characters long (at most 128)"
    if not _NAME.fullmatch(name):
        bad = sorted({c for c in name if not _NAME.fullmatch(c)})
        return f"it contains {''.join(bad)!r}"
    return None


def validate_name(name: str) -> str:
    """Return ``name`` if it is safe as one path component of a store; raise otherwise.

    Safe means ``^[A-Za-z0-9._-]{1,128}$`` and not ``.`` or ``..``: no separators, no absolute
    paths, no NUL, no ``%`` (so no URL-encoded traversal such as ``%2e%2e%2f``).

    Raises:
        UnsafeNameError: naming the bad name and the rule it breaks.
    """
    problem = _name_problem(name)
    if problem:
        raise UnsafeNameError(f"unsafe name {name!r}: {problem}; {_NAME_RULE}")
    return name


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is 64 lowercase hex digits; raise UnsafeNameError otherwise."""
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise UnsafeNameError(f"{digest!r} is not an artifact digest (64 lowercase hex digits)")
    return digest


_UNUSABLE = (errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM)  # the disk, not the caller, is wrong


def write_error(path: Path, e: OSError) -> StoreError:
    """A StoreError for a failed write of ``path``; disk-full says so and what to do. A disk
    that is full, read-only or failing is a ``StoreUnusableError`` (exit code 4)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreUnusableError(
            f"no space left writing {path} ({e.strerror}); nothing partial was left behind. "
            "Free disk space or point RAYLINE_HOME at a bigger disk, then resume the run"
        )
    kind = StoreUnusableError if e.errno in _UNUSABLE else StoreError
    return kind(f"could not write {path}: {e.strerror or e} (errno {e.errno})")


def write_atomic(path: Path, data: bytes, *, sync: bool, tmp_dir: Path | None = None) -> None:
    """Atomically place ``data`` at ``path``: temp file, write, (fsync), ``os.replace``.

    The temp file (``temp_files.temp_name``: it names its writer's machine, pid and start time)
    sits in ``tmp_dir`` (same filesystem as ``path``) or else beside ``path``, is created
    exclusively without following symlinks, and is removed if anything fails.

    Raises FileNotFoundError (untouched) when a directory is missing; any other OSError
    becomes a StoreError naming ``path``, after the temp file is removed.
    """
    tmp = (tmp_dir or path.parent) / temp_name()
    try:
        fd = os.open(tmp, WRITE_FLAGS, 0o600)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise write_error(path, e) from e
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except OSError as e:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        if isinstance(e, FileNotFoundError) or e.errno == errno.EXDEV:
            raise  # the target's directory is missing, or on another filesystem: the caller acts
        raise write_error(path, e) from e


def fsync_dir(path: Path) -> None:
    """Make renames inside ``path`` durable, where the filesystem allows it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the files themselves are synced
    finally:
        os.close(fd)


def load_or_create_key(path: Path) -> bytes:
    """The HMAC key at ``path``: 32 random bytes, created once (mode 0600) if missing.

    Raises:
        StoreError: the key is a symlink, readable by other users, or not 32 bytes long.
    """
    for _ in range(100):
        try:
            fd = os.open(path, READ_FLAGS)
        except FileNotFoundError:
            _create_key(path)
            continue
        except OSError as e:
            raise StoreError(f"cannot read the artifact key {path}: {e.strerror}") from e
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
                raise StoreError(
                    f"artifact key {path} must be a regular file readable only by its owner "
                    f"(mode {stat.filemode(st.st_mode)}); run `chmod 600 {path}`"
                )
            key = f.read()
        if len(key) == KEY_BYTES:
            return key
        if key:
            raise StoreError(
                f"artifact key {path} is {len(key)} bytes, expected {KEY_BYTES}; it is damaged. "
                "Move it away: artifacts signed with it will no longer load"
            )
        time.sleep(0.01)  # another process created it and is still writing it
    raise StoreError(f"artifact key {path} stayed empty; remove it and try again")


def _create_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(temp_name())
    try:
        write_atomic(tmp, secrets.token_bytes(KEY_BYTES), sync=True)
        try:
            os.link(tmp, path)  # atomic and exclusive: the loser of a race reads the winner's key
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: exclusive create instead
            try:
                fd = os.open(path, WRITE_FLAGS, 0o600)
            except FileExistsError:
                return
            with os.fdopen(fd, "wb") as f:
                f.write(tmp.read_bytes())
                os.fsync(f.fileno())
    finally:
        tmp.unlink(missing_ok=True)
