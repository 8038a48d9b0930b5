"""The Ray Serve deployment that serves one registered model version over HTTP.

Routes (under the application's route prefix):

* ``POST /predict`` — ``{"records": [{...}, ...]}`` in; ``{"predictions": [...], "model": name,
  "version": N}`` out. Requests are batched across callers with ``@serve.batch``; a request alone
  in the replica, or with as many records as a batch holds, is scored at once (no batch wait).
  Bad input is a 4xx whose ``detail`` says what was wrong (400 malformed JSON, 413 too large, 415
  not JSON, 422 records that do not fit the model) and never takes the replica down.
* ``GET /healthz`` — ``{"status": "ok"}``; always open, says nothing about the model.
* ``GET /version`` — model, version, flavor, inputs, batching settings and counters (the batch
  counters show requests sharing a batch).

With a bearer token configured, ``/predict`` and ``/version`` need ``Authorization: Bearer …``:
401 without one, 403 with a wrong one. The replica only ever sees the token's sha256 (the
deployment's arguments are stored by Serve's controller), compared in constant time.

The model version to serve is a JSON-able ``spec`` (``build_spec``, below), given as the
deployment's ``user_config``: a new version is a new spec, which Serve hands to the running
replicas' ``reconfigure`` (a lightweight update: the new model is loaded and probed next to the
old one and swapped in at once; if it fails, the old one keeps serving). See ``ModelServer``.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at runtime.

import asyncio
import hashlib
import hmac
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from ray import serve
from starlette.responses import JSONResponse, Response

from rayline.errors import UsageError
from rayline.models.predictor import InputError, RecordPredictor
from rayline.models.registry.records import ModelVersion

api = FastAPI(title="rayline model server", docs_url=None, redoc_url=None, openapi_url=None)

DEPLOYMENT_NAME = "ModelServer"
#: A model call slower than this moves predictions off the replica's event loop, for good.
OFFLOAD_AFTER_S = 0.005


class _Reject(Exception):
    """An HTTP error answered with ``{"detail": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _not_loaded() -> Response:
    return _error(503, "no model is loaded in this replica yet; retry shortly", {"Retry-After": "1"})


def _replica_id() -> str | None:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside a replica (tests calling methods directly)
        return None


class _Loaded:
    """One loaded model version and everything a request needs from it (swapped as one)."""

    def __init__(self, spec: dict[str, Any], predictor: Any) -> None:
        from rayline.monitoring.input_log import InputLogger, input_log_options

        self.spec, self.predictor = spec, predictor
        self.identity = {"model": spec["name"], "version": spec["version"]}
        self.headers = {"x-rayline-model": spec["name"], "x-rayline-version": str(spec["version"])}
        log_opts = input_log_options(spec)  # served-input logging for drift (off by default)
        self.input_log = None if log_opts is None else InputLogger(
            spec["home"], spec["name"], spec["version"], **log_opts)  # fmt: skip

    @staticmethod
    def model_of(spec: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(spec.get(k) for k in ("home", "digest", "flavor", "inputs", "features_digest"))

    @classmethod
    def load(cls, spec: dict[str, Any], same: "_Loaded | None" = None) -> "_Loaded":
        """Load ``spec``'s model (reusing ``same``'s when it is the same model): raises if the
        model cannot load, its ``setup`` raises or its first ``check_health`` fails."""
        if same is not None and cls.model_of(same.spec) == cls.model_of(spec):
            return cls(spec, same.predictor)
        from rayline.models.registry import open_registry

        registry = open_registry(spec["home"], connect=False)  # load(mv) opens no database
        mv = ModelVersion.from_dict(spec)
        model = registry.load(mv)  # sha256 and HMAC checked before unpickling
        setup = getattr(model, "setup", None)
        if callable(setup):  # a pyfunc model may load resources; raising fails this version
            setup()
        predictor = RecordPredictor(
            model, flavor=spec["flavor"], inputs=spec.get("inputs"),
            features=registry.load_features(mv), store=registry.store,
        )  # fmt: skip
        check = getattr(model, "check_health", None)
        if callable(check):  # probed before it serves a single request
            check()
        return cls(spec, predictor)

    def close(self) -> None:
        if self.input_log is not None:
            self.input_log.close()


# Serve serialises the class when it is decorated: every module-level name its methods use
# must be defined above this line.
@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(api)
class ModelServer:
    """One replica: the loaded model version, the request checks and the batch counters.

    The model comes in ``reconfigure(spec)`` (Serve's ``user_config``), not the constructor, so
    a new version replaces the model inside the running replica (no new process): the new model
    is loaded and probed next to the old one, then swapped in at once. If it fails, the old one
    keeps serving and ``rollout_state()`` says why; at replica start a failure fails the replica.
    """

    def __init__(self, restart_key: Any = None) -> None:
        self.restart_key = restart_key  # a new value starts new replicas (see serve_control.deploy)
        self.state: _Loaded | None = None
        self.max_batch = 32
        self.attempt: dict[str, Any] = {"spec": None, "error": None}
        self.stats = {"requests": 0, "batches": 0, "batched_requests": 0, "max_batch_requests": 0,
                      "last_batch_requests": 0, "rejected": 0}  # fmt: skip
        self.started_at = time.time()
        self.offload = False
        self.inflight = 0  # /predict requests in this replica now (all on one event loop)

    async def reconfigure(self, spec: dict[str, Any]) -> None:
        """Serve calls this with the deployment's ``user_config``: load and switch to ``spec``."""
        old = self.state
        try:
            new = await asyncio.to_thread(_Loaded.load, spec, old)
        except Exception as e:
            if old is None:  # replica start: fail it (Serve reports a failed constructor)
                raise
            # Never raise on an update: Serve would stop this replica, and the old model with it.
            self.attempt = {"spec": spec, "error": f"{type(e).__name__}: {str(e)[:1000]}"}
            return
        self.max_batch = int(spec["batch_max_size"])
        self._predict_batch.set_max_batch_size(self.max_batch)
        self._predict_batch.set_batch_wait_timeout_s(float(spec["batch_wait_timeout_s"]))
        self.state, self.attempt = new, {"spec": spec, "error": None}
        if old is not None and old.input_log is not None and old.input_log is not new.input_log:
            # Requests still scoring with the old model log there: close it a little later.
            closing = threading.Thread(target=old.close, daemon=True)
            asyncio.get_running_loop().call_later(5.0, closing.start)

    def rollout_state(self) -> dict[str, Any]:
        """The spec last given to ``reconfigure``, why it failed (or None), what serves now."""
        serving = self.state.spec if self.state is not None else None
        return {**self.attempt, "serving": serving, "replica": _replica_id()}

    def __del__(self) -> None:
        state = getattr(self, "state", None)
        if state is not None:
            state.close()

    def check_health(self) -> None:
        """Serve calls this every ``health_check_period_s``; the model's own check counts."""
        if self.state is None:
            return
        check = getattr(self.state.predictor.model, "check_health", None)
        if callable(check):
            check()

    # ------------------------------------------------------------------------------ batching

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _predict_batch(self, calls: list[tuple[_Loaded, list[dict[str, Any]]]]) -> list[tuple[Any, int]]:
        n = len(calls)
        self.stats["batches"] += 1
        self.stats["batched_requests"] += n
        self.stats["last_batch_requests"] = n
        self.stats["max_batch_requests"] = max(self.stats["max_batch_requests"], n)
        state = calls[0][0]
        if any(s is not state for s, _ in calls):  # a model switch in between: each its own
            return [(await self._one(s, records), n) for s, records in calls]
        try:
            flat = await self._score(state, [r for _, call in calls for r in call])
        except InputError as e:
            if n == 1:
                return [(e, 1)]
            return [(await self._one(state, call), n) for _, call in calls]  # only the bad one fails
        out, start = [], 0
        for _, call in calls:
            out.append((flat[start : start + len(call)], n))
            start += len(call)
        return out

    async def _score(self, state: _Loaded, records: list[dict[str, Any]]) -> list[Any]:
        """Predict on the event loop while the model is fast; in a thread once a call has taken
        more than ``OFFLOAD_AFTER_S`` (a slow model must not stall health checks and I/O)."""
        if self.offload:
            return await asyncio.to_thread(state.predictor.predict, records)
        started = time.perf_counter()
        try:
            return state.predictor.predict(records)
        finally:
            self.offload = time.perf_counter() - started > OFFLOAD_AFTER_S

    async def _one(self, state: _Loaded, records: list[dict[str, Any]]) -> Any:
        try:
            return await self._score(state, records)
        except InputError as e:
            return e

    # -------------------------------------------------------------------------------- routes

    @api.get("/healthz")
    async def healthz(self) -> Response:
        return JSONResponse({"status": "ok"})

    @api.get("/version")
    async def version(self, request: Request) -> Response:
        state = self.state
        if state is None:  # Serve routes no request before the first reconfigure; never 500
            return _not_loaded()
        denied = self._authorize(request, state.spec)
        if denied is not None:
            return denied
        spec = state.spec
        body = {**state.identity, "flavor": spec["flavor"], "digest": spec["digest"],
                "inputs": spec.get("inputs"), "alias": spec.get("alias"),
                "batch_max_size": self.max_batch,
                "batch_wait_timeout_s": spec["batch_wait_timeout_s"], "stats": dict(self.stats),
                "started_at": self.started_at, "replica": _replica_id(), "pid": os.getpid(),
                "input_log": state.input_log.stats() if state.input_log else None}  # fmt: skip
        return JSONResponse(body, headers=state.headers)

    @api.post("/predict")
    async def predict(self, request: Request) -> Response:
        self.stats["requests"] += 1
        state = self.state  # the version this request is served by, start to end
        if state is None:
            return _not_loaded()
        denied = self._authorize(request, state.spec)
        if denied is not None:
            return denied
        self.inflight += 1
        try:
            records = state.predictor.check(await self._records(request, state.spec))
            if len(records) >= self.max_batch or self.inflight == 1:
                # Nobody to share a batch with: do not wait batch_wait_timeout_s for company.
                result, batch = await self._one(state, records), 1
            else:
                result, batch = await self._predict_batch((state, records))
            if isinstance(result, InputError):
                raise _Reject(422, str(result))
        except _Reject as r:
            self.stats["rejected"] += 1
            return _error(r.status, r.message, r.headers)
        except InputError as e:
            self.stats["rejected"] += 1
            return _error(422, str(e))
        finally:
            self.inflight -= 1
        if state.input_log is not None:
            state.input_log.log(records, result)  # appends to a list; a thread writes Parquet
        headers = {**state.headers, "x-rayline-batch-size": str(batch)}
        return JSONResponse({"predictions": result, **state.identity}, headers=headers)

    # ------------------------------------------------------------------------------ checks

    def _authorize(self, request: Request, spec: dict[str, Any]) -> Response | None:
        want = spec.get("token_sha256")
        if not want:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self.stats["rejected"] += 1
            why = "missing bearer token" if not header else 'Authorization must be "Bearer <token>"'
            return _error(401, f"{why}; send Authorization: Bearer <token>",
                          {"WWW-Authenticate": 'Bearer realm="rayline"'})  # fmt: skip
        got = hashlib.sha256(token.strip().encode()).hexdigest()
        if not hmac.compare_digest(got, want):
            self.stats["rejected"] += 1
            return _error(403, "the bearer token is not valid for this model server")
        return None

    async def _records(self, request: Request, spec: dict[str, Any]) -> Any:
        limit = int(spec["max_body_bytes"])
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise _Reject(413, f"request body is larger than {limit} bytes")
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if kind and kind != "application/json" and not kind.endswith("+json"):
            raise _Reject(415, f"send JSON (Content-Type: application/json), not {kind}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _Reject(413, f"request body is larger than {limit} bytes")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError) as e:
            raise _Reject(400, f"the body is not valid JSON: {e}") from None
        if not isinstance(body, dict) or "records" not in body:
            got = "an object without 'records'" if isinstance(body, dict) else type(body).__name__
            raise _Reject(422, f'the body must be {{"records": [{{...}}, ...]}}, got {got}')
        records = body["records"]
        if isinstance(records, list) and len(records) > int(spec["max_records"]):
            raise _Reject(413, f"{len(records)} records in one request; at most "
                               f"{spec['max_records']}")  # fmt: skip
        return records


# ------------------------------------------------------------ the deployment's argument and options

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
               max_records: int) -> dict[str, Any]:  # fmt: skip
    """The replica's argument: what to load and how to answer. JSON-able, secret-free."""
    if batch_max_size < 1 or batch_wait_timeout_s < 0:
        raise UsageError("batch_max_size must be >= 1 and batch_wait_timeout_s >= 0")
    return {"home": str(home), "name": mv.name, "version": mv.version, "digest": mv.digest,
            "created_at": mv.created_at.isoformat(), "flavor": mv.flavor, "inputs": None if mv.inputs is None else list(mv.inputs),
            "features_digest": mv.features_digest, "alias": alias, "token_sha256": token,
            "batch_max_size": int(batch_max_size),
            "batch_wait_timeout_s": float(batch_wait_timeout_s),
            "max_body_bytes": int(max_body_bytes), "max_records": int(max_records)}  # fmt: skip


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
