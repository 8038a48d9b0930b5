"""Serving on the session Ray: HTTP round trips, batching, bad input, auth, F23 rollouts, F22.

One Serve instance (127.0.0.1, a free port) and one application for the whole module; the tests
run in order and the rollout tests move it from version to version. Load generators are bounded
in count and time and only ever talk to 127.0.0.1.
"""

from __future__ import annotations

import bisect
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.ray

TOKEN_ENV = "RAYLINE_TEST_SERVE_TOKEN"
GOOD = {"records": [{"a": 0.5, "b": -0.2, "c": 0.1}]}


class Broken:
    """A pyfunc model whose replica cannot start (``setup`` raises)."""

    def setup(self) -> None:
        raise RuntimeError("weights file is corrupt")

    def predict(self, records):
        return [0 for _ in records]


class SickLater:
    """Healthy for ``healthy_s`` seconds after start, then every health check fails."""

    def __init__(self, healthy_s: float) -> None:
        self.healthy_s = healthy_s
        self.started = None

    def setup(self) -> None:
        self.started = time.monotonic()

    def predict(self, records):
        return [-1 for _ in records]

    def check_health(self) -> None:
        if time.monotonic() - self.started > self.healthy_s:
            raise RuntimeError("accelerator lost")


class SickAtOnce:
    """Loads fine, but its very first health check fails: refused before it serves."""

    def predict(self, records):
        return [-2 for _ in records]

    def check_health(self) -> None:
        raise RuntimeError("no accelerator")


class Slow:
    """A pyfunc model that takes half a second per call (for overload)."""

    def predict(self, records):
        time.sleep(0.5)
        return [0 for _ in records]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str
    token: str
    registry: Any
    headers: dict[str, str] = field(default_factory=dict)

    def post(self, body: Any = None, **kw: Any) -> httpx.Response:
        kw.setdefault("headers", self.headers)
        return httpx.post(f"{self.url}/predict", json=body if body is not None else GOOD,
                          timeout=30, **kw)  # fmt: skip

    def info(self) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/version", headers=self.headers, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory):
    from ray import serve
    from sklearn.linear_model import LogisticRegression

    from rayline.models.registry.sql import ModelRegistry
    from rayline.serving.rollout import serve_model

    home = tmp_path_factory.mktemp("serving") / "home"
    x = pd.DataFrame(np.random.RandomState(0).randn(200, 3), columns=["a", "b", "c"])
    y = (x.a - 0.3 * x.b > 0).astype(int)
    reg = ModelRegistry(home)
    reg.register("churn", LogisticRegression().fit(x, y), metrics={"auc": 0.9})        # v1
    reg.register("churn", LogisticRegression(C=0.01).fit(x, y), metrics={"auc": 0.91})  # v2
    reg.register("churn", Broken())                                                     # v3
    reg.register("churn", SickLater(healthy_s=2.0))                                     # v4
    reg.register("churn", SickAtOnce())                                                 # v5
    reg.register("slow", Slow())
    reg.promote("churn", 1, "production")
    token = secrets.token_urlsafe(24)
    os.environ[TOKEN_ENV] = token
    port = _free_port()
    try:  # serve_model starts Serve as rayline does by default (HAProxy ingress, 127.0.0.1)
        d = serve_model("churn", alias="production", home=reg, port=port,
                        auth_token_env=TOKEN_ENV, health_check_period_s=0.5,
                        health_check_timeout_s=5, max_constructor_retries=1,
                        batch_wait_timeout_s=0.01)  # fmt: skip
        yield Served(d.url, token, reg, {"Authorization": f"Bearer {token}"})
    finally:
        os.environ.pop(TOKEN_ENV, None)
        serve.shutdown()
        reg.close()


def _update(served: Served, version: int, **kw: Any) -> Any:
    from rayline.serving.rollout import serve_model

    port = int(served.url.rsplit(":", 1)[1])
    opts = {"home": served.registry, "port": port, "auth_token_env": TOKEN_ENV,
            "health_check_period_s": 0.5, "health_check_timeout_s": 5,
            "max_constructor_retries": 1, "batch_wait_timeout_s": 0.01, "bake_s": 1.0, **kw}  # fmt: skip
    return serve_model("churn", version, None, **opts)


