"""The SQL kernel under every rayline database: the engine factory, the one migration runner,
the refusal of network filesystems, and the one rule for JSON text.

``make_engine`` and ``migrate`` serve the run store's database (``schema.py`` holds its tables
and migrations: the runs', the model registry's and serving's); ``label`` names the store in
their messages.
Timestamps are float epoch seconds (UTC); dicts are JSON text written by ``to_json``. No pickled
blobs, and every statement is parameterised.

SQLite gets WAL, ``busy_timeout=30000``, ``synchronous=NORMAL`` (``FULL`` with
``RAYLINE_DB_SYNC=full``), ``foreign_keys=ON`` and ``BEGIN IMMEDIATE`` for every write transaction
(the pysqlite recipe from SQLAlchemy's SQLite documentation), so writers queue on the busy timeout
instead of failing with "database is locked". Reads begin a deferred transaction and never block.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    Table,
    create_engine,
    event,
    exc,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import URL

from rayline.errors import NotJsonError, StoreError

log = logging.getLogger(__name__)

#: Execution option that makes a connection begin a deferred (read) transaction.
READ_OPTION = "rayline_read"

_MOUNTS_FILE = "/proc/mounts"
_OCTAL = re.compile(r"\\([0-7]{3})")
_NETWORK_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "fuse.sshfs", "sshfs", "afs", "ncpfs"}
)


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of the SQLite file at ``path``."""
    return f"sqlite:///{Path(path).expanduser().absolute()}"


def to_json(value: Any, what: str, *, lenient: bool = False) -> str:
    """Canonical JSON text of ``value`` (sorted keys, compact); ``what`` names it in the error.

    Strict by default: only JSON's own types, no NaN or infinity. ``lenient`` (metrics, lineage
    and specs in the model registry) also converts numpy scalars and arrays, paths, datetimes
    (ISO 8601) and sets, and lets a NaN metric through.

    Raises:
        NotJsonError: ``value`` holds something else (a ``StoreError`` and a ``TypeError``).
    """

    def convert(o: Any) -> Any:
        tolist = getattr(o, "tolist", None)  # numpy scalars and arrays
        if callable(tolist):
            return tolist()
        if isinstance(o, PurePath):
            return str(o)
        if isinstance(o, datetime):
            return o.isoformat()
        if isinstance(o, set | frozenset | tuple):
            return list(o)
        raise TypeError(f"a {type(o).__name__} is not JSON-able; pass numbers, strings, lists or dicts")

    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=lenient,
                          default=convert if lenient else None)  # fmt: skip
    except (TypeError, ValueError) as e:
        raise NotJsonError(f"{what} must be JSON-serialisable to be stored: {e}") from e


def version_table(name: str) -> Table:
    """The one-row table (``id`` 1, ``version``) where ``migrate`` keeps a database's version."""
    return Table(name, MetaData(), Column("id", Integer, primary_key=True),
                 Column("version", Integer, nullable=False))  # fmt: skip




def _read_version(conn: Connection, version_table: Table) -> int:
    if not inspect(conn).has_table(version_table.name):
        return 0
    q = select(version_table.c.version).where(version_table.c.id == 1)
    return int(conn.execute(q).scalar() or 0)


