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

import functools
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayline.errors import RaylineError, RolloutError, UsageError
from rayline.serving.app import (
    DEPLOYMENT_NAME,
    QUIET_LOGS,
    ModelServer,
    build_spec,
    deployment_options,
    token_sha256,
)
from rayline.serving.input_log import input_log_spec
from rayline.tasks.registry import ModelRegistry, ModelVersion

log = logging.getLogger(__name__)

ACTOR = "rayline-serve"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Environment of the Serve controller and its HTTP proxy (which inherits it) when rayline
#: starts Serve: normal CPU priority (Ray starts workers at nice 15, meant for batch work, so any
#: other load on the node starves serving; Ray's own job supervisor opts out the same way), the
#: router on the proxy's own event loop (no thread hop per request) and request-path logs
#: buffered, not written to stderr. Extra keys: RAYLINE_SERVE_PROXY_ENV (JSON).
PROXY_ENV: dict[str, str] = {
    "RAY_worker_niceness": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_LOG_TO_STDERR": "0",
}
#: Environment of rayline's replicas (merged over the job's runtime_env): user code on the
#: replica's event loop (the app moves slow models to a thread itself). Extra keys:
#: RAYLINE_SERVE_REPLICA_ENV (JSON).
REPLICA_ENV: dict[str, str] = {
    **PROXY_ENV,
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
}


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


# ------------------------------------------------------------------------------ the pieces


def connect_ray(address: str | None = None) -> bool:
    """Connect to Ray (``address``, ``RAY_ADDRESS``) or start a local one; True if started."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = {"include_dashboard": False, "log_to_driver": False}
    ray.init(address=address or "local", **kwargs)  # never attach to a stray cluster
    return not address


def ensure_serve(host: str, port: int, request_timeout_s: float = 60.0) -> tuple[str, int]:
    """Start Serve's HTTP proxy on ``host:port`` unless Serve runs already; its (host, port).

    Serve's HTTP options are cluster-wide and fixed when Serve starts: a Serve started by
    someone else keeps its host, port and timeouts (a warning says so if the port differs).
    """
    import ray
    from ray import serve

    try:
        controller = ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
    except ValueError:
        controller = None
    if controller is None:
        if host not in _LOOPBACK:
            log.warning("serving on %s: reachable beyond this machine; use a bearer token", host)
        proxy_env = {**PROXY_ENV, **json.loads(os.environ.get("RAYLINE_SERVE_PROXY_ENV", "{}"))}
        http = {"host": host, "port": int(port), "request_timeout_s": float(request_timeout_s)}
        serve.start(http_options=http, logging_config=dict(QUIET_LOGS),
                    controller_options={"runtime_env": {"env_vars": proxy_env}} if proxy_env else None)
        return host, int(port)
    try:
        cfg = ray.get(controller.get_http_config.remote(), timeout=30)
        running = (str(cfg.host), int(cfg.port))
    except Exception:  # an older or newer controller: trust the caller
        return host, int(port)
    if running[1] != int(port):
        log.warning("Serve already listens on %s:%s; the model is served there, not on port %s",
                    running[0], running[1], port)  # fmt: skip
    return running


def _deploy(app: str, record: dict[str, Any]) -> None:
    """Submit ``record``'s deployment without waiting for it to run.

    The controller applies the new target inside this call, so the application reads
    DEPLOYING (or already RUNNING the new target) as soon as it returns.
    """
    from ray import serve
    from ray.serve.api import RunTarget

    options = dict(record["options"])
    replica_env = {**REPLICA_ENV, **json.loads(os.environ.get("RAYLINE_SERVE_REPLICA_ENV", "{}"))}
    if replica_env:  # Serve would drop the job's runtime_env (PYTHONPATH …) for ours: merge
        import ray

        job = dict(ray.get_runtime_context().runtime_env or {})
        env_vars = {**job.get("env_vars", {}), **replica_env}
        actor = dict(options.get("ray_actor_options") or {})
        actor["runtime_env"] = {**job, **actor.get("runtime_env", {}), "env_vars": env_vars}
        options["ray_actor_options"] = actor
    spec = record["spec"]
    # One replica: a new version goes to the running replica's reconfigure (no new process, the
    # old model serves until the new one has loaded). More: new replicas surge in beside the old
    # (a restart key that changes with the model), so no two replicas ever swap out of step.
    single = "autoscaling_config" not in options and options.get("num_replicas") == 1
    restart_key = None if single else [spec["digest"], spec["version"]]
    # Serve restarts replicas when the code version differs, else calls reconfigure for a new
    # user_config; serve.run would draw a random version per deploy (always a restart).
    version = hashlib.sha256(f"{_code_digest()}:{json.dumps(restart_key)}".encode()).hexdigest()[:16]
    target = ModelServer.options(**options, user_config=spec, version=version,
                                 _internal=True).bind(restart_key)  # fmt: skip
    serve.run_many([RunTarget(target, name=app, route_prefix=record["route_prefix"])],
                   wait_for_applications_running=False)  # fmt: skip


@functools.cache
def _code_digest() -> str:
    """The replica's code: a rayline upgrade restarts the replicas, a new model does not."""
    import rayline
    import rayline.serving
    import rayline.serving.app

    h = hashlib.sha256(str(getattr(rayline, "__version__", "")).encode())
    for module in (rayline.serving, rayline.serving.app):
        h.update(Path(str(module.__file__)).read_bytes())
    return h.hexdigest()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CAUSE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (.+)$", re.M)


