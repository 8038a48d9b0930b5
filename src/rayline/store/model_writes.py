"""What a task wrote to the model registry, carried back to the driver and committed there.

Ray workers never open the run store's database (DESIGN principle 8). A task that uses the
registry (``@task(registry=True)``: ``register_model``, ``gate_and_promote``,
``rollout_if_promoted``) gets the registry's rows from the driver (``model_rows``, read when the
task is submitted, after its upstream tasks committed theirs), works on a private copy of them
(``rayline.models.registry.task_view``), and returns what changed (``diff_model_rows``) with its
result. The driver applies that (``apply_model_writes``) in the transaction that records the
task's success, so a task's registrations, alias moves and deployment records are committed
exactly when the task is.

The writes are plain JSON-able dicts (``op`` one of ``version``, ``alias``, ``event``,
``deployment``, ``undeploy``). Checks are optimistic: a version number taken meanwhile, or an
alias that moved since the task read it, raises ``ModelWriteConflict`` and nothing is written
(the runner fails the task with that message; it can be retried). Deployment records are last
writer wins.

Example::

    before = model_rows(conn)              # driver, at submit
    ... the task changes a copy ...
    writes = diff_model_rows(before, after)  # worker, at the end of the task
    apply_model_writes(conn, writes)       # driver, with the task's success
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from rayline.errors import StoreError
from rayline.store.schema import alias_history, aliases, deployments, model_versions

__all__ = ["ModelWriteConflict", "apply_model_writes", "diff_model_rows", "model_rows"]

Rows = Mapping[str, Sequence[Mapping[str, Any]]]
_TABLES = {"model_versions": model_versions, "aliases": aliases, "alias_history": alias_history,
           "deployments": deployments}  # fmt: skip


class ModelWriteConflict(StoreError):
    """The registry changed between the task's read and its commit (a version number taken, an
    alias moved): the task's writes are refused as a whole."""


def model_rows(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    """Every row of the registry's and serving's tables, as plain dicts (what a task gets)."""
    return {name: [dict(r._mapping) for r in conn.execute(select(table))]
            for name, table in _TABLES.items()}  # fmt: skip


def _keyed(rows: Sequence[Mapping[str, Any]], *keys: str) -> dict[tuple[Any, ...], Mapping[str, Any]]:
    return {tuple(r[k] for k in keys): r for r in rows}


def diff_model_rows(before: Rows, after: Rows) -> list[dict[str, Any]]:
    """The writes that take the rows ``before`` to ``after`` (new versions, alias moves, new
    history rows, changed deployment records), in the order they must be applied."""
    out: list[dict[str, Any]] = []
    old = _keyed(before.get("model_versions", ()), "name", "version")
    for key, row in _keyed(after.get("model_versions", ()), "name", "version").items():
        if key not in old:
            out.append({"op": "version", "row": dict(row)})
    old_alias = _keyed(before.get("aliases", ()), "name", "alias")
    for key, row in _keyed(after.get("aliases", ()), "name", "alias").items():
        was = old_alias.get(key)
        if was is None or was["version"] != row["version"]:
            out.append({"op": "alias", "row": dict(row), "expected": None if was is None else was["version"]})
    seen = {r["id"] for r in before.get("alias_history", ())}
    for row in sorted(after.get("alias_history", ()), key=lambda r: r["id"]):
        if row["id"] not in seen:
            out.append({"op": "event", "row": dict(row)})
    old_dep = _keyed(before.get("deployments", ()), "app")
    new_dep = _keyed(after.get("deployments", ()), "app")
    for key, row in new_dep.items():
        if old_dep.get(key) != row:
            out.append({"op": "deployment", "row": dict(row)})
    out += [{"op": "undeploy", "app": key[0]} for key in old_dep if key not in new_dep]
    return out


def apply_model_writes(conn: Connection, writes: Sequence[Mapping[str, Any]], *, by: str) -> None:
    """Apply a task's writes inside the caller's transaction; ``by`` names the task in errors.

    Raises:
        ModelWriteConflict: a version number is taken, or an alias moved since the task read it.
    """
    ids: dict[int, int] = {}  # the task's history ids -> the ones the database gave them
    try:
        for w in writes:
            op, row = w["op"], dict(w.get("row") or {})
            if op == "version":
                _insert_version(conn, row, by)
            elif op == "alias":
                _move_alias(conn, row, w.get("expected"), by)
            elif op == "event":
                old = row.pop("id")
                if row.get("undoes") in ids:
                    row["undoes"] = ids[row["undoes"]]
                ids[old] = int(conn.execute(insert(alias_history).values(**row)).inserted_primary_key[0])
            elif op == "deployment":
                q = update(deployments).where(deployments.c.app == row["app"]).values(**row)
                if conn.execute(q).rowcount == 0:
                    conn.execute(insert(deployments).values(**row))
            elif op == "undeploy":
                conn.execute(delete(deployments).where(deployments.c.app == w["app"]))
            else:
                raise StoreError(f"{by}: unknown registry write {op!r}")
    except IntegrityError as e:  # a concurrent writer got there between the check and the insert
        raise ModelWriteConflict(f"{by}: the model registry changed while the task ran ({e.orig}); "
                                 "run it again") from e  # fmt: skip


def _insert_version(conn: Connection, row: dict[str, Any], by: str) -> None:
    mv = model_versions.c
    taken = conn.execute(select(mv.digest).where(mv.name == row["name"], mv.version == row["version"])).first()
    if taken is not None:
        raise ModelWriteConflict(
            f"{by}: version {row['version']} of model '{row['name']}' was registered by someone "
            "else while the task ran; run the task again to register the next version"
        )
    conn.execute(insert(model_versions).values(**row))


def _move_alias(conn: Connection, row: dict[str, Any], expected: int | None, by: str) -> None:
    a = aliases.c
    where = (a.name == row["name"], a.alias == row["alias"])
    current = conn.execute(select(a.version).where(*where).with_for_update()).scalar()
    if current != expected:
        raise ModelWriteConflict(
            f"{by}: alias '{row['alias']}' of model '{row['name']}' moved while the task ran "
            f"(it pointed at {expected}, now at {current}); run the task again"
        )
    if current is None:
        conn.execute(insert(aliases).values(**row))
    else:
        conn.execute(update(aliases).where(*where).values(version=row["version"], updated_at=row["updated_at"]))
