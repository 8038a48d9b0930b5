"""What the models pages read from the model registry (as ``rayline models`` and ``rayline
drift show`` read it): models with their aliases, and per model its versions (metrics, lineage:
run and data snapshot), alias history, what is deployed, and the latest drift report.

Example::

    with registry(settings) as reg:
        page = model_page(reg, "churn", settings.resolved_home)
        page.versions[0].metrics, page.current("production"), page.drift
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelsPage:
    """Every registered model, and every deployment rayline recorded."""

    models: list[Any]  # ModelSummary
    deployments: list[dict[str, Any]]

    def serving(self, name: str) -> list[dict[str, Any]]:
        return [d for d in self.deployments if d.get("name") == name]


@dataclass(frozen=True, slots=True)
class ModelPage:
    """One model: versions newest first, aliases, history oldest first, serving, drift."""

    name: str
    versions: list[Any]  # ModelVersion
    aliases: dict[str, int]
    history: list[Any]  # AliasEvent
    deployments: list[dict[str, Any]]
    drift: Any | None  # DriftReport

    def current(self, alias: str) -> int | None:
        return self.aliases.get(alias)

    def can_roll_back(self, alias: str) -> bool:
        """Whether ``alias`` has a promotion, not yet undone, from an earlier version."""
        stack: list[Any] = []
        for e in self.history:
            if e.alias == alias and e.event == "promote":
                stack.append(e)
            elif e.alias == alias and e.event == "rollback" and stack:
                stack.pop()
        return bool(stack) and stack[-1].from_version is not None

    @property
    def drift_checked(self) -> str | None:
        if self.drift is None:
            return None
        return datetime.fromtimestamp(self.drift.created_at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def models_page(reg: Any) -> ModelsPage:
    """Every model and deployment in the registry ``reg``."""
    return ModelsPage(list(reg.list_models()), _deployments(reg))


def model_page(reg: Any, name: str, home: Path) -> ModelPage:
    """The page of model ``name``.

    Raises:
        ModelNotFoundError: no such model.
    """
    versions = sorted(reg.versions(name), key=lambda v: v.version, reverse=True)
    deployments = [d for d in _deployments(reg) if d.get("name") == name]
    return ModelPage(name, versions, dict(reg.aliases(name)), list(reg.history(name)), deployments,
                     _drift(name, home))  # fmt: skip


def _deployments(reg: Any) -> list[dict[str, Any]]:
    """What rayline deployed (serving's own records, beside the registry)."""
    from rayline.serving.deployments import DeploymentRecords

    with DeploymentRecords(reg) as records:
        return records.find()


def _drift(name: str, home: Path) -> Any | None:
    from rayline.errors import StoreError
    from rayline.monitoring.drift_stats import load_report

    try:
        return load_report(name, home)
    except (StoreError, FileNotFoundError, KeyError):
        return None
