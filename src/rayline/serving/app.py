"""The Ray Serve deployment that serves one registered model version over HTTP.

Routes (under the application's route prefix):

* ``POST /predict`` — ``{"records": [{...}, ...]}`` in; ``{"predictions": [...], "model": name,
  "version": N}`` out. Requests are batched across callers with ``@serve.batch``; a request alone
  in the replica, or with as many records as a batch holds, is scored at once (no batch wait).
  Bad input is a 4xx whose ``detail`` says what was wrong (400 malformed JSON, a non-finite
  number such as ``NaN`` or ``Infinity``, or nesting deeper than ``max_json_depth``; 413 larger
  than ``max_body_bytes``; 415 not JSON; 422 records that do not fit the model), never a 500 or a
  logged traceback, and never takes the replica down. Both limits come from the settings
  (``RAYLINE_SERVE_MAX_BODY_BYTES``, ``RAYLINE_SERVE_MAX_JSON_DEPTH``) or ``serve_model``.
* ``GET /healthz`` — ``{"status": "ok"}``; always open, says nothing about the model.
* ``GET /version`` — model, version, flavor, inputs, batching settings and counters (the batch
  counters show requests sharing a batch).

With a bearer token configured, ``/predict`` and ``/version`` need ``Authorization: Bearer …``:
401 without one, 403 with a wrong one. The replica only ever sees the token's sha256 (the
deployment's arguments are stored by Serve's controller), compared in constant time.

The model version to serve is a JSON-able ``spec`` (``rayline.serving.options.build_spec``), given as the
deployment's ``user_config``: a new version is a new spec, which Serve hands to the running
replicas' ``reconfigure`` (a lightweight update: the new model is loaded and probed next to the
old one and swapped in at once; if it fails, the old one keeps serving). See ``ModelServer``.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at runtime.

import asyncio
import hashlib
import hmac
import json
import math
import os
import re
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from ray import serve
from starlette.responses import JSONResponse, Response

from rayline.models.predictor import InputError, RecordPredictor
from rayline.models.registry.records import ModelVersion
from rayline.serving.options import DEFAULT_MAX_JSON_DEPTH

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


class _NotFinite(ValueError):
    """A number JSON cannot hold (``NaN``, ``Infinity``, or one that overflows a float)."""


def _no_constant(name: str) -> Any:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotFinite(text[:40])
    return value


# Only a literal with an exponent or hundreds of digits can overflow a float: check those only.
_MAY_OVERFLOW = re.compile(rb"[eE]|[0-9]{300}")


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects and lists more than ``limit`` levels (no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        inner = v.values() if isinstance(v, dict) else v
        stack.extend((x, depth + 1) for x in inner if isinstance(x, dict | list))
    return False


def parse_body(raw: bytes, max_depth: int) -> Any:
    """The JSON value of a request body, or ``_Reject(400)`` naming why it is refused: not JSON,
    a non-finite number, or nested more than ``max_depth`` levels."""
    deep = f"the body is nested more than {max_depth} levels deep; send flat records"
    try:
        body = json.loads(raw, parse_constant=_no_constant,
                          parse_float=_finite_float if _MAY_OVERFLOW.search(raw) else None)  # fmt: skip
    except _NotFinite as e:
        raise _Reject(400, f"the body holds a non-finite number ({e}); JSON numbers must be "
                           "finite (send null for a missing value)") from None  # fmt: skip
    except RecursionError:  # deeper than Python's parser goes: far past any limit
        raise _Reject(400, deep) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise _Reject(400, f"the body is not valid JSON: {e}") from None
    # Fewer brackets than the limit cannot nest past it: the walk is skipped for most bodies.
    if raw.count(b"[") + raw.count(b"{") > max_depth and _too_deep(body, max_depth):
        raise _Reject(400, deep)
    return body


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
        self.input_log = None if log_opts is None else InputLogger(  # under the artifact URL
            spec["home"], spec["name"], spec["version"], artifacts_url=spec.get("artifacts_url"), **log_opts)  # fmt: skip

    @staticmethod
    def model_of(spec: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(spec.get(k) for k in ("home", "digest", "flavor", "inputs", "features_digest"))

    @classmethod
    def load(cls, spec: dict[str, Any], same: "_Loaded | None" = None, store: Any = None) -> "_Loaded":
        """Load ``spec``'s model (reusing ``same``'s when it is the same model): raises if the
        model cannot load, its ``setup`` raises or its first ``check_health`` fails."""
        if same is not None and cls.model_of(same.spec) == cls.model_of(spec):
            return cls(spec, same.predictor)
        from rayline.config import Settings
        from rayline.models.registry import open_registry

        where = Settings(home=spec["home"], artifacts_url=spec.get("artifacts_url"))
        registry = open_registry(where, connect=False, store=store)  # load(mv) opens no database
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

    def __init__(self, restart_key: Any = None, store: Any = None) -> None:
        self.restart_key = restart_key  # a new value starts new replicas (see serve_control.deploy)
        # The deploying driver's artifact store (URL, storage options, HMAC key), as a Ray task
        # gets it: a replica on another node has neither the driver's home nor its environment.
        self.store = store
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
            new = await asyncio.to_thread(_Loaded.load, spec, old, self.store)
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
        body = parse_body(b"".join(chunks), int(spec.get("max_json_depth", DEFAULT_MAX_JSON_DEPTH)))
        if not isinstance(body, dict) or "records" not in body:
            got = "an object without 'records'" if isinstance(body, dict) else type(body).__name__
            raise _Reject(422, f'the body must be {{"records": [{{...}}, ...]}}, got {got}')
        records = body["records"]
        if isinstance(records, list) and len(records) > int(spec["max_records"]):
            raise _Reject(413, f"{len(records)} records in one request; at most "
                               f"{spec['max_records']}")  # fmt: skip
        return records
