"""Whole-store scans of the artifact store: verify every object, collect the garbage.

``scan_store`` reads every object once and sorts it: intact, *damaged* (its manifest is there
but the bytes or the manifest fail their checks, or the bytes are missing), *incomplete* (bytes
without a manifest: a write that crashed in between; invisible to readers) or *orphaned* (intact,
but nothing refers to it). What refers to an object: the digests the caller passes (the run
store's tasks, the model registry), the cache index and named pointers, and — transitively — any
digest written inside a referenced object's bytes (a registered model names its estimator's
artifact that way). The scan is conservative: anything that looks like a reference keeps an
object alive.

``collect_garbage`` removes temp files of writers that are gone, incomplete objects and orphaned
ones, but never an object changed within ``min_age_s`` (a task may have just written it and its
driver not yet recorded it).

Example::

    report = scan_store(store, runs.referenced_digests())
    [p.digest for p in report.damaged]
    collect_garbage(store, runs.referenced_digests(), lease_ttl=30.0, dry_run=True).bytes_freed
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rayline.errors import StoreError
from rayline.store.artifacts import ArtifactStore

__all__ = ["GcReport", "ObjectProblem", "ScanReport", "collect_garbage", "scan_store"]

_DIGEST_BYTES = re.compile(rb"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
#: Objects up to this size are read for digests they mention (models, feature transforms).
_FOLLOW_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ObjectProblem:
    """An object that fails a check: ``kind`` is ``damaged`` or ``incomplete``."""

    digest: str
    kind: str
    detail: str
    size: int
    mtime: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "kind": self.kind, "detail": self.detail, "size": self.size}


@dataclass
class ScanReport:
    """What ``scan_store`` found."""

    objects: int = 0
    bytes: int = 0
    damaged: list[ObjectProblem] = field(default_factory=list)
    incomplete: list[ObjectProblem] = field(default_factory=list)
    orphaned: list[tuple[str, int, float]] = field(default_factory=list)  # digest, size, mtime
    broken_pointers: list[tuple[str, tuple[str, ...], str | None]] = field(default_factory=list)
    referenced: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {
            "objects": self.objects, "bytes": self.bytes,
            "damaged": [p.as_dict() for p in self.damaged],
            "incomplete": [p.as_dict() for p in self.incomplete],
            "orphaned": [{"digest": d, "size": s} for d, s, _ in self.orphaned],
            "broken_pointers": [{"kind": k, "name": "/".join(w), "digest": d}
                                for k, w, d in self.broken_pointers],
        }  # fmt: skip


def scan_store(store: ArtifactStore, referenced: Iterable[str]) -> ScanReport:
    """Read and check every object of ``store``; sort out damaged, incomplete and orphaned ones.

    ``referenced``: digests something outside the store refers to (runs, the model registry).
    """
    report = ScanReport()
    roots = {d for d in referenced if d}
    intact: dict[str, tuple[int, float]] = {}
    for digest, data, has_manifest in store.object_files():
        size, mtime = data if data is not None else (0, None)
        if not has_manifest:
            report.incomplete.append(ObjectProblem(digest, "incomplete", "bytes without a manifest", size, mtime))
            continue
        report.objects += 1
        report.bytes += size
        try:
            store.get_bytes(digest)
        except StoreError as exc:
            report.damaged.append(ObjectProblem(digest, "damaged", str(exc), size, mtime))
            continue
        intact[digest] = (size, mtime or 0.0)
    for kind, where, digest in store.pointers():
        if digest is None or digest not in intact:
            report.broken_pointers.append((kind, where, digest))
        if digest is not None:
            roots.add(digest)
    report.referenced = _follow(store, roots, intact)
    report.orphaned = [(d, s, m) for d, (s, m) in sorted(intact.items()) if d not in report.referenced]
    return report


def _follow(store: ArtifactStore, roots: set[str], intact: dict[str, tuple[int, float]]) -> set[str]:
    """``roots`` and every digest mentioned, transitively, inside their intact objects."""
    seen, stack = set(roots), list(roots)
    while stack:
        digest = stack.pop()
        if digest not in intact or intact[digest][0] > _FOLLOW_LIMIT:
            continue
        try:
            data = store.get_bytes(digest)
        except StoreError:
            continue
        for found in _DIGEST_BYTES.findall(data):
            d = found.decode("ascii")
            if d not in seen:
                seen.add(d)
                stack.append(d)
    return seen


@dataclass
class GcReport:
    """What ``collect_garbage`` removed (or, in a dry run, would remove)."""

    dry_run: bool
    temp_files: list[tuple[str, int]] = field(default_factory=list)  # path, size
    objects: list[tuple[str, int, str]] = field(default_factory=list)  # digest, size, why
    kept_young: int = 0

    @property
    def bytes_freed(self) -> int:
        return sum(s for _, s in self.temp_files) + sum(s for _, s, _ in self.objects)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run, "bytes_freed": self.bytes_freed,
            "temp_files": [{"path": p, "size": s} for p, s in self.temp_files],
            "objects": [{"digest": d, "size": s, "why": w} for d, s, w in self.objects],
            "kept_young": self.kept_young,
        }  # fmt: skip


def collect_garbage(
    store: ArtifactStore, referenced: Iterable[str], *, lease_ttl: float, min_age_s: float = 3600.0,
    dry_run: bool = False,
) -> GcReport:  # fmt: skip
    """Remove dead writers' temp files (anywhere in the store), incomplete objects and objects
    nothing refers to; objects changed within ``min_age_s`` stay. ``dry_run`` removes nothing."""
    report = GcReport(dry_run)
    for t in store.sweep_temp_files(lease_ttl, everywhere=True, dry_run=dry_run):
        report.temp_files.append((str(t.path), t.size))
    scan = scan_store(store, referenced)
    cutoff = time.time() - min_age_s
    doomed = [(p.digest, p.size, p.mtime, "incomplete") for p in scan.incomplete]
    doomed += [(d, s, m, "unreferenced") for d, s, m in scan.orphaned]
    for digest, size, mtime, why in doomed:
        if mtime is not None and mtime > cutoff:
            report.kept_young += 1
            continue
        if not dry_run:
            store.discard(digest)
        report.objects.append((digest, size, why))
    return report
