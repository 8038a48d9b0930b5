"""The model registry's and serving's tables in the run store's database (schema version 5).

The registry lives in the same database as the runs (``RAYLINE_DB_URL``: SQLite in
``RAYLINE_HOME`` by default, PostgreSQL for a team), so that any machine that reaches the
database lists, promotes and serves the same models. ``schema.py`` adds these tables in its
migration 5 (the one migration list, the one ``schema_version`` table); the registry's queries
live in ``rayline.models.registry.tables`` and serving's in ``rayline.serving.deployments``.

Tables::

    model_versions   (name, version) -> artifact digest, flavor, metrics, lineage, inputs …
    aliases          (name, alias) -> version
    alias_history    one row per alias move or serving event, newest last (rollback reads it)
    deployments      (app) -> the model version rayline deployed as that Serve application
"""

from __future__ import annotations

from sqlalchemy import Column, Double, Index, Integer, MetaData, String, Table, Text

__all__ = ["define_model_tables", "MODEL_TABLES"]

#: The tables ``define_model_tables`` declares, parents first (the order rows are copied in).
MODEL_TABLES = ("model_versions", "aliases", "alias_history", "deployments")


def define_model_tables(md: MetaData) -> None:
    """The registry's and serving's tables as of schema version 5. Never edit: a later version
    adds a migration. (They match the tables an older ``registry.db`` held, whose rows
    ``rayline.models.registry.legacy`` copies in.)"""
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