def _failure(st: Any) -> str:
    """Why a deploy failed, for people: ``health check failed: RuntimeError: GPU fell off``."""
    triggers = " ".join(str(getattr(d, "status_trigger", "")) for d in st.deployments.values())
    text = _ANSI.sub("", " ".join(d.message for d in st.deployments.values() if d.message)
                     or st.message or "")  # fmt: skip
    if "HEALTH_CHECK" in triggers or "in check_health" in text:
        kind = "health check failed"
    elif "STARTUP" in triggers or "constructor" in text:
        kind = "constructor failed"
    else:
        kind = "deploy failed"
    causes = [m for m in _CAUSE.findall(text) if m[0] != "RuntimeError" or "Traceback" not in m[1]]
    cause = f"{causes[-1][0]}: {causes[-1][1].strip()}" if causes else " ".join(text.split())[:300]
    return f"{kind}: {cause[:500]}"


def wait_for(app: str, *, timeout_s: float, bake_s: float = 0.0) -> str | None:
    """Wait until the application just deployed runs, then watch it for ``bake_s`` seconds.

    Returns None when healthy, else why it failed (``health check failed: …``).
    """
    from ray import serve

    deadline = time.monotonic() + timeout_s
    running_since: float | None = None
    while True:
        st = serve.status().applications.get(app)
        if st is not None and st.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            return _failure(st)
        if st is not None and st.status == "RUNNING":
            running_since = running_since or time.monotonic()
            if time.monotonic() - running_since >= bake_s:
                return None
        else:
            running_since = None
        if time.monotonic() > deadline:
            state = getattr(st.status, "value", st.status) if st is not None else "missing"
            return f"deploy timed out: application '{app}' is {state} after {timeout_s:.0f}s"
        time.sleep(0.2)


