"""The registry protocol: what training, the gate, serving and the CLI ask of a model registry.

A backend is one module with a class that has these methods; ``rayline.models.registry.sql``
(``ModelRegistry``, SQLite/SQLAlchemy) is the one rayline ships. An MLflow backend would map
``register`` to a logged model version, aliases to MLflow's registered-model aliases and keep
the history in tags.

Every method takes and returns the plain records of ``rayline.models.registry.records``
(``ModelVersion``, ``AliasEvent``, ``ModelSummary``). ``load`` takes a ``ModelVersion`` already
resolved by ``get``, so the process that loads (a serving replica on any node) needs the
artifact store only, never the registry's database.

Example::

    def champion(reg: Registry, name: str) -> Any:
        return reg.load(reg.get(name, alias="production"))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from rayline.models.registry.records import AliasEvent, ModelSummary, ModelVersion

__all__ = ["Registry"]


@runtime_checkable
class Registry(Protocol):
    """Versioned models with metrics, lineage and aliases, and the history of alias moves."""

    def register(self, name: str, model: Any, *, metrics: Mapping[str, Any] | None = None,
                 lineage: Mapping[str, Any] | None = None, features: Any = None,
                 inputs: list[str] | tuple[str, ...] | None = None,
                 description: str | None = None) -> ModelVersion:  # fmt: skip
        """Store ``model`` as the next version of ``name``."""
        ...

    def get(self, name: str, version: int | None = None, alias: str | None = None) -> ModelVersion:
        """One version: by number, by alias, or the latest (``ModelNotFoundError`` if none)."""
        ...

    def load(self, version: ModelVersion) -> Any:
        """The model object of ``version``, verified before it is unpickled."""
        ...

    def load_features(self, version: ModelVersion) -> Any:
        """The feature transform registered with ``version``, or None."""
        ...

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first."""
        ...

    def list_models(self) -> list[ModelSummary]:
        """One summary per model."""
        ...

    def aliases(self, name: str) -> dict[str, int]:
        """``{alias: version}`` for ``name``."""
        ...

    def history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Every alias move and recorded event of ``name``, oldest first."""
        ...

    def promote(self, name: str, version: int, alias: str, *, reason: str | None = None,
                actor: str | None = None) -> AliasEvent:  # fmt: skip
        """Point ``alias`` at ``version`` and record the move."""
        ...

    def rollback(self, name: str, alias: str, *, reason: str | None = None,
                 actor: str | None = None, expected: int | None = None) -> AliasEvent:  # fmt: skip
        """Move ``alias`` back to where it pointed before its latest promotion."""
        ...

    def record_event(self, name: str, event: str, *, alias: str | None = None,
                     from_version: int | None = None, to_version: int | None = None,
                     reason: str | None = None, actor: str | None = None) -> AliasEvent:  # fmt: skip
        """Add a history row that moves no alias (``gate_rejected``, ``rollout`` …)."""
        ...

    def close(self) -> None:
        """Release what the backend holds open."""
        ...
