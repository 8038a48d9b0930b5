"""rayline's one logging set-up: log lines of the ``rayline`` loggers to stderr.

Used by the ``rayline`` command and by a scheduler's child process (``python -m rayline.launch``),
so both write the same lines: ``2026-01-02T03:00:00Z INFO rayline.launch: message`` when stderr
is not a terminal (cron, CI, a log file), a short ``INFO rayline.launch: message`` on a terminal.

Example::

    configure_logging()      # RAYLINE_LOG_LEVEL=DEBUG for more
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

__all__ = ["configure_logging"]


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is *now*, so that a rich ``Live`` display (which
    redirects stderr) and test runners (which swap it) both receive the lines."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging() -> None:
    """INFO (or ``RAYLINE_LOG_LEVEL``) from rayline's loggers to stderr; UTC timestamps when
    stderr is not a terminal, a short form on a terminal. Calling it again replaces its handler."""
    level = logging.getLevelName(os.environ.get("RAYLINE_LOG_LEVEL", "INFO").upper())
    if not isinstance(level, int):
        level = logging.INFO
    logger = logging.getLogger("rayline")
    for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(h)
    handler = _StderrHandler()
    if _stderr_is_tty():
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        fmt.converter = time.gmtime
        handler.setFormatter(fmt)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
