"""A ``ModelServer`` replica's routes before its first model has loaded (Serve routes no request
then, but a replica must answer 503 and never fail with a 500): called on the class itself."""

from __future__ import annotations

import asyncio
import json

from starlette.requests import Request

from rayline.serving.app import ModelServer


def request(method: str, path: str) -> Request:
    return Request({"type": "http", "method": method, "path": path, "headers": [], "query_string": b""})


def test_a_replica_without_a_model_answers_503_with_retry_after():
    wrapper = ModelServer.func_or_class  # Serve's ASGI wrapper (async __init__), then our class
    server = wrapper.__mro__[1]()
    assert type(server).__module__ == "rayline.serving.app" and hasattr(server, "reconfigure")
    for call, req in ((server.predict, request("POST", "/predict")), (server.version, request("GET", "/version"))):
        resp = asyncio.run(call(req))
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
        assert "no model is loaded" in json.loads(resp.body)["detail"]


def test_request_bodies_are_refused_with_a_reason_past_the_configured_depth():
    from rayline.config import Settings
    from rayline.serving.app import _Reject, parse_body

    assert parse_body(b'{"records": [{"a": [1, [2]]}]}', 5) == {"records": [{"a": [1, [2]]}]}
    for raw, says in ((b'{"records": [{"a": [1, [2]]}]}', "nested more than 4 levels"),
                      (b"[" * 100_000 + b"]" * 100_000, "nested more than 4 levels"),
                      (b'{"a": NaN}', "non-finite number (NaN)"),
                      (b'{"a": -2.5e400}', "non-finite number (-2.5e400)"),
                      (b"{", "not valid JSON")):  # fmt: skip
        try:
            parse_body(raw, 4)
        except _Reject as r:
            assert r.status == 400 and says in r.message, r.message
        else:
            raise AssertionError(f"{raw[:40]!r} was accepted")
    assert Settings(serve_max_json_depth=7).serve_max_json_depth == 7