class Load:
    """``clients`` threads posting GOOD in a closed loop, at most ``max_requests`` in total and
    ``max_s`` seconds; records (start, end, status, version) per request."""

    def __init__(self, served: Served, clients: int = 4, max_requests: int = 4000,
                 max_s: float = 60.0) -> None:  # fmt: skip
        self.served, self.clients = served, clients
        self.max_requests, self.deadline = max_requests, time.monotonic() + max_s
        self.results: list[tuple[float, float, int, int | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(timeout=30, headers=self.served.headers) as c:
            while (not self._stop.is_set() and time.monotonic() < self.deadline
                   and len(self.results) < self.max_requests):  # fmt: skip
                t0 = time.monotonic()
                try:
                    r = c.post(f"{self.served.url}/predict", json=GOOD)
                    status = r.status_code
                    version = r.json().get("version") if status == 200 else None
                except httpx.HTTPError:
                    status, version = 599, None
                self.results.append((t0, time.monotonic(), status, version))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=40)

    def failures(self) -> list[int]:
        return [s for _, _, s, _ in self.results if not 200 <= s < 300]

    def version_went_back(self) -> list[tuple[int, int]]:
        """Requests that started after some response with a newer version had completed."""
        done = sorted((end, v) for _, end, s, v in self.results if v is not None)
        ends, best, top = [e for e, _ in done], [], 0
        for _, v in done:
            top = max(top, v)
            best.append(top)
        bad = []
        for start, _, _, v in self.results:
            i = bisect.bisect_left(ends, start)
            if v is not None and i > 0 and v < best[i - 1]:
                bad.append((v, best[i - 1]))
        return bad


# ------------------------------------------------------------------------------- requests


def test_predict_round_trip_over_http(served):
    r = served.post({"records": [{"a": 2.0, "b": 0.0, "c": 0.0}, {"a": -2.0, "b": 0.0, "c": 0.0}]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [1, 0], "model": "churn", "version": 1}
    assert httpx.get(f"{served.url}/healthz", timeout=10).json() == {"status": "ok"}
    info = served.info()
    assert (info["model"], info["version"], info["flavor"]) == ("churn", 1, "sklearn")
    assert info["inputs"] == ["a", "b", "c"]


def test_concurrent_requests_share_a_batch(served):
    before = served.info()["stats"]
    sizes: list[int] = []

    def one() -> None:
        r = served.post()
        assert r.status_code == 200
        sizes.append(int(r.headers["x-rayline-batch-size"]))

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    after = served.info()["stats"]
    assert len(sizes) == 16
    assert after["requests"] - before["requests"] == 16
    # A request that finds the replica idle skips the batch wait; the others are batched.
    batched = after["batched_requests"] - before["batched_requests"]
    assert 2 <= batched <= 16
    assert after["batches"] - before["batches"] < batched  # some requests shared a model call
    assert max(sizes) > 1 and after["max_batch_requests"] > 1


@pytest.mark.parametrize("content, kind, status, says", [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b'{"rows": []}', "application/json", 422, "'records'"),
    (b'{"records": {"a": 1}}', "application/json", 422, "must be a list"),
    (b'{"records": []}', "application/json", 422, "empty"),
    (b'{"records": [{"a": 1, "c": 2}]}', "application/json", 422, "missing field(s) 'b'"),
    (b'{"records": [{"a": "x", "b": 1, "c": 2}]}', "application/json", 422, "could not score"),
    (b'{"records": [[1, 2, 3]]}', "application/json", 422, "must be an object"),
    (b"a,b,c", "text/csv", 415, "send JSON"),
])  # fmt: skip
def test_malformed_requests_get_4xx_and_the_server_keeps_serving(served, content, kind, status,
                                                                  says):  # fmt: skip
    r = httpx.post(f"{served.url}/predict", content=content, timeout=30,
                   headers={**served.headers, "content-type": kind})  # fmt: skip
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]
    assert served.post().status_code == 200


