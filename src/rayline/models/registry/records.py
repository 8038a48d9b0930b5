"""The model registry's records: frozen values out of the registry, and their JSON forms.

``ModelVersion`` (one registered version), ``AliasEvent`` (one row of the promotion history) and
``ModelSummary`` (one line of ``list_models``), the row conversions, and the small rules the
registry applies to names, references (``NAME``, ``NAME@3``, ``NAME@production``), JSON, the
artifacts a version refers to (its feature transform, a TrainedModel's estimator).
"""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rayline.errors import ModelNotFoundError, StoreError, UnsafeNameError
from rayline.store.files import check_digest, validate_name
from rayline.store.sql import to_json as sql_to_json

if TYPE_CHECKING:
    from rayline.store.artifacts import ArtifactStore

__all__ = [
    "AliasEvent",
    "ModelNotFoundError",
    "ModelSummary",
    "ModelVersion",
    "check_alias",
    "parse_ref",
    "to_json",
]


def utc(ts: float | None) -> datetime | None:
    """A UTC-aware datetime from epoch seconds (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(float(ts), UTC)


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One registered version of a model. ``to_dict()`` gives its JSON form.

    Attributes:
        name, version: the model and its version number (1, 2, …).
        digest: the sha256 of the model's bytes in the artifact store.
        flavor: ``sklearn``, ``torch`` or ``pyfunc`` (how serving calls it).
        metrics, lineage: JSON-able dicts (lineage: run_id, node_id, flow_name, input_snapshot,
            code_hash …).
        inputs: the record fields the model needs, when known.
        features_digest: the stored feature transform applied before the model, if any.
        aliases: the aliases pointing at this version when it was read.
    """

    name: str
    version: int
    digest: str
    flavor: str
    metrics: dict[str, Any] = field(hash=False)
    lineage: dict[str, Any] = field(hash=False)
    created_at: datetime
    inputs: tuple[str, ...] | None = None
    features_digest: str | None = None
    aliases: tuple[str, ...] = ()
    description: str | None = None

    @property
    def ref(self) -> str:
        """``name@version``, the form ``ModelRegistry.resolve`` and the CLI accept."""
        return f"{self.name}@{self.version}"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelVersion:
        """Inverse of ``to_dict`` (metrics, lineage, aliases and description may be left out)."""
        inputs = d.get("inputs")
        return cls(
            name=d["name"], version=int(d["version"]), digest=d["digest"], flavor=d["flavor"],
            metrics=dict(d.get("metrics") or {}), lineage=dict(d.get("lineage") or {}),
            created_at=datetime.fromisoformat(d["created_at"]),
            inputs=None if inputs is None else tuple(inputs),
            features_digest=d.get("features_digest"), aliases=tuple(d.get("aliases") or ()),
            description=d.get("description"),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "digest": self.digest,
            "flavor": self.flavor, "metrics": dict(self.metrics), "lineage": dict(self.lineage),
            "created_at": self.created_at.isoformat(),
            "inputs": None if self.inputs is None else list(self.inputs),
            "features_digest": self.features_digest, "aliases": list(self.aliases),
            "description": self.description,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class AliasEvent:
    """One row of the promotion history: an alias move (``promote``, ``rollback``) or a serving
    event (``rollout``, ``rollout_failed``) that moved no alias."""

    id: int
    name: str
    alias: str | None
    event: str
    from_version: int | None
    to_version: int | None
    undoes: int | None
    at: datetime
    reason: str | None
    actor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "alias": self.alias, "event": self.event,
            "from_version": self.from_version, "to_version": self.to_version,
            "undoes": self.undoes, "at": self.at.isoformat(), "reason": self.reason,
            "actor": self.actor,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """One line of ``list_models()``: a name, its latest version, how many, its aliases."""

    name: str
    latest_version: int
    num_versions: int
    updated_at: datetime
    aliases: dict[str, int] = field(hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "latest_version": self.latest_version,
            "num_versions": self.num_versions, "updated_at": self.updated_at.isoformat(),
            "aliases": dict(self.aliases),
        }  # fmt: skip


def version_from_row(row: Any, names: tuple[str, ...]) -> ModelVersion:
    m = row._mapping
    inputs = json.loads(m["inputs_json"]) if m["inputs_json"] else None
    return ModelVersion(
        name=m["name"], version=int(m["version"]), digest=m["digest"], flavor=m["flavor"],
        metrics=json.loads(m["metrics_json"]), lineage=json.loads(m["lineage_json"]),
        created_at=utc(m["created_at"]), inputs=None if inputs is None else tuple(inputs),
        features_digest=m["features_digest"], aliases=names, description=m["description"],
    )  # fmt: skip


def event_from_row(row: Any) -> AliasEvent:
    m = dict(row._mapping)
    return AliasEvent(**{**m, "at": utc(m["at"])})


def effective_promotions(rows: list[Any]) -> list[AliasEvent]:
    """The promotions of one alias that no rollback has undone, oldest first (a stack)."""
    stack: list[AliasEvent] = []
    for row in rows:
        ev = event_from_row(row)
        if ev.event == "promote":
            stack.append(ev)
        elif ev.event == "rollback" and stack:
            stack.pop()
    return stack


def to_json(value: Any, what: str) -> str:
    """JSON text for metrics, lineage or specs: a dict with string keys, written by the store's
    one rule (``rayline.store.sql.to_json``, lenient: numpy values, paths, datetimes and sets are
    converted); anything else is refused with a message naming ``what``."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"{what} must be a dict with string keys, got {type(value).__name__}")
    return sql_to_json(value, what, lenient=True)


def check_alias(alias: str) -> str:
    """Aliases are names (``^[A-Za-z0-9._-]{1,128}$``) that are not all digits (``NAME@3`` is a
    version)."""
    validate_name(alias)
    if alias.isdigit():
        raise UnsafeNameError(f"alias {alias!r} is all digits; NAME@{alias} would mean version "
                              f"{alias}. Pick a name such as 'production' or 'v{alias}'")  # fmt: skip
    return alias


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """``NAME`` → (name, None, None); ``NAME@3`` → (name, 3, None); ``NAME@ALIAS`` → alias.

    Example::

        parse_ref("churn@production")   # ('churn', None, 'production')
    """
    name, sep, tail = str(ref).partition("@")
    validate_name(name)
    if not sep:
        return name, None, None
    if tail.isdigit():
        return name, int(tail), None
    return name, None, check_alias(tail)


def span(versions: list[int]) -> str:
    """``[1, 2, 3, 5]`` → ``"1-3, 5"`` for messages."""
    runs: list[list[int]] = []
    for v in versions:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) or "none"


# ---------------------------------------------------------------------- referenced artifacts


def check_references(model: Any, store: ArtifactStore) -> None:
    """A TrainedModel keeps its estimator as a separate artifact: it must be in this store."""
    artifact = getattr(model, "artifact", None) if hasattr(model, "prepare") else None
    if artifact and not store.exists(artifact):
        raise StoreError(
            f"the model's estimator artifact {artifact} is not in {store.root}; register it from "
            "the RAYLINE_HOME it was trained in"
        )


def store_features(store: ArtifactStore, features: Any) -> str | None:
    """Store a feature transform (FittedFeatures as JSON, others pickled); its digest."""
    if features is None:
        return None
    if isinstance(features, str):
        if not store.exists(check_digest(features)):
            raise StoreError(f"no feature transform {features} in {store.root}")
        return features
    digest = getattr(features, "digest", None)
    if isinstance(digest, str) and store.exists(digest):
        return digest
    if callable(getattr(features, "save", None)):
        return str(features.save(store))  # FittedFeatures: JSON, no pickle
    if not callable(getattr(features, "transform", None)):
        raise TypeError(f"features must have transform(records), got {type(features).__name__}")
    return store.put(features).digest


def load_features(store: ArtifactStore, digest: str | None) -> Any:
    """Read back what ``store_features`` stored (checked by the store), or None."""
    if digest is None:
        return None
    if store.info(digest).fmt == "json":
        from rayline.models.features import FittedFeatures

        return FittedFeatures.load(store, digest)
    return store.get(digest)


def default_actor() -> str:
    """``user@host`` of this process, recorded with every alias move."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name in a minimal container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
