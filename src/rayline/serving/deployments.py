"""What rayline deployed where: one record per Serve application, in serving's own table.

``serve_model`` records the application it deployed (model, version, alias, the deployment
record it submitted, status) so that an update knows what it replaces, ``rayline serve stop``
finds the Ray it deployed on, and ``rayline serve status`` lists the applications. These records
belong to serving, not to the model registry: the table ``deployments`` is declared with the
run store's tables (``rayline.store.model_schema``, schema version 5) and lives in the same
database as the runs and the registry (``RAYLINE_DB_URL``), so any host that reaches it sees
what is deployed.

Example::

    with DeploymentRecords(settings) as records:
        records.put("churn", mv, alias="production", spec=record, status="RUNNING")
        records.find("churn")[0]["version"]
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from rayline.models.registry.database import RunDatabase, settings_of
from rayline.models.registry.records import ModelVersion, to_json, utc
from rayline.models.registry.sql import ModelRegistry
from rayline.store.schema import deployments

__all__ = ["DeploymentRecords"]


class DeploymentRecords(RunDatabase):
    """The ``deployments`` table of ``settings_or_home`` (a ``Settings``, a home folder, None for
    ``RAYLINE_HOME``, or a ``ModelRegistry`` whose database it shares); opened on first use.
    Use as a context manager or call ``close()``."""

    def __init__(self, settings_or_home: Any = None) -> None:
        if isinstance(settings_or_home, ModelRegistry):
            super().__init__(settings_or_home.settings, settings_or_home.runs)
        else:
            super().__init__(settings_of(settings_or_home))

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._open().transaction() as conn:
            yield conn

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
