"""Who may use the UI: loopback binds only, unless a token is required, and CSRF on every POST.

- Bound to a loopback address (the default, 127.0.0.1) the UI needs no token: only this machine
  reaches it. Bound to anything else, every request must carry the token printed when the server
  started, as ``?token=`` once (it is then kept in an HttpOnly cookie), a ``rayline_token``
  cookie, or an ``Authorization: Bearer`` header.
- Every POST must carry the per-browser CSRF token (the ``rayline_csrf`` cookie, repeated as the
  form field ``csrf``), and an ``Origin`` header, when the browser sends one, must name this
  server. A page on another site can neither read the cookie nor forge the field.

Example::

    app.add_middleware(TokenGuard, token=secrets.token_urlsafe(32))   # non-loopback only
    form = await checked_form(request)                                 # in a POST handler
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

TOKEN_COOKIE = "rayline_token"
CSRF_COOKIE = "rayline_csrf"
CSRF_FIELD = "csrf"


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh random token (for the non-loopback access token and for CSRF)."""
    return secrets.token_urlsafe(32)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens (False when either is missing)."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


class TokenGuard:
    """ASGI middleware: refuse every HTTP request that does not carry ``token`` (401)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.query_params.get("token")
        bearer = request.headers.get("authorization", "")
        if same(given, self.token):
            # Keep it in a cookie and drop it from the address bar (and from the history).
            query = "&".join(f"{k}={v}" for k, v in request.query_params.multi_items() if k != "token")
            response: Response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), 303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
        elif same(request.cookies.get(TOKEN_COOKIE), self.token) or (
            bearer.startswith("Bearer ") and same(bearer[7:], self.token)
        ):
            await self.app(scope, receive, send)
            return
        else:
            response = PlainTextResponse(
                "401: this rayline UI needs the token printed when it started "
                "(open the URL it printed, with ?token=...)", status_code=401,
            )  # fmt: skip
        await response(scope, receive, send)


def csrf_token(request: Request) -> str:
    """This browser's CSRF token: its cookie, or a new one (set on the response by the app)."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token:
        token = getattr(request.state, "new_csrf", None) or new_token()
        request.state.new_csrf = token
    return token


def remember_csrf(request: Request, response: Response) -> Response:
    """Set the CSRF cookie on ``response`` when this request created the token."""
    token = getattr(request.state, "new_csrf", None)
    if token:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict")
    return response


async def checked_form(request: Request) -> dict[str, str]:
    """The POSTed form (URL-encoded, as the UI's forms send it), once its CSRF token and Origin
    are checked (else HTTP 403)."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise HTTPException(403, f"cross-site request refused (Origin {origin}, host {host})")
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind not in ("", "application/x-www-form-urlencoded"):
        raise HTTPException(415, f"a form is sent URL-encoded, not as {kind}")
    body = (await request.body())[:65536].decode("utf-8", "replace")
    form = dict(parse_qsl(body, keep_blank_values=True))
    if not same(form.get(CSRF_FIELD), request.cookies.get(CSRF_COOKIE)):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return form
