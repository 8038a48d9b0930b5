"""The new-data trigger: a run when the files under a path or glob change, once per snapshot.

Each poll (every ``interval`` seconds, default 1 s) takes a *snapshot*: the sorted list of files
with their sizes and modification times (for remote filesystems through fsspec: sizes and ETags
or checksums where the store has them), hashed with SHA-256. The snapshot hash is the run key
(``<flow>/new_data@<hash>``), so the same data never trains twice: not after a restart, not with
two schedulers, not when files are touched back to an older state.

Bursts coalesce: a changed snapshot fires only after it has stayed the same for ``debounce``
seconds (default 1 s), so 100 files landing within a second make one run, not 100. The default
overlap policy is ``queue``: data that lands while the flow is training waits as one queued run;
later snapshots replace nothing and are tried again once the queue has room.

Which files count: every regular file under a directory (recursively), or every file a glob
matches (``**`` recurses), except names that start with ``.`` or ``_`` (hidden files, Spark's
``_SUCCESS`` and ``_temporary``) or end with ``.tmp``/``.part``: write to such a name and rename,
and a half-written file never fires a run. A missing path is an empty snapshot, which never
fires. Relative paths are resolved against the directory of the file that declares the trigger.

The run records why it fired: ``trigger = {"kind": "new_data", "path": ..., "snapshot": hash,
"files": n, "bytes": total, "reason": ...}``; a flow that declares a ``snapshot`` parameter
receives the hash. The flow reads its input itself (e.g. with ``read_parquet``'s incremental
watermark), so a run may see files that landed after its snapshot was taken.

Example::

    @flow(schedule=NewData("data/incoming/*.parquet"))
    def retrain(snapshot: str = ""):
        ...
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from rayline.errors import DefinitionError
from rayline.triggers.policy import parse_overlap
from rayline.triggers.trigger import Fire, Poll

__all__ = ["NewData", "Snapshot", "take_snapshot"]

_GLOB_CHARS = frozenset("*?[")
_SKIP_SUFFIXES = (".tmp", ".part", ".crdownload")
_ETAG_KEYS = ("ETag", "etag", "md5", "md5Hash", "crc32c", "LastModified", "last_modified", "mtime", "updated")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The files under a path at one moment: their hash, count and total size."""

    digest: str
    files: int
    bytes: int


def _counted(name: str) -> bool:
    return not (name.startswith((".", "_")) or name.endswith(_SKIP_SUFFIXES))


def _walk(root: str, out: list[tuple[str, int, int]], base: str) -> None:
    try:
        entries = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    for e in entries:
        if not _counted(e.name):
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                _walk(e.path, out, base)
            elif e.is_file():
                st = e.stat()
                out.append((os.path.relpath(e.path, base), st.st_size, st.st_mtime_ns))
        except FileNotFoundError:  # removed while we looked: it is simply not in this snapshot
            continue


def _local_entries(path: str) -> list[tuple[str, str, str]]:
    found: list[tuple[str, int, int]] = []
    if _GLOB_CHARS & set(path):
        for name in glob.glob(path, recursive=True):
            parts = Path(name).parts[len(Path(path.split("*")[0]).parts) :]
            if not all(_counted(p) for p in parts) or not os.path.isfile(name):
                continue
            try:
                st = os.stat(name)
            except FileNotFoundError:
                continue
            found.append((name, st.st_size, st.st_mtime_ns))
    elif os.path.isdir(path):
        _walk(path, found, path)
    elif os.path.isfile(path):
        st = os.stat(path)
        found.append((os.path.basename(path), st.st_size, st.st_mtime_ns))
    return [(name, str(size), str(mtime)) for name, size, mtime in found]


def _remote_entries(url: str) -> list[tuple[str, str, str]]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    infos = fs.glob(root, detail=True) if _GLOB_CHARS & set(root) else fs.find(root, detail=True)
    out = []
    for name, info in sorted(infos.items()):
        if info.get("type") == "directory" or not _counted(os.path.basename(name)):
            continue
        tag = next((str(info[k]) for k in _ETAG_KEYS if info.get(k) is not None), "")
        out.append((name, str(info.get("size", "")), tag))
    return out


