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
