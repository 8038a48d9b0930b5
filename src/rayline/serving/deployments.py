"""What rayline deployed where: one record per Serve application, in serving's own table.

``serve_model`` records the application it deployed (model, version, alias, the deployment
record it submitted, status) so that an update knows what it replaces, ``rayline serve stop``
finds the Ray it deployed on, and ``rayline serve status`` lists the applications. These records
belong to serving, not to the model registry: the table ``deployments`` has its own schema
version (``serving_schema``) and is migrated by the store's one migration runner. It lives in
the registry's database file for now (``RAYLINE_HOME/registry.db``; version 1 of the registry
created the table there, and this module adopts it as it is).

Example::

    with DeploymentRecords(home) as records:
        records.put("churn", mv, alias="production", spec=record, status="RUNNING")
        records.find("churn")[0]["version"]
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError

from rayline.errors import StoreError
from rayline.models.registry.records import ModelVersion, to_json, utc
from rayline.models.registry.sql import home_of
from rayline.store.sql import EngineOwner, creating, open_sqlite, version_table

__all__ = ["DeploymentRecords"]

SCHEMA_VERSION = 1
FILE_NAME = "registry.db"
LABEL = "serving records"


def _define_v1(md: MetaData) -> None:
    """The table as of schema version 1. Never edit: a later version adds a migration."""
    Table(
        "deployments",
        md,
        Column("app", String(128), primary_key=True),
        Column("name", String(128), nullable=False),
        Column("version", Integer, nullable=False),
        Column("alias", String(128)),
        Column("spec_json", Text, nullable=False),
        Column("status", String(32), nullable=False),
        Column("updated_at", Double, nullable=False),
    )


metadata = MetaData()
_define_v1(metadata)
deployments = metadata.tables["deployments"]
serving_schema = version_table("serving_schema")


# creating() checks first: a table made by an older registry (version 1 made it) is adopted
MIGRATIONS = {1: creating(_define_v1)}


class DeploymentRecords(EngineOwner):
    """The ``deployments`` table of ``settings_or_home`` (a ``Settings``, a path, or None for
    ``RAYLINE_HOME``); opened on first use. Use as a context manager or call ``close()``."""

    def __init__(self, settings_or_home: Any = None) -> None:
        self._home = home_of(settings_or_home)
        self._where = str(self._home / FILE_NAME)
        self._engine: Any = None
        self._lock = threading.Lock()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._lock:
            if self._engine is None:
                self._engine = self._open(self._home / FILE_NAME)
        try:
            with self._engine.begin() as conn:
                yield conn
        except DBAPIError as e:
            raise StoreError(f"serving records at {self._where}: {e.orig}") from e

    @staticmethod
    def _open(path: Path) -> Any:
        return open_sqlite(path, serving_schema, MIGRATIONS, SCHEMA_VERSION, label=LABEL)

    def put(self, app: str, mv: ModelVersion, *, alias: str | None, spec: Mapping[str, Any],
            status: str) -> None:  # fmt: skip
        """Remember what rayline deployed as Serve application ``app`` (replacing any)."""
        values = {"name": mv.name, "version": mv.version, "alias": alias,
                  "spec_json": to_json(dict(spec), "spec"), "status": status,
                  "updated_at": time.time()}  # fmt: skip
        with self._tx() as conn:
            q = update(deployments).where(deployments.c.app == app).values(**values)
            if conn.execute(q).rowcount == 0:
                conn.execute(insert(deployments).values(app=app, **values))

    def find(self, app: str | None = None) -> list[dict[str, Any]]:
        """What rayline last deployed (as ``app``, or everywhere): model, version, spec, status."""
        q = select(deployments)
        if app is not None:
            q = q.where(deployments.c.app == app)
        with self._tx() as conn:
            rows = conn.execute(q.order_by(deployments.c.app)).all()
        out = []
        for row in rows:
            m = dict(row._mapping)
            m["spec"] = json.loads(m.pop("spec_json"))
            m["updated_at"] = utc(m["updated_at"]).isoformat()
            out.append(m)
        return out

    def forget(self, app: str) -> None:
        """Drop the record of ``app`` (after ``rayline serve stop``)."""
        with self._tx() as conn:
            conn.execute(delete(deployments).where(deployments.c.app == app))
