"""Serving behind Serve's HAProxy ingress (``serve_model(ingress="haproxy")``, ``rayline serve
--ingress haproxy``, ``RAYLINE_SERVE_INGRESS=haproxy``) on the session Ray:
round trip, auth and bad input answered by rayline's app through HAProxy, the model served on
127.0.0.1 only, an in-place update under load without a failed request, and a clear error for an
unknown ingress. Its own Serve instance, shut down at the end (test_serving.py's is
stopped by then: modules run one after another)."""

from __future__ import annotations

import os
import secrets
import time

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest

from rayline.errors import UsageError
from rayline.serving.serve_control import ingress_env
from tests.integration.test_serving import GOOD, Load, Served, _free_port

pytestmark = pytest.mark.ray

TOKEN_ENV = "RAYLINE_TEST_HAPROXY_TOKEN"


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory):
    from ray import serve
    from sklearn.linear_model import LogisticRegression

    from rayline.models.registry.sql import ModelRegistry
    from rayline.serving.rollout import serve_model

    home = tmp_path_factory.mktemp("haproxy") / "home"
    x = pd.DataFrame(np.random.RandomState(1).randn(200, 3), columns=["a", "b", "c"])
    y = (x.a - 0.3 * x.b > 0).astype(int)
    reg = ModelRegistry(home)
    reg.register("churn", LogisticRegression().fit(x, y))          # v1
    reg.register("churn", LogisticRegression(C=0.01).fit(x, y))    # v2
    token = secrets.token_urlsafe(24)
    os.environ[TOKEN_ENV] = token
    serve.shutdown()  # Serve's ingress is chosen when it starts
    port = _free_port()
    try:
        d = serve_model("churn", 1, None, home=reg, port=port, auth_token_env=TOKEN_ENV,
                        batch_wait_timeout_s=0.01, ingress="haproxy")  # fmt: skip
        yield Served(d.url, token, reg, {"Authorization": f"Bearer {token}"})
    finally:
        os.environ.pop(TOKEN_ENV, None)
        serve.shutdown()
        reg.close()


def _haproxies() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name", "exe"]) if (p.info["name"] or "") == "haproxy"]


def test_requests_reach_rayline_app_through_haproxy(served):
    assert _haproxies(), "no haproxy process: Serve did not start its HAProxy ingress"
    r = served.post({"records": [{"a": 2.0, "b": 0.0, "c": 0.0}, {"a": -2.0, "b": 0.0, "c": 0.0}]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [1, 0], "model": "churn", "version": 1}
    assert httpx.post(f"{served.url}/predict", json=GOOD, timeout=10).status_code == 401
    bad = served.post({"records": [{"a": "x"}]})
    assert 400 <= bad.status_code < 500 and "detail" in bad.json()
    assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200


def test_the_model_is_served_on_loopback_only(served):
    """HAProxy's frontend and the replica's own HTTP server listen on 127.0.0.1. Exceptions, as
    documented: HAProxy's stats page and Prometheus exporter (Ray's template binds them to every
    interface, on the ports rayline picked) and the replica's Ray worker ports (Ray's own)."""
    haproxies = _haproxies()  # more than one while a reload hands over to a new process
    observability = set()
    for hp in haproxies:
        env = hp.parent().environ() if hp.parent() else {}  # the HAProxyManager actor's
        observability |= {int(env.get("RAY_SERVE_HAPROXY_STATS_PORT", 8404)),
                          int(env.get("RAY_SERVE_HAPROXY_METRICS_PORT", 9101))}  # fmt: skip
    listen = [c.laddr for hp in haproxies for c in hp.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    port = int(served.url.rsplit(":", 1)[1])
    assert port in {a.port for a in listen}, listen
    assert {a.port for a in listen if a.ip not in ("127.0.0.1", "::1")} <= observability, listen
    replica = psutil.Process(served.info()["pid"])
    http = [c.laddr for c in replica.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and 30000 <= c.laddr.port <= 31000]  # fmt: skip
    assert http and all(a.ip == "127.0.0.1" for a in http), http


def test_an_in_place_update_under_load_fails_no_request(served):
    from rayline.serving.rollout import serve_model

    port = int(served.url.rsplit(":", 1)[1])
    pid = served.info()["pid"]
    with Load(served, clients=4, max_requests=2000, max_s=45) as load:
        d = serve_model("churn", 2, None, home=served.registry, port=port, auth_token_env=TOKEN_ENV,
                        batch_wait_timeout_s=0.01, bake_s=1.0)  # fmt: skip
        time.sleep(1.0)
    assert d.version == 2 and served.info()["pid"] == pid
    assert load.failures() == []
    assert {v for *_, v in load.results} == {1, 2} and load.version_went_back() == []


def test_ingress_choice_is_checked_and_haproxy_files_stay_short(monkeypatch):
    monkeypatch.setenv("RAYLINE_SERVE_INGRESS", "nginx")
    with pytest.raises(UsageError, match="RAYLINE_SERVE_INGRESS='nginx': use one of proxy, haproxy"):
        ingress_env(None)
    with pytest.raises(UsageError, match="ingress='envoy': use one of proxy, haproxy"):
        ingress_env(None, "envoy")
    assert ingress_env(None, "proxy") == {}  # the argument wins over the environment
    monkeypatch.setenv("RAYLINE_SERVE_INGRESS", "proxy")
    assert ingress_env("/tmp/ray/session_x") == {}
    monkeypatch.setenv("RAYLINE_SERVE_INGRESS", "haproxy")
    a, b = ingress_env("/tmp/ray/session_a" + "x" * 80), ingress_env("/tmp/ray/session_b")
    assert a["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert a["RAY_SERVE_HAPROXY_SOCKET_PATH"] != b["RAY_SERVE_HAPROXY_SOCKET_PATH"]  # per session
    # HAProxy adds a 56-character folder and takes socket paths of at most 97 characters
    longest = max(len(v) for k, v in a.items() if k.endswith("SOCKET_PATH"))
    assert longest + 57 <= 97
