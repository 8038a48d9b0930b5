"""Serve the UI: bind (loopback unless told otherwise), require a token off loopback, run.

Example::

    serve(UiConfig(settings=Settings()), host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rayline.ui.app import UiConfig, create_app
from rayline.ui.security import is_loopback, new_token


def load_schedules(paths: Sequence[str]) -> tuple[list[Any], str | None]:
    """The schedule entries of ``paths`` (default ``configs/schedules.yaml`` when it exists) and,
    when they cannot be loaded, why (the flows page shows it; the UI still starts)."""
    from rayline.errors import RaylineError
    from rayline.triggers.catalog import DEFAULT_SCHEDULES, load_entries

    if not paths and not DEFAULT_SCHEDULES.exists():
        return [], None
    try:
        return load_entries(paths), None
    except RaylineError as e:
        return [], str(e)


def serve(config: UiConfig, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve until interrupted. Off loopback a fresh token is required and printed once."""
    import uvicorn

    if not is_loopback(host):
        config.token = config.token or new_token()
    app = create_app(config)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/runs"
    if config.token:
        print(f"rayline ui: serving on {url}?token={config.token}\n"
              "rayline ui: this address is reachable from other machines; every request needs "
              "that token (open the URL once; a cookie keeps it)", file=sys.stderr, flush=True)  # fmt: skip
    else:
        print(f"rayline ui: serving on {url} (this machine only)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
