"""Signed pointers of the artifact store: its cache index and its named pointers.

A pointer is a small file holding ``"<digest> <hmac>"``; the HMAC covers the pointer's kind, its
path under the store's root and the digest, so a pointer copied elsewhere, edited or torn by a
crash reads as absent. ``ArtifactStore`` (``artifacts.py``) has these methods through
``SignedPointers``; they use only its file layer, its ``_mac`` and its object methods.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rayline.errors import StoreError
from rayline.store.files import DIGEST, check_digest, validate_name


class SignedPointers:
    """The cache index (``cache/<k[:2]>/<key>``) and named pointers (``named/<ns>/<name>``)."""

    __slots__ = ()
    # Provided by ArtifactStore: its file layer, root and URL, ``_mac``, ``put``, ``get``, ``verify``.
    _files: Any
    root: Any
    url: Any

    def _put_pointer(self, path: Path, kind: str, digest: str, *, sync: bool) -> None:
        rel = path.relative_to(self.root).as_posix()
        line = f"{digest} {self._mac(kind, rel, digest)}\n"
        self._files.write(path, line.encode(), sync=sync)

    def _get_pointer(self, path: Path, kind: str) -> str | None:
        try:
            digest, mac = self._files.read(path).decode("ascii").split()
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            return None  # absent, or torn by a crash: a miss
        rel = path.relative_to(self.root).as_posix()
        if not DIGEST.fullmatch(digest) or not hmac.compare_digest(
            mac, self._mac(kind, rel, digest)
        ):
            return None
        return digest

    def _cache_path(self, key: str) -> Path:
        return self._files.path("cache", validate_name(key)[:2].replace(".", "_"), key)

    def cache_put(self, key: str, digest: str) -> None:
        """Record that cache ``key`` resolves to the stored object ``digest``."""
        self._put_pointer(self._cache_path(key), "cache", check_digest(digest), sync=False)

    def cache_get(self, key: str) -> str | None:
        """The digest cached under ``key``, or None if absent or if it no longer verifies."""
        digest = self._get_pointer(self._cache_path(key), "cache")
        return digest if digest is not None and self.verify(digest) else None

    def put_named(self, namespace: str, name: str, value: Any) -> Any:
        """Store ``value`` and point ``named/<namespace>/<name>`` at it (replacing any); its
        ``ArtifactInfo``."""
        path = self._files.path("named", namespace, name)
        info = self.put(value)
        self._put_pointer(path, "named", info.digest, sync=True)
        return info

    def named_digest(self, namespace: str, name: str) -> str | None:
        """The digest ``namespace/name`` points at, or None."""
        return self._get_pointer(self._files.path("named", namespace, name), "named")

    def get_named(self, namespace: str, name: str) -> Any:
        """The value stored under ``namespace/name``, checked as ``get`` checks it.

        Raises:
            StoreError: nothing is stored under that name.
        """
        digest = self.named_digest(namespace, name)
        if digest is None:
            raise StoreError(f"no artifact named '{namespace}/{name}' in {self.url}")
        return self.get(digest)

    def pointers(self) -> Iterator[tuple[str, tuple[str, ...], str | None]]:
        """Every cache entry and named pointer: ``(kind, where, digest)``; ``kind`` is
        ``cache`` (``where`` = (key,)) or ``named`` ((namespace, name)); ``digest`` is None
        for an entry that is torn or not signed by this store's key."""
        for shard in self._files.listdir(self.root / "cache"):
            for key in self._files.listdir(self.root / "cache" / shard):
                yield "cache", (key,), self._get_pointer(self.root / "cache" / shard / key, "cache")
        for ns in self._files.listdir(self.root / "named"):
            for name in self._files.listdir(self.root / "named" / ns):
                where = self.root / "named" / ns / name
                yield "named", (ns, name), self._get_pointer(where, "named")

    def cache_remove(self, key: str) -> bool:
        """Remove cache entry ``key``; False if there was none."""
        return self._files.remove(self._cache_path(key))