def _serialize_migrations(conn: Connection, name: str) -> None:
    """Make concurrent migrations of one database take turns, until this transaction ends.
    SQLite's ``BEGIN IMMEDIATE`` already does; on PostgreSQL two fresh ``CREATE TABLE`` at once
    fail one of them (a unique violation in ``pg_type``), so take an advisory lock first."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"rayline:{name}"})


def migrate(
    engine: Engine,
    version_table: Table,
    migrations: Mapping[int, Callable[[Connection], None]],
    target: int,
    *,
    where: str,
    label: str,
) -> int:
    """Bring a database to version ``target`` in one transaction; return the version found.

    ``version_table`` is a one-row table (``id`` 1, ``version``); ``migrations[n]`` takes the
    database from version n-1 to n. The version check and every pending migration share one
    write transaction, so a crash leaves the database at the old version or the new one, never in
    between, and two processes opening a fresh database at once migrate it once (the second waits
    on ``BEGIN IMMEDIATE``, or a PostgreSQL advisory lock, then sees it done).

    Example::

        migrate(engine, schema_version, MIGRATIONS, SCHEMA_VERSION, where=url, label="run store")

    Raises:
        StoreError: the database was written by a newer rayline (``label`` names it).
    """

    def too_new(found: int) -> StoreError:
        return StoreError(
            f"{label} at {where} has schema version {found}, this rayline understands up to "
            f"{target}; upgrade rayline"
        )

    with engine.execution_options(**{READ_OPTION: True}).connect() as conn:
        found = _read_version(conn, version_table)
    if found > target:
        raise too_new(found)
    if found == target:
        return found
    with engine.begin() as conn:
        _serialize_migrations(conn, version_table.name)
        version_table.create(conn, checkfirst=True)
        found = _read_version(conn, version_table)
        if found > target:
            raise too_new(found)
        for version in range(found + 1, target + 1):
            migrations[version](conn)
        if found == 0:
            conn.execute(version_table.insert().values(id=1, version=target))
        else:
            conn.execute(version_table.update().values(version=target))
    return found


def network_fs_type(path: Path) -> str | None:
    """The network filesystem type ``path`` lives on (``nfs``, ``cifs`` …), or None if local."""
    try:
        with open(_MOUNTS_FILE, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    target = str(path)
    best, best_type = "", ""
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        # /proc/mounts escapes spaces, tabs, newlines and backslashes as octal.
        mount = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), parts[1])
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, parts[2]
    kind = best_type.lower()
    if kind in _NETWORK_FS or kind.startswith("nfs"):
        return kind
    return None


def _prepare_sqlite_file(path: Path, label: str) -> None:
    """Create the directory (0700) and the file (0600); refuse a network filesystem."""
    parent = path.parent
    fs = network_fs_type(parent.resolve())
    if fs:
        log.warning(
            "%s %s is on a network filesystem (%s): SQLite's WAL mode needs a local disk and can "
            "corrupt the database there; use a local RAYLINE_HOME (the run store also takes a "
            "PostgreSQL URL)",
            label,
            path,
            fs,
        )
        if not os.environ.get("RAYLINE_ALLOW_NETWORK_FS"):
            raise StoreError(
                f"refusing to open the SQLite {label} {path} on a network filesystem ({fs}); "
                "point RAYLINE_HOME at a local disk (the run store also takes a PostgreSQL URL), "
                "or set RAYLINE_ALLOW_NETWORK_FS=1 to accept the risk"
            )
    if not parent.exists():
        try:
            parent.mkdir(parents=True, mode=0o700)
            os.chmod(parent, 0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            pass  # another process made it a moment ago
    if path.is_symlink():
        raise StoreError(f"{label} {path} is a symbolic link; refusing to follow it")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            log.warning("%s %s is readable by other users; chmod 600 it", label, path)
        return
    except OSError as e:
        raise StoreError(f"cannot create the {label} {path}: {e.strerror}") from e
    os.close(fd)
    os.chmod(path, 0o600)


def _sync_mode() -> str:
    return "FULL" if os.environ.get("RAYLINE_DB_SYNC", "").lower() == "full" else "NORMAL"


def _on_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(READ_OPTION):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _guard_fork(engine: Engine) -> None:
    """Never hand a child process a connection opened before ``os.fork()``: SQLite corrupts
    databases that way. The SQLAlchemy pooling-with-multiprocessing recipe."""

    def on_connect(_dbapi_conn: Any, record: Any) -> None:
        record.info["pid"] = os.getpid()

    def on_checkout(_dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if record.info["pid"] != os.getpid():
            record.dbapi_connection = proxy.dbapi_connection = None  # never close it here
            raise exc.DisconnectionError(f"connection opened in pid {record.info['pid']}")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "checkout", on_checkout)


def _switch_to_wal(cur: Any, timeout: float = 30.0) -> Any:
    """``PRAGMA journal_mode=WAL``, retried while another connection holds the lock.

    Switching a fresh (rollback-journal) database to WAL needs an exclusive lock, and SQLite
    answers "database is locked" at once, without the busy handler, when two processes switch
    it at the same moment (two cron invocations on a new RAYLINE_HOME did)."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while True:
        try:
            return cur.execute("PRAGMA journal_mode=WAL").fetchone()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def on_ray_worker() -> bool:
    """Whether this process is a Ray worker (a task, an actor, a Train or Tune worker, a Serve
    replica), not a driver. Ray is not imported for the answer."""
    worker = sys.modules.get("ray._private.worker")
    return worker is not None and getattr(worker.global_worker, "mode", None) == worker.WORKER_MODE


def refuse_on_ray_worker(where: str, label: str) -> None:
    """Ray workers never open a SQL store (DESIGN principle 8): raise if this is one.

    Raises:
        StoreError: this process is a Ray worker (the message says what to do instead).
    """
    if on_ray_worker():
        raise StoreError(
            f"a Ray worker may not open the {label} at {where}: only the driver writes the "
            "database. A task reports what it learned with its result (rayline.context: warnings, "
            "counters, watermarks); a task that uses the model registry declares "
            "@task(registry=True) and gets a copy whose changes the driver commits"
        )


def make_engine(url: URL, *, label: str = "run store", task_copy: bool = False) -> Engine:
    """A SQLAlchemy engine for ``url``, with the SQLite set-up described in the module docstring.

    ``label`` names the store in messages and warnings. On a Ray worker only a task's private
    copy (``task_copy``) may be opened.

    Raises:
        StoreError: this is a Ray worker, the SQLite file would live on a network filesystem
            (unless allowed), or it cannot be created.
    """
    if not task_copy:
        refuse_on_ray_worker(url.render_as_string(hide_password=True), label)
    if url.get_backend_name() != "sqlite":
        engine = create_engine(url)
        _guard_fork(engine)
        return engine
    db = url.database or ""
    if db and db != ":memory:" and not db.startswith("file:"):
        _prepare_sqlite_file(Path(db).expanduser().absolute(), label)
    sync = _sync_mode()
    engine = create_engine(url, connect_args={"timeout": 30.0})

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 driver; _on_begin emits it (IMMEDIATE for writes).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA busy_timeout=30000")
            mode = _switch_to_wal(cur)
            if db and db != ":memory:" and (not mode or str(mode[0]).lower() != "wal"):
                log.warning("%s %s could not switch to WAL mode (got %s)", label, db, mode)
            cur.execute(f"PRAGMA synchronous={sync}")  # one of two constants
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", _on_begin)
    _guard_fork(engine)
    return engine


class EngineOwner:
    """A store that owns a SQLAlchemy engine in ``_engine`` (None until opened): ``close()``
    disposes its pooled connections, and it is a context manager that closes on exit."""

    _engine: Any = None

    def close(self) -> None:
        """Close every pooled connection."""
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
