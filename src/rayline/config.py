"""Settings (pydantic-settings): where runs and artifacts live, how to reach Ray.

Sources, highest first: keyword arguments, ``RAYLINE_*`` environment variables (``RAY_ADDRESS``
for the cluster), defaults. Built on demand and passed in; never a module-level singleton.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Embedded defaults need no server: local Ray, SQLite, a local artifact folder."""

    model_config = SettingsConfigDict(env_prefix="RAYLINE_", extra="ignore")

    home: Path = Field(default=Path(".rayline"), description="Run store and artifacts root.")
    db_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in home.")
    ray_address: str | None = Field(
        default=None, validation_alias=AliasChoices("RAYLINE_RAY_ADDRESS", "RAY_ADDRESS")
    )
    lease_ttl: float = Field(default=30.0, description="Seconds without heartbeat = dead driver.")
    heartbeat_interval: float = 5.0
    persist: str = Field(default="all", description="'all' task outputs, or only 'marked' ones.")
    inline_limit: int = Field(
        default=1024 * 1024 * 1024,
        description="Outputs larger than this (bytes; on Ray, at most a quarter of a node's object "
        "store) travel through the artifact store, not Ray.",
    )
    pool: str = Field(
        default="auto",
        description="Warm actors for small tasks: 'auto' (runs of >= 8 one-CPU tasks), 'on', 'off'.",
    )
    num_cpus: int | None = Field(default=None, description="CPUs for a local Ray started on demand.")
    object_store_memory: int | None = None
    serve_max_body_bytes: int = Field(
        default=1 << 20, description="Largest /predict body a served model accepts (HTTP 413 past it)."
    )
    serve_max_json_depth: int = Field(
        default=64, description="Deepest nesting of a /predict body (HTTP 400 past it)."
    )
    # Notifications, secrets (issue 14): rayline.launch.notify, rayline.sdk.secrets.
    notify_url: str | None = Field(
        default=None, description="Webhook POSTed a JSON summary (run id, flow, status, error, link) when a run ends."
    )
    notify_on: Literal["all", "failure"] = Field(
        default="all", description="Which ends the webhook hears of: 'all', or 'failure' (FAILED, INTERRUPTED)."
    )
    notify_timeout: float = Field(default=5.0, gt=0, description="Seconds the webhook may take.")
    ui_url: str | None = Field(default=None, description="Base URL of the web UI, for links to a run.")
    secrets_dir: Path | None = Field(
        default=None, description="A folder of secrets, one 0600 file per secret, for rayline.Secret('NAME')."
    )

    artifacts_url: str | None = Field(
        default=None,
        description="Where artifacts live: a folder, file://, s3://, gs://, abfs:// (default "
        "home/artifacts). Every node must reach it.",
    )
    artifacts_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options for artifacts_url (JSON in RAYLINE_ARTIFACTS_OPTIONS).",
    )

    @field_validator("notify_url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        if value and not value.lower().startswith(("http://", "https://")):
            raise ValueError(f"RAYLINE_NOTIFY_URL must be an http:// or https:// URL, got {value!r}")
        return value or None

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def run_store_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{self.resolved_home / 'runs.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.resolved_home / "artifacts"

    @property
    def ray_dir(self) -> Path:
        """rayline's own Ray: its token and the record of the Rays it started (0700)."""
        return self.resolved_home / "ray"
