"""The SQL registry's tables, numbered migrations, and the engine it opens.

The registry lives in its own SQLite file, ``RAYLINE_HOME/registry.db``, apart from the run
store (for now: models are still registered from inside tasks on Ray workers). The connection discipline is the run store's (``make_engine`` from
``rayline.store.sql``): WAL, ``busy_timeout``, ``BEGIN IMMEDIATE`` for every write,
a 0600 file in a 0700 directory, refusal of network filesystems; and so is ``migrate``, which
applies ``MIGRATIONS``. Timestamps are float epoch seconds; metrics, lineage and specs are JSON
text; every statement is parameterised.

Tables::

    model_versions   (name, version) -> artifact digest, flavor, metrics, lineage, inputs …
    aliases          (name, alias) -> version
    alias_history    one row per alias move or serving event, newest last (rollback reads it)

Version 1 also created ``deployments`` (what rayline deployed where); that table belongs to
serving now (``rayline.serving.deployments``, which adopts it) and the registry never reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)

from rayline.store.sql import creating, open_sqlite, version_table

#: The schema version this code writes and understands.
SCHEMA_VERSION = 1

FILE_NAME = "registry.db"

#: What messages call this database.
LABEL = "model registry"


def _define_v1(md: MetaData) -> None:
    """The registry's tables as of schema version 1. Never edit: a later version adds a
    migration. (Migration 1 also created serving's ``deployments``: see ``_migration_1``.)"""
    Table(
        "model_versions",
        md,
        Column("name", String(128), primary_key=True),
        Column("version", Integer, primary_key=True),
        Column("digest", String(64), nullable=False),
        Column("flavor", String(32), nullable=False),
        Column("metrics_json", Text, nullable=False),
        Column("lineage_json", Text, nullable=False),
        Column("inputs_json", Text),
        Column("features_digest", String(64)),
        Column("description", Text),
        Column("created_at", Double, nullable=False),
        Index("ix_model_versions_created", "created_at"),
    )
    Table(
        "aliases",
        md,
        Column("name", String(128), primary_key=True),
        Column("alias", String(128), primary_key=True),
        Column("version", Integer, nullable=False),
        Column("updated_at", Double, nullable=False),
    )
    Table(
        "alias_history",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(128), nullable=False),
        Column("alias", String(128)),
        Column("event", String(32), nullable=False),
        Column("from_version", Integer),
        Column("to_version", Integer),
        Column("undoes", Integer),
        Column("at", Double, nullable=False),
        Column("reason", Text),
        Column("actor", String(256)),
        Index("ix_alias_history_name_alias", "name", "alias", "id"),
    )


metadata = MetaData()
_define_v1(metadata)
model_versions = metadata.tables["model_versions"]
aliases = metadata.tables["aliases"]
alias_history = metadata.tables["alias_history"]

registry_schema = version_table("registry_schema")


#: Migration N takes the registry from version N-1 to N; pending ones share one transaction.
#: (Version 1 once also created ``deployments``; serving creates and owns it now.)
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: creating(_define_v1)}


def open_engine(home: Path) -> tuple[Engine, str]:
    """The migrated engine for ``home/registry.db`` and a printable location.

    Raises:
        StoreError: the file would live on a network filesystem, cannot be created, or is newer
            than this rayline.
    """
    path = Path(home).expanduser().absolute() / FILE_NAME
    engine = open_sqlite(path, registry_schema, MIGRATIONS, SCHEMA_VERSION, label=LABEL)
    return engine, str(path)


# ------------------------------------------------------------------------------- queries
# Each takes an open connection: the caller decides the transaction (read, or BEGIN IMMEDIATE).


def insert_next_version(conn: Connection, name: str, **values: Any) -> int:
    """Insert ``name``'s next version (max + 1, inside the caller's write transaction)."""
    last = conn.execute(
        select(func.max(model_versions.c.version)).where(model_versions.c.name == name)
    ).scalar()
    version = int(last or 0) + 1
    conn.execute(insert(model_versions).values(name=name, version=version, **values))
    return version


def version_row(conn: Connection, name: str, version: int | None) -> Any:
    """One version's row (the latest when ``version`` is None), or None."""
    q = select(model_versions).where(model_versions.c.name == name)
    if version is None:
        q = q.order_by(model_versions.c.version.desc()).limit(1)
    else:
        q = q.where(model_versions.c.version == int(version))
    return conn.execute(q).first()


def version_rows(conn: Connection, name: str) -> list[Any]:
    q = select(model_versions).where(model_versions.c.name == name)
    return list(conn.execute(q.order_by(model_versions.c.version)).all())


def version_numbers(conn: Connection, name: str) -> list[int]:
    q = select(model_versions.c.version).where(model_versions.c.name == name)
    return [int(v) for (v,) in conn.execute(q.order_by(model_versions.c.version))]


def model_names(conn: Connection) -> list[str]:
    q = select(model_versions.c.name).distinct().order_by(model_versions.c.name)
    return [n for (n,) in conn.execute(q)]


def has_model(conn: Connection, name: str) -> bool:
    q = select(model_versions.c.version).where(model_versions.c.name == name).limit(1)
    return conn.execute(q).first() is not None


def summary_rows(conn: Connection) -> list[Any]:
    """(name, latest version, count, last created) per model, by name."""
    v = model_versions.c
    q = select(v.name, func.max(v.version), func.count(), func.max(v.created_at))
    return list(conn.execute(q.group_by(v.name).order_by(v.name)).all())


def alias_map(conn: Connection, name: str | None = None) -> dict[str, dict[str, int]]:
    """``{model: {alias: version}}`` (one model if ``name`` is given)."""
    q = select(aliases.c.name, aliases.c.alias, aliases.c.version)
    if name is not None:
        q = q.where(aliases.c.name == name)
    out: dict[str, dict[str, int]] = {}
    for n, a, ver in conn.execute(q.order_by(aliases.c.alias)):
        out.setdefault(n, {})[a] = int(ver)
    return out


def current_alias(conn: Connection, name: str, alias: str) -> int | None:
    q = select(aliases.c.version).where(aliases.c.name == name, aliases.c.alias == alias)
    found = conn.execute(q).scalar()
    return None if found is None else int(found)


def move_alias(conn: Connection, name: str, alias: str, version: int, now: float) -> None:
    q = update(aliases).where(aliases.c.name == name, aliases.c.alias == alias)
    if conn.execute(q.values(version=version, updated_at=now)).rowcount == 0:
        conn.execute(insert(aliases).values(name=name, alias=alias, version=version, updated_at=now))


def history_rows(conn: Connection, name: str, alias: str | None = None) -> list[Any]:
    q = select(alias_history).where(alias_history.c.name == name)
    if alias is not None:
        q = q.where(alias_history.c.alias == alias)
    return list(conn.execute(q.order_by(alias_history.c.id)).all())


def insert_event(conn: Connection, **values: Any) -> int:
    return int(conn.execute(insert(alias_history).values(**values)).inserted_primary_key[0])
