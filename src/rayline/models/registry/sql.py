"""The SQL model registry: versioned models with metrics, lineage and aliases.

Every registered model is a *version* (1, 2, … per name, assigned atomically): the model's bytes
in the artifact store (content-addressed, checksummed and signed), its flavor (``sklearn``,
``torch`` or ``pyfunc``), metrics, lineage (run, node, flow, input snapshot, code hash), the input
fields it needs and, optionally, the fitted feature transform it was trained behind. Aliases
(``staging``, ``production`` or any valid name) point at versions; every move is kept in a
history, so ``rollback`` puts an alias back where it was in one call.

The ``Registry`` protocol's SQL backend: tables in the run store's database (``RAYLINE_DB_URL``,
SQLite in ``RAYLINE_HOME`` by default; see ``database``), opened on first use, so an unpickled
copy that only ``load``s a given version never opens it.

Example::

    reg = ModelRegistry("~/.rayline")
    v = reg.register("churn", model, metrics={"auc": 0.91}, lineage={"input_snapshot": snap})
    reg.promote("churn", v.version, "production", reason="beats v3 by 2 points of AUC")
    reg.load("churn", alias="production").predict(records)
    reg.rollback("churn", "production", reason="error rate up")

In a flow, ``register_model`` (``rayline.tasks.registry``) registers with the driver's lineage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from rayline.errors import StoreError
from rayline.models.registry import records as rr
from rayline.models.registry import tables as sql
from rayline.models.registry.database import RunDatabase, settings_of
from rayline.models.registry.records import (
    AliasEvent,
    ModelNotFoundError,
    ModelSummary,
    ModelVersion,
    parse_ref,
    to_json,
)
from rayline.models.servable import describe_model
from rayline.store.artifacts import ArtifactStore, validate_name

__all__ = ["ModelRegistry"]


class ModelRegistry(RunDatabase):
    """Model versions, aliases and their history in the run store's database
    (``RAYLINE_DB_URL``; by default SQLite at ``RAYLINE_HOME/runs.db``).

    Thread-safe; pickles as its settings (a copy opens the database on first use, and ``load``
    of a ``ModelVersion`` never does). Use as a context manager or call ``close()``.

    Args:
        settings_or_home: a ``Settings``, a home folder (the database and artifact URL from the
            environment, as for the runs), or None for the default settings (``RAYLINE_HOME``).
        connect: open (and migrate) the database now (default), so that a bad location fails
            here; False opens it on first use.
        store: the artifact store of the models' bytes (default: the settings' artifact URL).
        runs: an open run store to share (default: the registry opens and closes its own).

    Raises:
        StoreError: the database cannot be opened, is newer than this rayline, or an older
            ``registry.db`` in the home cannot be imported.
    """

    def __init__(self, settings_or_home: Any = None, *, connect: bool = True,
                 store: ArtifactStore | None = None, runs: Any = None) -> None:
        super().__init__(settings_of(settings_or_home), runs)
        self._home = self._settings.resolved_home
        self._where = runs.url if runs is not None else self._settings.run_store_url
        self._store: ArtifactStore | None = store
        if connect:
            self._open()

    def _open(self) -> Any:
        """The run store's database, opened (and migrated, ``registry.db`` imported) once."""
        runs = super()._open()
        self._where = runs.url
        return runs

    @property
    def home(self) -> Path:
        """The ``RAYLINE_HOME`` this registry belongs to."""
        return self._home

    @property
    def settings(self) -> Any:
        """The ``Settings`` it was opened with (database URL, artifact URL)."""
        return self._settings

    @property
    def runs(self) -> Any:
        """The run store whose database holds the registry (opened on first use)."""
        return self._open()

    @property
    def store(self) -> ArtifactStore:
        """The artifact store holding the models' bytes: the one given, else the settings' artifact
        URL (``RAYLINE_ARTIFACTS_URL``, by default ``home/artifacts``)."""
        if self._store is None:
            self._store = ArtifactStore.for_settings(self._settings, sweep=False)
        return self._store

    def __reduce__(self) -> tuple[Any, ...]:  # a copy reopens it lazily from its settings
        return (_unpickle, (self._settings, self.store))

    def __repr__(self) -> str:
        return f"ModelRegistry({self._where!r})"

    @contextmanager
    def _tx(self, *, read: bool = False) -> Iterator[Connection]:
        with self._open().transaction(read=read) as conn:
            yield conn

    # ---------------------------------------------------------------------------- versions

    def register(
        self,
        name: str,
        model: Any,
        *,
        metrics: Mapping[str, Any] | None = None,
        lineage: Mapping[str, Any] | None = None,
        features: Any = None,
        inputs: list[str] | tuple[str, ...] | None = None,
        description: str | None = None,
    ) -> ModelVersion:
        """Store ``model`` and record it as the next version of ``name``.

        Args:
            name: the model's name, ``^[A-Za-z0-9._-]{1,128}$``.
            model: a scikit-learn estimator, a torch module (with ``inputs``), a rayline
                ``TrainedModel`` or any object with ``predict(records) -> list`` (``pyfunc``).
            metrics: JSON-able numbers (default: ``model.metrics`` when it has them).
            lineage: run id, input snapshot, code hash … merged over what the model carries.
            features: a fitted transform (``FittedFeatures`` or anything with
                ``transform(records)``), or the digest of a stored one; serving applies it first.
            inputs: the record fields the model needs (inferred when the model names them).

        Example::

            v = reg.register("churn", LogisticRegression().fit(df[cols], y), metrics={"auc": .9})
            assert v.version == 1 and v.flavor == "sklearn"

        Raises:
            UnsafeNameError: the name is not a valid model name.
            TypeError: the model cannot be served, or metrics/lineage are not JSON-able.
        """
        validate_name(name)
        desc = describe_model(model, features=features, inputs=inputs)
        values = {
            "flavor": desc.flavor,
            "metrics_json": to_json(dict(metrics if metrics is not None else desc.metrics), "metrics"),
            "lineage_json": to_json({**desc.lineage, **dict(lineage or {})}, "lineage"),
            "inputs_json": None if desc.inputs is None else json.dumps(desc.inputs),
            "description": description,
        }
        store = self.store
        rr.check_references(model, store)
        values["digest"] = store.put(model).digest
        values["features_digest"] = rr.store_features(store, desc.features)
        values["created_at"] = time.time()
        for _ in range(20):  # BEGIN IMMEDIATE serialises writers; the retry covers odd backends
            try:
                with self._tx() as conn:
                    version = sql.insert_next_version(conn, name, **values)
                return self.get(name, version)
            except IntegrityError:
                continue
        raise StoreError(f"could not assign a version number to model '{name}' (contention)")

    def get(self, name: str, version: int | None = None, alias: str | None = None) -> ModelVersion:
        """One version: by number, by alias, or the latest when neither is given.

        Raises:
            ModelNotFoundError: no such model, version or alias (the message says what exists).
        """
        if version is not None and alias is not None:
            raise ValueError("give a version or an alias, not both")
        with self._tx(read=True) as conn:
            if alias is not None:
                version = self._alias_version(conn, name, alias)
            row = sql.version_row(conn, name, version)
            if row is None:
                raise self._missing(conn, name, version)
            names = _by_version(sql.alias_map(conn, name).get(name, {}))
        return rr.version_from_row(row, names.get(row.version, ()))

    def resolve(self, ref: str) -> ModelVersion:
        """``NAME`` (latest), ``NAME@N`` (version N) or ``NAME@ALIAS`` → that version.

        Example::

            reg.resolve("churn@production").version
        """
        name, version, alias = parse_ref(ref)
        return self.get(name, version=version, alias=alias)

    def load(self, version: ModelVersion | str, number: int | None = None,
             alias: str | None = None) -> Any:  # fmt: skip
        """The model object of one version, read back through the artifact store.

        ``version`` is a ``ModelVersion`` (read from the artifact store alone: the database is
        not opened, so a serving replica can call it), or a model name with a version
        ``number`` or an ``alias`` (the latest when neither is given). The bytes are checked
        against their sha256 and the store's HMAC before anything is unpickled; a damaged or
        foreign file raises ``ArtifactIntegrityError``.

        Example::

            reg.load(reg.get("churn", alias="production"))
            reg.load("churn", alias="production")
        """
        mv = version if isinstance(version, ModelVersion) else self.get(version, number, alias)
        return self.store.get(mv.digest)

    def load_features(self, mv: ModelVersion) -> Any:
        """The feature transform registered with ``mv``, or None."""
        return rr.load_features(self.store, mv.features_digest)

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first."""
        with self._tx(read=True) as conn:
            rows = sql.version_rows(conn, name)
            if not rows:
                raise self._missing(conn, name, None)
            names = _by_version(sql.alias_map(conn, name).get(name, {}))
        return [rr.version_from_row(r, names.get(r.version, ())) for r in rows]

    def list_models(self) -> list[ModelSummary]:
        """One summary per model: latest version, how many versions, aliases; by name."""
        with self._tx(read=True) as conn:
            rows, amap = sql.summary_rows(conn), sql.alias_map(conn)
        return [ModelSummary(n, int(latest), int(count), rr.utc(at), amap.get(n, {}))
                for n, latest, count, at in rows]  # fmt: skip

    # ----------------------------------------------------------------------------- aliases

    def aliases(self, name: str) -> dict[str, int]:
        """``{alias: version}`` for ``name``."""
        with self._tx(read=True) as conn:
            return sql.alias_map(conn, name).get(name, {})

    def promote(self, name: str, version: int, alias: str, *, reason: str | None = None,
                actor: str | None = None) -> AliasEvent:  # fmt: skip
        """Point ``alias`` at ``version`` and record the move (no new row if it already does).

        Example::

            reg.promote("churn", 4, "production", reason="gate passed: auc 0.93 > 0.91")

        Raises:
            ModelNotFoundError: no such model or version.
            UnsafeNameError: the alias is not a valid name, or is all digits.
        """
        rr.check_alias(alias)
        with self._tx() as conn:
            if sql.version_row(conn, name, int(version)) is None:
                raise self._missing(conn, name, int(version))
            current = sql.current_alias(conn, name, alias)
            past = sql.history_rows(conn, name, alias)
            if current == int(version) and past:
                return rr.event_from_row(past[-1])
            sql.move_alias(conn, name, alias, int(version), time.time())
            return self._record(conn, name, alias, "promote", current, int(version), None,
                                reason, actor)  # fmt: skip

    def rollback(self, name: str, alias: str, *, reason: str | None = None,
                 actor: str | None = None, expected: int | None = None) -> AliasEvent:  # fmt: skip
        """Move ``alias`` back to where it pointed before its latest (not yet undone) promotion.

        Rollbacks undo promotions in order: after promoting 1, 2 and 3, two rollbacks leave the
        alias on 1. With ``expected``, the alias moves only if it still points at that version.

        Example::

            reg.rollback("churn", "production", reason="error rate 4% > 1% for 5 minutes")

        Raises:
            ModelNotFoundError: no such model or alias.
            StoreError: nothing to roll back to, or the alias moved away from ``expected``.
        """
        with self._tx() as conn:
            current = self._alias_version(conn, name, alias)
            if expected is not None and current != expected:
                raise StoreError(
                    f"alias '{alias}' of model '{name}' points at version {current}, not "
                    f"{expected}: it moved meanwhile, so it was not rolled back"
                )
            stack = rr.effective_promotions(sql.history_rows(conn, name, alias))
            if not stack or stack[-1].from_version is None:
                raise StoreError(
                    f"alias '{alias}' of model '{name}' has no earlier version to roll back to "
                    f"(it points at version {current}); `rayline models history {name}` shows "
                    "its moves"
                )
            target = stack[-1].from_version
            sql.move_alias(conn, name, alias, target, time.time())
            return self._record(conn, name, alias, "rollback", current, target, stack[-1].id,
                                reason, actor)  # fmt: skip

    def record_event(self, name: str, event: str, *, alias: str | None = None,
                     from_version: int | None = None, to_version: int | None = None,
                     reason: str | None = None, actor: str | None = None) -> AliasEvent:  # fmt: skip
        """Add a history row that moves no alias (serving: ``rollout``, ``rollout_failed`` …)."""
        if event in ("promote", "rollback"):
            raise ValueError("use promote() or rollback() to move an alias")
        validate_name(event)
        with self._tx() as conn:
            return self._record(conn, name, alias, event, from_version, to_version, None,
                                reason, actor)  # fmt: skip

    def history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Every alias move and serving event of ``name`` (of one alias if given), oldest first."""
        with self._tx(read=True) as conn:
            rows = sql.history_rows(conn, name, alias)
            if not rows and not sql.has_model(conn, name):
                raise self._missing(conn, name, None)
        return [rr.event_from_row(r) for r in rows]

    # ---------------------------------------------------------------------------- internals

    def _alias_version(self, conn: Connection, name: str, alias: str) -> int:
        found = sql.current_alias(conn, name, alias)
        if found is not None:
            return found
        if not sql.has_model(conn, name):
            raise self._missing(conn, name, None)
        known = sorted(sql.alias_map(conn, name).get(name, {}))
        raise ModelNotFoundError(
            f"model '{name}' has no alias '{alias}'; its aliases: {', '.join(known) or 'none'} "
            f"(set one with `rayline models promote {name} VERSION {alias}`)"
        )

    def _record(self, conn: Connection, name: str, alias: str | None, event: str,
                from_version: int | None, to_version: int | None, undoes: int | None,
                reason: str | None, actor: str | None) -> AliasEvent:  # fmt: skip
        values = {"name": name, "alias": alias, "event": event, "from_version": from_version,
                  "to_version": to_version, "undoes": undoes, "at": time.time(),
                  "reason": reason, "actor": actor or rr.default_actor()}  # fmt: skip
        new_id = sql.insert_event(conn, **values)
        return AliasEvent(id=new_id, **{**values, "at": rr.utc(values["at"])})

    def _missing(self, conn: Connection, name: str, version: int | None) -> ModelNotFoundError:
        if not sql.has_model(conn, name):
            known = sql.model_names(conn)
            return ModelNotFoundError(
                f"no model named '{name}' in {self._where}; registered models: "
                f"{', '.join(known[:20]) or 'none'}"
            )
        have = rr.span(sql.version_numbers(conn, name))
        return ModelNotFoundError(f"model '{name}' has no version {version}; its versions: {have}")


def _unpickle(settings: Any, store: ArtifactStore | None = None) -> ModelRegistry:
    return ModelRegistry(settings, connect=False, store=store)


def _by_version(alias_to_version: Mapping[str, int]) -> dict[int, tuple[str, ...]]:
    out: dict[int, tuple[str, ...]] = {}
    for a, v in sorted(alias_to_version.items()):
        out[v] = (*out.get(v, ()), a)
    return out
