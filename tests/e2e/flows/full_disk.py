"""Flows for the full-disk tests (tests/e2e/test_full_disk.py). ``fills``: ``small`` then ``big``,
whose output (``size`` bytes) does not fit the test's tiny filesystem. ``hogs``: ``small`` then
``hog``, which fills the filesystem under ``path`` itself (as another program on the machine
would), so every later write of the run, its database's included, finds the disk full. Bodies
are self-contained (a driver loads this file by path)."""

from __future__ import annotations

import errno

from rayline import flow, task


@task
def small() -> int:
    return 1


@task
def big(n: int, size: int) -> bytes:
    return b"x" * size


@flow
def fills(size: int = 3_000_000):
    return big(small(), size)


@task
def hog(n: int, path: str) -> int:
    """Writes ``path`` until the disk is full, and keeps it."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]
                if not chunk:
                    break
    return n


@flow
def hogs(path: str):
    return hog(small(), path)
