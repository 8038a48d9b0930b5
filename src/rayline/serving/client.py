"""A small HTTP client for a model served by rayline (``rayline serve`` / ``serve_model``).

Example::

    from rayline.serving.client import ServingClient

    with ServingClient("http://127.0.0.1:8000", token_env="RAYLINE_SERVE_TOKEN") as client:
        client.predict([{"age": 31, "plan": "pro"}])      # [1]
        client.version()["version"]                        # 4
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

from rayline.errors import RaylineError


class ServingError(RaylineError):
    """The server answered with an error; ``status`` is the HTTP status, the message its detail."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class ServingClient:
    """Talks to one served model over HTTP (keep-alive connection pool, httpx).

    Args:
        url: the deployment's URL (``Deployment.url``), e.g. ``http://127.0.0.1:8000``.
        token / token_env: the bearer token, or the env var holding it, when auth is on.
        timeout: seconds per request.
    """

    def __init__(self, url: str, *, token: str | None = None, token_env: str | None = None,
                 timeout: float = 30.0) -> None:  # fmt: skip
        import httpx

        token = token or (os.environ.get(token_env, "") if token_env else None) or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def predict(self, records: list[dict[str, Any]]) -> list[Any]:
        """One prediction per record.

        Raises:
            ServingError: 4xx (bad records, auth, too large) or 5xx, with the server's detail.
        """
        return self._call("POST", "/predict", json={"records": records})["predictions"]

    def version(self) -> dict[str, Any]:
        """The served model, version, flavor, inputs and batching counters."""
        return self._call("GET", "/version")

    def healthy(self) -> bool:
        """Whether ``/healthz`` answers 200 (never raises)."""
        try:
            return self._http.get("/healthz").status_code == 200
        except Exception:  # connection refused, timeout: not healthy
            return False

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        r = self._http.request(method, path, **kw)
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ServingError(r.status_code, str(detail)[:2000])
        return r.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()