def loaded(app: str, spec: dict[str, Any], *, timeout_s: float) -> str | None:
    """None once the replica has switched to ``spec``; else why it did not.

    A replica that cannot load a new version in ``reconfigure`` keeps serving the old one (Serve
    would stop it if ``reconfigure`` raised) and says so in ``rollout_state()``.
    """
    from ray import serve

    handle = serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=app)
    deadline = time.monotonic() + timeout_s
    got: Any = "no answer"
    while True:
        try:
            state = handle.rollout_state.remote().result(timeout_s=max(1.0, deadline - time.monotonic()))
        except Exception as e:  # a replica going away meanwhile: ask again
            got = f"no answer ({type(e).__name__})"
        else:
            if state["serving"] == spec:
                return None
            if state["spec"] == spec and state["error"]:
                return f"constructor failed: {state['error']}"
            got = f"version {(state['serving'] or {}).get('version')}"
        if time.monotonic() > deadline:
            return f"deploy timed out: application '{app}' still serves {got} after {timeout_s:.0f}s"
        time.sleep(0.05)


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
    max_body_bytes: int = 1 << 20,
    max_records: int = 10_000,
    health_check_period_s: float = 5.0,
    health_check_timeout_s: float = 10.0,
    max_constructor_retries: int = 3,
    bake_s: float | None = None,
    timeout_s: float = 180.0,
    address: str | None = None,
    input_log: bool | dict[str, Any] | None = None,
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
            2, "dir": ...}``, see ``serving.input_log``; ``False``: off). None: an update keeps
            what it replaces had, else ``RAYLINE_INPUT_LOG`` in the replicas' environment.

    Example::

        d = serve_model("churn", alias="production", port=8000, autoscaling={"min": 1, "max": 2})
        print(d.url)   # http://127.0.0.1:8000/

    Raises:
        ModelNotFoundError: no such model, version or alias.
        RolloutError: the new version failed; the previous one serves again (if there was one).
    """
    log_spec = input_log_spec(input_log)
    registry = home if isinstance(home, ModelRegistry) else ModelRegistry(home)
    mv = registry.get(name, version=version, alias=None if version is not None else alias)
    app = app_name or name
    token = token_sha256(env=auth_token_env, file=auth_token_file)
    spec = build_spec(mv, registry.home, alias=alias if version is None else None, token=token,
                      batch_max_size=batch_max_size, batch_wait_timeout_s=batch_wait_timeout_s,
                      max_body_bytes=max_body_bytes, max_records=max_records)  # fmt: skip
    options = deployment_options(
        num_replicas=num_replicas, autoscaling=autoscaling,
        max_ongoing_requests=max_ongoing_requests, max_queued_requests=max_queued_requests,
        ray_actor_options=ray_actor_options, batch_max_size=batch_max_size,
        health_check_period_s=health_check_period_s, health_check_timeout_s=health_check_timeout_s,
        max_constructor_retries=max_constructor_retries,
    )  # fmt: skip
    connect_ray(address)
    import ray

    bound_host, bound_port = ensure_serve(host, port)
    prefix = "/" + route_prefix.strip("/")
    url = f"http://{bound_host}:{bound_port}{'' if prefix == '/' else prefix}"
    previous = _live_previous(registry, app)
    if log_spec is None and previous is not None:  # an update keeps the input logging it had
        log_spec = previous["spec"]["spec"].get("input_log")
    if log_spec is not None:
        spec["input_log"] = log_spec
    record = {"spec": spec, "options": options, "route_prefix": prefix, "url": url,
              "address": ray.get_runtime_context().gcs_address}  # fmt: skip
    if previous is not None and previous["spec"] == record:
        return _deployment(app, mv, spec["alias"], url, "RUNNING", previous["version"], spec)
    started = time.monotonic()
    _deploy(app, record)
    bake = bake_s if bake_s is not None else (2 * health_check_period_s if previous else 0.0)
    why = wait_for(app, timeout_s=timeout_s)
    if why is None:
        why = loaded(app, spec, timeout_s=max(1.0, timeout_s - (time.monotonic() - started)))
    if why is None and bake > 0:
        why = wait_for(app, timeout_s=timeout_s, bake_s=bake)
    if why is None:
        registry.set_deployment(app, mv, alias=spec["alias"], spec=record, status="RUNNING")
        registry.record_event(name, "rollout", alias=spec["alias"], to_version=mv.version,
                              from_version=previous["version"] if previous else None,
                              reason=f"serving as '{app}' at {url}", actor=ACTOR)  # fmt: skip
        return _deployment(app, mv, spec["alias"], url, "RUNNING",
                           previous["version"] if previous else None, spec)  # fmt: skip
    raise _roll_back(registry, app, mv, spec["alias"], previous, why, timeout_s)


def _live_previous(registry: ModelRegistry, app: str) -> dict[str, Any] | None:
    """What rayline deployed as ``app`` if Serve still runs it, else None."""
    from ray import serve

    found = registry.deployments(app)
    live = serve.status().applications.get(app)
    if not found or live is None or live.status not in ("RUNNING", "DEPLOYING", "UNHEALTHY"):
        return None
    return found[0]


def _roll_back(registry: ModelRegistry, app: str, mv: ModelVersion, alias: str | None,
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
    _deploy(app, previous["spec"])
    again = wait_for(app, timeout_s=timeout_s) or loaded(app, previous["spec"]["spec"], timeout_s=timeout_s)
    status = "RUNNING" if again is None else "FAILED"
    prev_mv = registry.get(previous["name"], previous["version"])
    registry.set_deployment(app, prev_mv, alias=previous["alias"], spec=previous["spec"],
                            status=status)  # fmt: skip
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

    registry = home if isinstance(home, ModelRegistry) else ModelRegistry(home)
    records = registry.deployments(app)
    if app is not None and not records:
        known = ", ".join(r["app"] for r in registry.deployments()) or "none"
        raise UsageError(f"rayline serves no application '{app}'; deployed: {known}")
    connect_ray(address or (records[0]["spec"].get("address") if records else None))
    live = serve.status().applications
    stopped = []
    for r in records:
        if r["app"] in live:
            serve.delete(r["app"])
            stopped.append(r["app"])
        registry.forget_deployment(r["app"])
    return stopped


def serving_status(home: Any = None) -> list[dict[str, Any]]:
    """What rayline deployed, with Serve's live status when Ray is connected."""
    registry = home if isinstance(home, ModelRegistry) else ModelRegistry(home)
    rows = registry.deployments()
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
