"""Serving registered models over HTTP on Ray Serve.

Deploying and updating (``serve_model``, ``stop_serving``, ``serving_status``) live in
``rayline.serving.rollout`` (its Ray Serve plumbing in ``rayline.serving.serve_control``); the
Serve deployment itself in ``rayline.serving.app``; what rayline deployed where in
``rayline.serving.deployments``; a small HTTP client in ``rayline.serving.client``. What a
servable model is (the ``Servable`` protocol, ``RecordPredictor``) lives in ``rayline.models``.
Importing this package does not import Ray.

Example::

    from rayline.serving import serve_model
    d = serve_model("churn", alias="production", port=8000)
    httpx.post(f"{d.url}/predict", json={"records": [{"age": 31, "plan": "pro"}]}).json()
"""

from __future__ import annotations

from rayline._lazy import lazy_exports

__all__ = ["Deployment", "RolloutError", "ServingClient", "serve_model", "serving_status", "stop_serving"]

_LAZY = {
    "serve_model": "rayline.serving.rollout",
    "stop_serving": "rayline.serving.rollout",
    "serving_status": "rayline.serving.rollout",
    "Deployment": "rayline.serving.rollout",
    "RolloutError": "rayline.errors",
    "ServingClient": "rayline.serving.client",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
