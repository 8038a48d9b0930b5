"""The SQL registry's queries over its tables in the run store's database.

The tables (``model_versions``, ``aliases``, ``alias_history``) are declared with the run store's
(``rayline.store.model_schema``, schema version 5) and migrated by its one migration runner:
the registry lives in the same database as the runs (``RAYLINE_DB_URL``: SQLite in
``RAYLINE_HOME`` by default, PostgreSQL for a team). Timestamps are float epoch seconds;
metrics, lineage and specs are JSON text; every statement is parameterised.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from rayline.store.schema import alias_history, aliases, model_versions

#: What messages call these tables.
LABEL = "model registry"


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
