"""When a run ends: the flow's hooks (``@flow(on_failure=..., on_success=...)``) and the
webhook (``RAYLINE_NOTIFY_URL``), called on the driver once the run's final state is committed.

``announce_end`` is called from one place, ``admission.drive``, which every way of running goes
through (``rayline.run``, ``rayline run``, ``resume``, ``trigger``, a scheduler's tick or child
process). A hook or webhook that fails (an exception, a timeout, a non-2xx answer) is logged on
the ``rayline.launch`` logger and changes nothing: not the run's status, not the exit code.

The webhook's body is one JSON object::

    {"run_id": "1a2b3c4d5e6f", "flow": "nightly", "status": "FAILED",
     "error": "task 'train' failed: ValueError: ...", "link": "rayline runs show 1a2b3c4d5e6f",
     "started_at": "2026-01-02T03:00:00+00:00", "ended_at": "2026-01-02T03:04:05+00:00"}

``link`` is ``RAYLINE_UI_URL/runs/ID`` when the UI's address is set.

Example::

    announce_end(session, run_id, graph)     # after the Runner returned
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from rayline.config import Settings
from rayline.sdk.graph import Graph
from rayline.sdk.hooks import call_hook

log = logging.getLogger("rayline.launch")

__all__ = ["announce_end", "post_webhook", "run_link", "webhook_body"]

_FAILURES = ("FAILED", "INTERRUPTED")


def announce_end(session: Any, run_id: str, graph: Graph | None) -> None:
    """Call ``graph``'s hooks for the ended run ``run_id``, then post the webhook (if set).
    Never raises (but for Ctrl-C): every failure is logged."""
    try:
        record = session.runs.get_run(run_id)
    except Exception as exc:
        log.warning("run %s ended, but its record cannot be read for hooks and notifications: %s", run_id, exc)
        return
    status = record.status.value
    if not record.status.terminal:
        return  # another process drives it now (a lost lease): that process announces its end
    hooks = graph.hooks if graph is not None else None
    args = {"run_id": run_id, "flow": record.flow_name, "status": status, "error": record.error, "run": record}
    for hook in hooks.for_status(status) if hooks else ():
        try:
            call_hook(hook, args)
        except (Exception, SystemExit) as exc:
            name = getattr(hook, "__qualname__", repr(hook))
            log.warning("run %s: hook %s failed (the run's outcome stays %s): %s: %s",
                        run_id, name, status, type(exc).__name__, exc)  # fmt: skip
    settings: Settings = session.settings
    if settings.notify_url and (settings.notify_on == "all" or status in _FAILURES):
        post_webhook(settings.notify_url, webhook_body(record, settings), settings.notify_timeout)


def webhook_body(record: Any, settings: Settings) -> dict[str, Any]:
    """The JSON object the webhook receives for the run ``record``."""

    def iso(t: Any) -> str | None:
        return t.isoformat() if t is not None else None

    return {
        "run_id": record.run_id,
        "flow": record.flow_name,
        "status": record.status.value,
        "error": record.error,
        "link": run_link(record.run_id, settings),
        "started_at": iso(record.started_at),
        "ended_at": iso(record.ended_at),
    }


def run_link(run_id: str, settings: Settings) -> str:
    """Where a person sees the run: the UI's page when ``RAYLINE_UI_URL`` is set, else the
    command that shows it."""
    if settings.ui_url:
        return f"{settings.ui_url.rstrip('/')}/runs/{run_id}"
    return f"rayline runs show {run_id}"


def post_webhook(url: str, body: dict[str, Any], timeout: float) -> bool:
    """POST ``body`` as JSON to ``url``; True on a 2xx answer. Failures are logged, not raised."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the settings accept http(s) URLs only
        url, data=data, method="POST", headers={"Content-Type": "application/json", "User-Agent": "rayline"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            code = response.status
    except urllib.error.HTTPError as exc:
        code = exc.code
    except (OSError, ValueError) as exc:  # refused, unreachable, timed out, a malformed URL
        log.warning("run %s: the webhook at %s failed: %s", body.get("run_id"), _host(url), exc)
        return False
    if not 200 <= code < 300:
        log.warning("run %s: the webhook at %s answered HTTP %s", body.get("run_id"), _host(url), code)
        return False
    return True


def _host(url: str) -> str:
    # Only the host: a webhook's path often holds its token (Slack, Teams).
    from urllib.parse import urlsplit

    return urlsplit(url).netloc or "?"