def test_bad_request_in_a_batch_fails_alone(served):
    out: dict[str, int] = {}

    def send(key: str, body: dict[str, Any]) -> None:
        out[key] = served.post(body).status_code

    bad = {"records": [{"a": "oops", "b": 0, "c": 0}]}
    threads = [threading.Thread(target=send, args=(f"good{i}", GOOD)) for i in range(6)]
    threads.append(threading.Thread(target=send, args=("bad", bad)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert out.pop("bad") == 422
    assert set(out.values()) == {200}


def test_bearer_token_is_required_except_for_health(served):
    no_token = httpx.post(f"{served.url}/predict", json=GOOD, timeout=30)
    assert no_token.status_code == 401 and "Bearer" in no_token.headers["www-authenticate"]
    wrong = served.post(headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 403
    assert httpx.get(f"{served.url}/version", timeout=30).status_code == 401
    assert httpx.get(f"{served.url}/healthz", timeout=30).status_code == 200
    assert served.post().status_code == 200


def test_oversized_body_gets_413(served):
    big = {"records": [{"a": 0.0, "b": 0.0, "c": 0.0, "pad": "x" * 1000}] * 1500}
    r = served.post(big)
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    assert served.post().status_code == 200


def _replica_tracebacks() -> int:
    """Tracebacks in this Ray session's Serve logs so far (0 when they cannot be read)."""
    import glob

    from ray._private import worker

    node = worker._global_node
    if node is None:
        return 0
    total = 0
    for name in glob.glob(os.path.join(node.get_session_dir_path(), "logs", "serve", "*.log")):
        with open(name, encoding="utf-8", errors="replace") as f:
            total += f.read().count("Traceback")
    return total


@pytest.mark.parametrize("content, says", [
    (b'{"records": [{"a": NaN, "b": 0, "c": 0}]}', "non-finite number (NaN)"),
    (b'{"records": [{"a": Infinity, "b": 0, "c": 0}]}', "non-finite number (Infinity)"),
    (b'{"records": [{"a": -Infinity, "b": 0, "c": 0}]}', "non-finite number"),
    (b'{"records": [{"a": 1e999, "b": 0, "c": 0}]}', "non-finite number (1e999)"),
    (b"[" * 100_000 + b"]" * 100_000, "nested more than 64 levels"),
    (b'{"records": [' + b"[" * 99_990 + b"]" * 99_990 + b"]}", "nested more than 64 levels"),
    (b'{"records": [{"a": ' + b"[" * 70 + b"]" * 70 + b', "b": 0, "c": 0}]}', "nested more than 64"),
    (b'{"records": [{"a": 1, "b": 0, "c": 0}', "not valid JSON"),
    (b'\xff\xfe{"records": []}', "not valid JSON"),
])  # fmt: skip
def test_hostile_bodies_get_400_with_a_reason_never_500(served, content, says):
    before = _replica_tracebacks()
    r = httpx.post(f"{served.url}/predict", content=content, timeout=60,
                   headers={**served.headers, "content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400, r.text
    assert says in r.json()["detail"]
    assert served.post().status_code == 200
    assert _replica_tracebacks() == before


def test_bounded_overload_gets_429_not_a_crash(served):
    from rayline.serving.rollout import serve_model, stop_serving

    port = int(served.url.rsplit(":", 1)[1])
    d = serve_model("slow", 1, None, home=served.registry, port=port, route_prefix="/slow",
                    max_ongoing_requests=1, max_queued_requests=1, batch_max_size=1)  # fmt: skip
    codes: list[int] = []

    def one() -> None:
        codes.append(httpx.post(f"{d.url}/predict", json={"records": [{"x": 1}]},
                                timeout=30).status_code)  # fmt: skip

    try:
        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(set(codes)) == [200, 429], codes
        assert httpx.post(f"{d.url}/predict", json={"records": [{"x": 1}]},
                          timeout=30).status_code == 200  # fmt: skip
    finally:
        stop_serving("slow", home=served.registry)


# ---------------------------------------------------------------------------- F23 rollouts


def test_f23_good_rollout_under_load_has_no_failures_and_switches_monotonically(served):
    pid = served.info()["pid"]
    with Load(served, clients=4, max_requests=3000, max_s=60) as load:
        d = _update(served, 2)
        time.sleep(1.0)
    assert d.version == 2 and d.previous_version == 1
    assert served.info()["pid"] == pid  # swapped inside the running replica: no new process
    assert load.failures() == []
    versions = {v for *_, v in load.results}
    assert versions == {1, 2}, versions
    assert load.version_went_back() == []
    assert served.info()["version"] == 2
    events = served.registry.history("churn")
    assert (events[-1].event, events[-1].from_version, events[-1].to_version) == ("rollout", 1, 2)


def test_an_update_from_a_running_event_loop_works_as_in_a_jupyter_cell(served):
    """A notebook cell runs on a thread with a running asyncio loop, where a Serve handle's
    blocking result() refuses to run; the rollout asks the replica from its own thread."""
    import asyncio

    async def cell(version: int) -> Any:
        return _update(served, version)

    assert asyncio.run(cell(1)).version == 1
    assert served.info()["version"] == 1
    assert asyncio.run(cell(2)).version == 2  # the later tests start from version 2
    assert served.info()["version"] == 2


def test_f23_constructor_failure_keeps_the_old_version_serving(served):
    from rayline.serving.rollout import RolloutError

    with Load(served, clients=2, max_requests=2000, max_s=60) as load:
        with pytest.raises(RolloutError) as info:
            _update(served, 3)
    assert info.value.failed == 3 and info.value.serving == 2
    assert "constructor failed" in str(info.value) and "weights file is corrupt" in str(info.value)
    assert load.failures() == []
    assert {v for *_, v in load.results} == {2}
    assert served.info()["version"] == 2
    last = served.registry.history("churn")[-1]
    assert (last.event, last.from_version, last.to_version) == ("rollout_failed", 2, 3)
    assert last.reason.startswith("rollback: constructor failed")


def test_f23_model_failing_its_first_health_check_never_serves(served):
    from rayline.serving.rollout import RolloutError

    with Load(served, clients=2, max_requests=2000, max_s=60) as load:
        with pytest.raises(RolloutError) as info:
            _update(served, 5)
    assert info.value.failed == 5 and info.value.serving == 2
    assert "no accelerator" in str(info.value)
    assert load.failures() == []
    assert {v for *_, v in load.results} == {2}
    assert served.info()["version"] == 2


def test_f23_failing_health_check_is_rolled_back_and_reported(served):
    from rayline.serving.rollout import RolloutError

    served.registry.promote("churn", 4, "production", reason="looked good offline")
    with pytest.raises(RolloutError) as info:
        _serve_alias(served, bake_s=8.0)
    assert info.value.failed == 4 and info.value.serving == 2
    assert "health check failed" in str(info.value)
    deadline = time.monotonic() + 30
    while served.info()["version"] != 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert served.info()["version"] == 2
    assert served.post().status_code == 200
    events = served.registry.history("churn", "production")
    assert events[-2].event == "rollout_failed"
    assert events[-2].reason.startswith("rollback: health check failed")
    assert (events[-1].event, events[-1].to_version) == ("rollback", 1)  # alias moved back
    assert served.registry.aliases("churn")["production"] == 1


def _serve_alias(served: Served, **kw: Any) -> Any:
    from rayline.serving.rollout import serve_model

    port = int(served.url.rsplit(":", 1)[1])
    return serve_model("churn", None, "production", home=served.registry, port=port,
                       auth_token_env=TOKEN_ENV, health_check_period_s=0.5,
                       health_check_timeout_s=5, max_constructor_retries=1,
                       batch_wait_timeout_s=0.01, **kw)  # fmt: skip


# ---------------------------------------------------------------------------------- F22


def test_f22_killed_replica_is_replaced_with_few_failures(served):
    pid = served.info()["pid"]
    with Load(served, clients=4, max_requests=3000, max_s=45) as load:
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{served.url}/version", headers=served.headers,
                             timeout=5).json().get("pid") not in (None, pid):  # fmt: skip
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.25)
        time.sleep(1.0)
    assert served.info()["pid"] != pid
    assert len(load.failures()) <= load.clients, load.failures()
    assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200
    assert load.results[-1][2] == 200



# ---------------------------------------------------------------------------------- CLI


def test_serve_cli_reports_status_and_refuses_unknown_names(served, monkeypatch):
    import json

    from click.testing import CliRunner

    from rayline.cli.serve import serve_cmd

    monkeypatch.setenv("RAYLINE_HOME", str(served.registry.home))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cli = CliRunner()
    out = cli.invoke(serve_cmd, ["status", "--json"])
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.output)
    assert (row["app"], row["model"], row["live_status"]) == ("churn", "churn", "RUNNING")
    unknown = cli.invoke(serve_cmd, ["nope@production", "--port", "1"])
    assert unknown.exit_code == 2 and "no model named 'nope'" in unknown.output
    no_alias = cli.invoke(serve_cmd, ["churn@canary"])
    assert no_alias.exit_code == 2 and "no alias 'canary'" in no_alias.output
    detach = cli.invoke(serve_cmd, ["churn@2", "--detach"])
    assert detach.exit_code == 2 and "--detach needs a Ray cluster" in detach.output
    stop = cli.invoke(serve_cmd, ["stop", "other"])
    assert stop.exit_code == 2 and "no application 'other'" in stop.output
