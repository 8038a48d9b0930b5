"""Where the registry's rows live: the run store's database, and the one-time import of an older
home's ``registry.db``.

The model registry and serving's deployment records share the database of the runs
(``RAYLINE_DB_URL``: SQLite at ``RAYLINE_HOME/runs.db`` by default, PostgreSQL for a team); their
tables are migrated with the run store's (``rayline.store.schema``, version 5). Until then they
lived in a SQLite file of their own, ``RAYLINE_HOME/registry.db``: ``open_database`` copies its
rows into the run store's database the first time a home is opened (rows already there are kept;
a version that differs from the one there is refused, naming the file) and renames the file
``registry.db.imported``, so the import happens once.

Example::

    runs = open_database(Settings(home="~/.rayline"))   # a RunStore; registry.db imported
    with runs.transaction(read=True) as conn:
        tables.model_names(conn)
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select, text

from rayline.config import Settings
from rayline.errors import StoreError
from rayline.store import schema
from rayline.store.model_schema import MODEL_TABLES
from rayline.store.runs import RunStore

__all__ = ["LEGACY_FILE", "RunDatabase", "import_legacy_registry", "open_database", "settings_of"]

log = logging.getLogger(__name__)

#: The file the registry lived in before schema version 5, and what it is renamed once imported.
LEGACY_FILE = "registry.db"
IMPORTED_SUFFIX = ".imported"


def settings_of(settings_or_home: Any) -> Settings:
    """``Settings`` from a ``Settings``, a home folder (its other settings from the environment,
    e.g. ``RAYLINE_DB_URL``), or None (``RAYLINE_HOME``)."""
    if settings_or_home is None:
        return Settings()
    if isinstance(settings_or_home, Settings):
        return settings_or_home
    return Settings(home=Path(settings_or_home).expanduser().absolute())


class RunDatabase:
    """The run store's database as the registry and serving's records hold it: shared (``runs``,
    an open ``RunStore``, never closed here) or their own, opened on first use (``_open``) and
    closed by ``close()``. A context manager."""

    def __init__(self, settings: Settings, runs: RunStore | None = None) -> None:
        self._settings = settings
        self._runs: Any = runs
        self._own = runs is None
        self._lock = threading.Lock()

    def _open(self) -> RunStore:
        with self._lock:
            if self._runs is None:
                self._runs = open_database(self._settings)
            return self._runs

    def close(self) -> None:
        """Close the database connections this object opened (not a shared run store's)."""
        if self._own and self._runs is not None:
            self._runs.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_database(settings: Settings) -> RunStore:
    """The run store of ``settings`` (migrated), with an older ``registry.db`` imported.

    Raises:
        StoreError: the database cannot be opened, or ``registry.db`` holds a model version
            that differs from the one the database has (the message names the file).
    """
    runs = RunStore(settings.run_store_url)
    try:
        import_legacy_registry(runs, settings.resolved_home)
    except BaseException:
        runs.close()
        raise
    return runs


def import_legacy_registry(runs: RunStore, home: Path) -> int:
    """Copy the rows of ``home/registry.db`` into ``runs``' database, once; how many rows.

    One write transaction (concurrent importers take turns; the second finds the rows there and
    adds none), then the file is renamed ``registry.db.imported``.
    """
    path = Path(home) / LEGACY_FILE
    if not path.is_file():
        return 0
    source = sqlite3.connect(path)  # closing it checkpoints its WAL into the file
    try:
        copied = 0
        with runs.transaction() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('rayline:registry-import'))"))
            for name in MODEL_TABLES:
                copied += _copy_table(source, conn, name, path)
            if copied and conn.dialect.name == "postgresql":  # explicit ids left the sequence behind
                conn.execute(text("SELECT setval(pg_get_serial_sequence('alias_history', 'id'), "
                                  "(SELECT max(id) FROM alias_history))"))  # fmt: skip
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot read the model registry of an older rayline at {path}: {e}; "
                         f"move it aside to start with an empty registry") from e  # fmt: skip
    finally:
        source.close()
    try:
        path.rename(path.with_name(LEGACY_FILE + IMPORTED_SUFFIX))
    except FileNotFoundError:
        pass  # another process imported it a moment ago
    log.info("imported %d rows of %s into %s", copied, path, runs.url)
    return copied


def _copy_table(source: sqlite3.Connection, conn: Connection, name: str, path: Path) -> int:
    """Insert the rows of table ``name`` of ``source`` that ``conn``'s table lacks."""
    table = schema.metadata.tables[name]
    have = {r[1] for r in source.execute(f"PRAGMA table_info({name})")}  # a constant table name
    if not have:
        return 0
    columns = [c.name for c in table.columns if c.name in have]
    keys = [c.name for c in table.primary_key.columns]
    rows = [dict(zip(columns, r, strict=True))
            for r in source.execute(f"SELECT {', '.join(columns)} FROM {name}")]  # fmt: skip
    existing = {tuple(r) for r in conn.execute(select(*(table.c[k] for k in keys)))}
    fresh = [r for r in rows if tuple(r[k] for k in keys) not in existing]
    if name == "model_versions":
        _refuse_conflicts(conn, [r for r in rows if tuple(r[k] for k in keys) in existing], path)
    if fresh:
        conn.execute(insert(table), fresh)
    return len(fresh)


def _refuse_conflicts(conn: Connection, rows: list[dict[str, Any]], path: Path) -> None:
    """A version of ``path`` already in the database must be the same model (same digest)."""
    mv = schema.model_versions
    for r in rows:
        there = conn.execute(select(mv.c.digest).where(mv.c.name == r["name"],
                                                       mv.c.version == r["version"])).scalar()  # fmt: skip
        if there != r["digest"]:
            raise StoreError(
                f"{path} (the model registry of an older rayline) holds version {r['version']} of "
                f"model '{r['name']}', and the database already has a different version "
                f"{r['version']}; import it by hand or move the file aside"
            )
