"""Quarantine: move an unreadable input file aside, next to the data, with the reason.

``<dataset root>/_quarantine/<relative path with '/' as '__'>`` receives the file and
``<same name>.reason.txt`` says why (pyarrow's message, when, which run). The folder starts with
``_``, so readers skip it; nothing depends on ``RAYLINE_HOME``, so the data's owner finds the
file where the data lives. Works on any fsspec filesystem (local moves are atomic renames).

Example::

    moved = quarantine_file(fs, "/data/part-3.parquet", "/data", "magic bytes not found")
    moved.moved_to   # '/data/_quarantine/part-3.parquet'
"""

from __future__ import annotations

import os
import posixpath
import time
from dataclasses import dataclass
from typing import Any

QUARANTINE_DIR = "_quarantine"


@dataclass(frozen=True, slots=True)
class QuarantinedFile:
    """A file set aside: where it was, where it is now, and why."""

    path: str
    moved_to: str
    reason: str


def reason_of(exc: BaseException) -> str:
    """pyarrow's own words for why a file is unreadable, on one line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:500]


def _flat_name(path: str, root: str) -> str:
    rel = posixpath.relpath(path, root) if path.startswith(root.rstrip("/") + "/") else posixpath.basename(path)
    return rel.replace("/", "__")


def quarantine_file(fs: Any, path: str, root: str, reason: str, *, context: str = "") -> QuarantinedFile:
    """Move ``path`` (on fsspec filesystem ``fs``) into ``root/_quarantine/`` with a reason file.

    The reason file is written first, so an interruption never leaves an unexplained file.
    An existing file of the same name is never overwritten: a timestamp suffix is added.
    """
    qdir = posixpath.join(root.rstrip("/") or "/", QUARANTINE_DIR)
    fs.makedirs(qdir, exist_ok=True)
    target = posixpath.join(qdir, _flat_name(path, root))
    if fs.exists(target):
        target = f"{target}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
    text = (
        f"file: {path}\n"
        f"reason: {reason}\n"
        f"quarantined_at: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n"
        + (f"by: {context}\n" if context else "")
        + "to restore: fix or re-export the file, then move it back next to the others\n"
    )
    fs.pipe_file(target + ".reason.txt", text.encode())
    if _is_local(fs):
        os.replace(path, target)  # atomic on one filesystem
    else:
        fs.mv(path, target)
    return QuarantinedFile(path=path, moved_to=target, reason=reason)


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


__all__ = ["QUARANTINE_DIR", "QuarantinedFile", "quarantine_file", "reason_of"]
