"""What a deployment is made of: the replica's JSON-able ``spec`` and Serve's options.

``build_spec`` is the model version to serve and how to answer (limits, batching, the bearer
token's sha256), handed to the replica as Serve's ``user_config``; ``deployment_options`` the
replicas, concurrency, health checks and logging; ``token_sha256`` reads the bearer token.

Example::

    spec = build_spec(mv, home, alias="production", token=None, batch_max_size=32,
                      batch_wait_timeout_s=0.005, max_body_bytes=1 << 20, max_records=10_000)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from rayline.errors import UsageError
from rayline.models.registry.records import ModelVersion

__all__ = ["DEFAULT_MAX_JSON_DEPTH", "QUIET_LOGS", "build_spec", "deployment_options", "token_sha256"]

#: Nesting deeper than this is refused when a deployment does not say (RAYLINE_SERVE_MAX_JSON_DEPTH).
DEFAULT_MAX_JSON_DEPTH = 64

QUIET_LOGS = {"log_level": "WARNING", "enable_access_log": False}


def token_sha256(*, env: str | None = None, file: str | Path | None = None) -> str | None:
    """The sha256 of the bearer token in env var ``env`` or file ``file`` (never the token).

    Raises:
        UsageError: the variable is unset or empty, or the file is unreadable or empty.
    """
    if env and file:
        raise UsageError("give auth_token_env or auth_token_file, not both")
    if env:
        token = os.environ.get(env, "").strip()
        if not token:
            raise UsageError(f"auth token variable {env} is not set (or empty)")
    elif file:
        try:
            token = Path(file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as e:
            raise UsageError(f"cannot read the auth token file {file}: {e.strerror}") from e
        if not token:
            raise UsageError(f"auth token file {file} is empty")
    else:
        return None
    return hashlib.sha256(token.encode()).hexdigest()


def build_spec(mv: ModelVersion, home: Path, *, alias: str | None, token: str | None,
               batch_max_size: int, batch_wait_timeout_s: float, max_body_bytes: int,
               max_records: int, max_json_depth: int = DEFAULT_MAX_JSON_DEPTH) -> dict[str, Any]:  # fmt: skip
    """The replica's argument: what to load and how to answer. JSON-able, secret-free."""
    if batch_max_size < 1 or batch_wait_timeout_s < 0:
        raise UsageError("batch_max_size must be >= 1 and batch_wait_timeout_s >= 0")
    if max_body_bytes < 1 or max_json_depth < 1:
        raise UsageError("max_body_bytes and max_json_depth must be >= 1")
    from rayline.config import Settings

    artifacts_url = Settings(home=home).artifacts_url  # the replica reads the model from there
    return {"home": str(home), "artifacts_url": artifacts_url, "name": mv.name, "version": mv.version, "digest": mv.digest,
            "created_at": mv.created_at.isoformat(), "flavor": mv.flavor, "inputs": None if mv.inputs is None else list(mv.inputs),
            "features_digest": mv.features_digest, "alias": alias, "token_sha256": token,
            "batch_max_size": int(batch_max_size),
            "batch_wait_timeout_s": float(batch_wait_timeout_s),
            "max_body_bytes": int(max_body_bytes), "max_records": int(max_records),
            "max_json_depth": int(max_json_depth)}  # fmt: skip


def deployment_options(*, num_replicas: int, autoscaling: dict[str, Any] | None,
                       max_ongoing_requests: int | None, max_queued_requests: int,
                       ray_actor_options: dict[str, Any] | None, batch_max_size: int,
                       health_check_period_s: float,
                       health_check_timeout_s: float,
                       max_constructor_retries: int = 3) -> dict[str, Any]:  # fmt: skip
    """Serve deployment options: replicas or autoscaling bounds, concurrency, health checks."""
    actor = {"num_cpus": 0.5, **(ray_actor_options or {})}  # surge fits on 2 CPUs
    opts: dict[str, Any] = {
        "max_ongoing_requests": int(max_ongoing_requests or max(64, 2 * batch_max_size)),
        "max_queued_requests": int(max_queued_requests),
        # Past the queue bound, say "too many requests, retry in 1 s" rather than Serve's 503.
        "backpressure_config": {"status_code": 429, "retry_after_s": 1},
        "ray_actor_options": actor,
        "health_check_period_s": float(health_check_period_s),
        "health_check_timeout_s": float(health_check_timeout_s),
        "graceful_shutdown_wait_loop_s": 0.5,
        "graceful_shutdown_timeout_s": 10.0,
        "max_constructor_retry_count": int(max_constructor_retries),
        "max_surge_percent": 100,
        "logging_config": dict(QUIET_LOGS),
    }
    if autoscaling:
        lo = int(autoscaling.get("min", autoscaling.get("min_replicas", 1)))
        hi = int(autoscaling.get("max", autoscaling.get("max_replicas", max(lo, 1))))
        if not 0 <= lo <= hi or hi < 1:
            raise UsageError(f"autoscaling needs 0 <= min <= max and max >= 1, got {lo}..{hi}")
        extra = {k: v for k, v in autoscaling.items() if k not in ("min", "max")}
        opts["autoscaling_config"] = {"min_replicas": lo, "max_replicas": hi,
                                      "target_ongoing_requests": batch_max_size, **extra}  # fmt: skip
    else:
        opts["num_replicas"] = int(num_replicas)
    return opts