def take_snapshot(path: str) -> Snapshot:
    """Hash the files under ``path`` (a directory, a file, a glob, or an fsspec URL).

    Example::

        take_snapshot("data/incoming/*.parquet")   # Snapshot(digest='3f9a…', files=12, bytes=…)
    """
    entries = _remote_entries(path) if "://" in path else _local_entries(path)
    entries.sort()
    h = hashlib.sha256(path.encode())
    total = 0
    for name, size, tag in entries:
        h.update(f"\0{name}\0{size}\0{tag}".encode())
        total += int(size) if size.isdigit() else 0
    return Snapshot(h.hexdigest(), len(entries), total)


@dataclass(frozen=True)
class NewData:
    """Fire when the snapshot of ``path`` changes and then holds still for ``debounce`` s.

    Args:
        path: a directory, file, glob (``data/*.parquet``, ``data/**/part-*``) or fsspec URL.
        interval: seconds between polls (default 1).
        debounce: seconds a changed snapshot must stay unchanged before it fires (default 1).
        overlap: ``queue`` (default), ``skip`` or ``allow``.
        min_files: snapshots with fewer files never fire (default 1: an empty path is quiet).
        params: flow parameters for the runs it starts.
    """

    path: str
    interval: float = 1.0
    debounce: float = 1.0
    overlap: str = "queue"
    min_files: int = 1
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    kind: ClassVar[str] = "new_data"

    def __post_init__(self) -> None:
        if not self.path:
            raise DefinitionError("NewData needs a path, glob or URL to watch")
        if self.interval <= 0 or self.debounce < 0:
            raise DefinitionError(f"NewData({self.path!r}): interval must be > 0 and debounce >= 0")
        object.__setattr__(self, "path", str(self.path))
        object.__setattr__(self, "overlap", parse_overlap(self.overlap, f"NewData({self.path!r}): "))
        object.__setattr__(self, "params", dict(self.params))

    def resolved(self, base: Path) -> NewData:
        """This trigger with a relative local path made absolute against ``base``."""
        if "://" in self.path:
            return self
        path = os.path.expanduser(self.path)
        return replace(self, path=path if os.path.isabs(path) else str(base / path))

    @property
    def key(self) -> str:
        return f"new_data:{self.path}"

    def describe(self) -> str:
        return f"new data under {self.path} (every {self.interval:g} s, debounce {self.debounce:g} s)"

    def poll(self, now: datetime, state: Mapping[str, Any]) -> Poll:
        """Snapshot the path; fire once it changed, held still for ``debounce`` s, and was
        never fired before. ``state``: ``seen`` (last hash), ``changed_at`` (when it last
        changed, scheduler clock), ``fired`` (last hash that got a run), ``skipped``."""
        snap = take_snapshot(self.path)
        st = dict(state)
        t = now.timestamp()
        every = timedelta(seconds=self.interval)
        if snap.digest != st.get("seen"):
            st.update(seen=snap.digest, changed_at=t, files=snap.files, bytes=snap.bytes)
        quiet_for = t - float(st.get("changed_at", t))
        if quiet_for < self.debounce:
            wait = timedelta(seconds=self.debounce - quiet_for)
            return Poll((), st, now + min(every, wait))
        if snap.files < self.min_files or snap.digest == st.get("fired"):
            return Poll((), st, now + every)
        previous = st.get("fired")
        reason = (f"{snap.files} file(s), {snap.bytes} bytes under {self.path}: a snapshot not "
                  f"trained before (unchanged for {quiet_for:.1f} s)")  # fmt: skip
        info = {"kind": "new_data", "path": self.path, "snapshot": snap.digest, "files": snap.files,
                "bytes": snap.bytes, "previous_snapshot": previous}  # fmt: skip
        fire = Fire(
            run_key=f"new_data@{snap.digest[:40]}",
            reason=reason,
            info=info,
            offer={"snapshot": snap.digest},
            record_skip=st.get("skipped") != snap.digest,  # one SKIPPED record per snapshot
            skip_takes_key=False,  # skipped data is not used up: it runs when there is room
        )
        return Poll((fire,), st, now + every)

    def settle(self, state: dict[str, Any], fire: Fire, action: str) -> dict[str, Any]:
        digest = fire.info["snapshot"]
        if action == "skipped":
            return {**state, "skipped": digest}  # not used up: it fires again when there is room
        out = {**state, "fired": digest}
        out.pop("skipped", None)
        return out
