"""Deploy, update and roll back a served model version on Ray Serve.

``serve_model`` deploys a registered version (by number or alias) as a Serve application on
127.0.0.1. Called again for the same application with another version, it updates it *in place*.
The model version travels as the deployment's ``user_config``, so with one replica (the default)
Serve hands it to the running replica's ``reconfigure`` (a lightweight update): the replica loads
the new model beside the old one, probes it (``setup``, one ``check_health``) and swaps it in at
once; no new process starts (starting a replica took ~4 s of an update on 2 cores; the swap
answers ~0.5 s after the deploy call, see ``benchmarks/trigger.py``). If the new model fails to
load, the replica keeps serving the old one and says why (``ModelServer.rollout_state``).
With several replicas or autoscaling, new replicas surge in instead (``max_surge_percent=100``):
the old ones keep serving until the new ones have passed their constructor and health check,
then drain. The call waits for the outcome (``serve.status()``, then the replica's own word)
and, after an update, watches the new version for a bake period. If the new version fails (it
cannot load, or its health check fails), the previous version is deployed again (in place, or
Serve kept its replicas: nothing restarts), the registry's history records ``rollout_failed``
with reason ``rollback: health check failed`` (or ``constructor failed``), an alias that
pointed at the bad version is rolled back, and ``RolloutError`` is raised.

How we deploy for speed on small machines (measured in ``benchmarks/serve.py``; on 2 cores the
proxy and the replica each burn several ms of CPU per request, so CPU per request is the
budget): one replica by default; the proxy and replicas at normal CPU priority instead of Ray's
nice 15; access logs off and Serve's log level at WARNING; the proxy's router and the replica's
user code on their process's main event loop (``PROXY_ENV``, ``REPLICA_ENV``); ``max_ongoing_requests`` well above the batch size
(Serve's default of 5 parks requests in the proxy's router backoff loop); ``@serve.batch`` across
requests; and a numeric fast path in the predictor (a float matrix, not a DataFrame).

Example::

    d = serve_model("churn", alias="production", port=8000)          # first deployment
    serve_model("churn", version=5, port=8000)                        # in-place update
    stop_serving("churn")
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayline.errors import RaylineError, RolloutError, UsageError
from rayline.models.registry import ModelVersion, open_registry
from rayline.models.registry.sql import ModelRegistry
from rayline.monitoring.input_log import input_log_spec
from rayline.serving.deployments import DeploymentRecords
from rayline.serving.options import build_spec, deployment_options, token_sha256
from rayline.serving.serve_control import (
    ACTOR,
    connect_ray,
    deploy,
    ensure_serve,
    loaded,
    wait_for,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Deployment:
    """A model version serving as Serve application ``app`` at ``url``."""

    app: str
    name: str
    version: int
    alias: str | None
    url: str
    status: str
    previous_version: int | None = None
    spec: dict[str, Any] = field(default_factory=dict, hash=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"app": self.app, "name": self.name, "version": self.version, "alias": self.alias,
                "url": self.url, "status": self.status,
                "previous_version": self.previous_version}  # fmt: skip



# ------------------------------------------------------------------------------- the API


def serve_model(
    name: str,
    version: int | None = None,
    alias: str | None = "production",
    *,
    home: Any = None,
    route_prefix: str = "/",
    app_name: str | None = None,
    num_replicas: int = 1,
    autoscaling: dict[str, Any] | None = None,
    max_ongoing_requests: int | None = None,
    max_queued_requests: int = 1024,
    batch_max_size: int = 32,
    batch_wait_timeout_s: float = 0.005,
    ray_actor_options: dict[str, Any] | None = None,
    auth_token_env: str | None = None,
    auth_token_file: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_body_bytes: int | None = None,
    max_records: int = 10_000,
    max_json_depth: int | None = None,
    health_check_period_s: float = 5.0,
    health_check_timeout_s: float = 10.0,
    max_constructor_retries: int = 3,
    bake_s: float | None = None,
    timeout_s: float = 180.0,
    address: str | None = None,
    input_log: bool | dict[str, Any] | None = None,
    ingress: str | None = None,
) -> Deployment:
    """Serve version ``version`` (else the one ``alias`` points at) of model ``name`` over HTTP.

    A first call deploys; a later call for the same ``app_name`` (default: the model name)
    updates in place with zero failed requests, or rolls back (see the module docstring).

    Args:
        num_replicas / autoscaling: fixed replicas, or ``{"min": 1, "max": 4}`` (other keys go
            to Serve's ``autoscaling_config``).
        ray_actor_options: per replica, e.g. ``{"num_cpus": 1, "num_gpus": 0.25}``.
        auth_token_env / auth_token_file: where the bearer token is; replicas get its sha256.
        bake_s: how long an update is watched after it runs (default: 2 health-check periods;
            0 for a first deployment).
        address: the Ray cluster (default ``RAY_ADDRESS``, else a local Ray in this process).
        input_log: log served records for drift (``True``, or logger options ``{"flush_seconds":
            2, "dir": ...}``, see ``monitoring.input_log``; ``False``: off). None: an update keeps
            what it replaces had, else ``RAYLINE_INPUT_LOG`` in the replicas' environment.
        max_body_bytes / max_json_depth: the largest request body (413 past it) and its deepest
            nesting (400 past it); default: the settings (``RAYLINE_SERVE_MAX_BODY_BYTES``, 1 MiB;
            ``RAYLINE_SERVE_MAX_JSON_DEPTH``, 64).
        ingress: ``proxy`` or ``haproxy`` (``serve_control.INGRESSES``) when this call starts
            Serve (default ``RAYLINE_SERVE_INGRESS``, else ``proxy``); a running Serve keeps its own.

    Example::

        d = serve_model("churn", alias="production", port=8000, autoscaling={"min": 1, "max": 2})
        print(d.url)   # http://127.0.0.1:8000/

    Raises:
        ModelNotFoundError: no such model, version or alias.
        RolloutError: the new version failed; the previous one serves again (if there was one).
    """
    log_spec = input_log_spec(input_log)
    if max_body_bytes is None or max_json_depth is None:
        from rayline.config import Settings

        settings = Settings()
        max_body_bytes = settings.serve_max_body_bytes if max_body_bytes is None else max_body_bytes
        max_json_depth = settings.serve_max_json_depth if max_json_depth is None else max_json_depth
    registry = open_registry(home)
    records = DeploymentRecords(registry)
    mv = registry.get(name, version=version, alias=None if version is not None else alias)
    app = app_name or name
    token = token_sha256(env=auth_token_env, file=auth_token_file)
    spec = build_spec(mv, registry.home, alias=alias if version is None else None, token=token,
                      batch_max_size=batch_max_size, batch_wait_timeout_s=batch_wait_timeout_s,
                      max_body_bytes=max_body_bytes, max_records=max_records,
                      max_json_depth=max_json_depth)  # fmt: skip
    options = deployment_options(
        num_replicas=num_replicas, autoscaling=autoscaling,
        max_ongoing_requests=max_ongoing_requests, max_queued_requests=max_queued_requests,
        ray_actor_options=ray_actor_options, batch_max_size=batch_max_size,
        health_check_period_s=health_check_period_s, health_check_timeout_s=health_check_timeout_s,
        max_constructor_retries=max_constructor_retries,
    )  # fmt: skip
    connect_ray(address)
    import ray

    bound_host, bound_port = ensure_serve(host, port, ingress=ingress)
    prefix = "/" + route_prefix.strip("/")
    url = f"http://{bound_host}:{bound_port}{'' if prefix == '/' else prefix}"
    previous = _live_previous(records, app)
    if log_spec is None and previous is not None:  # an update keeps the input logging it had
        log_spec = previous["spec"]["spec"].get("input_log")
    if log_spec is not None:
        spec["input_log"] = log_spec
    record = {"spec": spec, "options": options, "route_prefix": prefix, "url": url,
              "address": ray.get_runtime_context().gcs_address}  # fmt: skip
    if previous is not None and previous["spec"] == record:
        return _deployment(app, mv, spec["alias"], url, "RUNNING", previous["version"], spec)
    started = time.monotonic()
    deploy(app, record)
    bake = bake_s if bake_s is not None else (2 * health_check_period_s if previous else 0.0)
    why = wait_for(app, timeout_s=timeout_s)
    if why is None:
        why = loaded(app, spec, timeout_s=max(1.0, timeout_s - (time.monotonic() - started)))
    if why is None and bake > 0:
        why = wait_for(app, timeout_s=timeout_s, bake_s=bake)
    if why is None:
        records.put(app, mv, alias=spec["alias"], spec=record, status="RUNNING")
        registry.record_event(name, "rollout", alias=spec["alias"], to_version=mv.version,
                              from_version=previous["version"] if previous else None,
                              reason=f"serving as '{app}' at {url}", actor=ACTOR)  # fmt: skip
        return _deployment(app, mv, spec["alias"], url, "RUNNING",
                           previous["version"] if previous else None, spec)  # fmt: skip
    raise _roll_back(registry, records, app, mv, spec["alias"], previous, why, timeout_s)


def _live_previous(records: DeploymentRecords, app: str) -> dict[str, Any] | None:
    """What rayline deployed as ``app`` if Serve still runs it, else None."""
    from ray import serve

    found = records.find(app)
    live = serve.status().applications.get(app)
    if not found or live is None or live.status not in ("RUNNING", "DEPLOYING", "UNHEALTHY"):
        return None
    return found[0]


def _roll_back(registry: ModelRegistry, records: DeploymentRecords, app: str, mv: ModelVersion,
               alias: str | None,
               previous: dict[str, Any] | None, why: str, timeout_s: float) -> RolloutError:  # fmt: skip
    from ray import serve

    reason = f"rollback: {why}"
    from_version = previous["version"] if previous else None
    registry.record_event(mv.name, "rollout_failed", alias=alias, from_version=from_version,
                          to_version=mv.version, reason=reason, actor=ACTOR)  # fmt: skip
    if alias is not None and registry.aliases(mv.name).get(alias) == mv.version:
        try:
            registry.rollback(mv.name, alias, reason=reason, actor=ACTOR, expected=mv.version)
        except RaylineError as e:  # nothing earlier to point at: keep the alias, say so
            log.warning("alias %s of %s not rolled back: %s", alias, mv.name, e)
    if previous is None:
        serve.delete(app)
        return RolloutError(f"model '{mv.name}' version {mv.version} failed to deploy as '{app}' "
                            f"({why}); nothing was serving there, so nothing serves now",
                            app=app, failed=mv.version, serving=None)  # fmt: skip
    deploy(app, previous["spec"])
    again = wait_for(app, timeout_s=timeout_s) or loaded(app, previous["spec"]["spec"], timeout_s=timeout_s)
    status = "RUNNING" if again is None else "FAILED"
    prev_mv = registry.get(previous["name"], previous["version"])
    records.put(app, prev_mv, alias=previous["alias"], spec=previous["spec"], status=status)
    tail = "" if again is None else f"; restoring it also failed: {again}"
    return RolloutError(
        f"model '{mv.name}' version {mv.version} failed to deploy as '{app}' ({why}); version "
        f"{prev_mv.version} serves again{tail}", app=app, failed=mv.version,
        serving=prev_mv.version if again is None else None,
    )


def _deployment(app: str, mv: ModelVersion, alias: str | None, url: str, status: str,
                previous: int | None, spec: dict[str, Any]) -> Deployment:  # fmt: skip
    return Deployment(app, mv.name, mv.version, alias, url, status, previous, spec)


def stop_serving(app: str | None = None, *, home: Any = None, address: str | None = None) -> list[str]:
    """Delete Serve application ``app`` (every rayline application if None); their names.

    Connects to the cluster recorded at deploy time unless ``address`` or Ray is set already.
    """
    from ray import serve

    store = DeploymentRecords(open_registry(home, connect=False).settings)
    records = store.find(app)
    if app is not None and not records:
        known = ", ".join(r["app"] for r in store.find()) or "none"
        raise UsageError(f"rayline serves no application '{app}'; deployed: {known}")
    connect_ray(address or (records[0]["spec"].get("address") if records else None))
    live = serve.status().applications
    stopped = []
    for r in records:
        if r["app"] in live:
            serve.delete(r["app"])
            stopped.append(r["app"])
        store.forget(r["app"])
    return stopped


def serving_status(home: Any = None) -> list[dict[str, Any]]:
    """What rayline deployed, with Serve's live status when Ray is connected."""
    rows = DeploymentRecords(open_registry(home, connect=False).settings).find()
    live: dict[str, Any] = {}
    try:
        import ray
        from ray import serve

        if ray.is_initialized():
            live = {k: v.status for k, v in serve.status().applications.items()}
    except Exception:  # Serve not running here: report what was recorded
        live = {}
    return [{"app": r["app"], "model": r["name"], "version": r["version"], "alias": r["alias"],
             "url": r["spec"].get("url"), "recorded_status": r["status"],
             "live_status": live.get(r["app"]), "updated_at": r["updated_at"]} for r in rows]
