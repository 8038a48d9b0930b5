"""What the UI's buttons do, each through the same path as the CLI command of the same name.

- resume: ``rayline resume RUN_ID`` in a child process (its own session, output to
  ``RAYLINE_HOME/ui/resume-<run>.log``), so the run's driver is a CLI driver like any other:
  ``rayline cancel`` and the UI's cancel reach it through the run store, and the UI server never runs
  user code itself.
- cancel: ``rayline.api.cancel`` (``launch.cancel.cancel_run``, as ``rayline cancel``).
- promote, rollback: ``ModelRegistry.promote`` / ``rollback``, as ``rayline models`` calls them.

The one module to re-point when these verbs move (``launch/``, ``models/``).

Example::

    drivers = Drivers(settings, local=True)
    pid = drivers.resume("1a2b3c…")
    code, message = cancel(settings, "1a2b3c…")
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rayline.config import Settings


class Drivers:
    """Child processes (``rayline resume``) the UI started, reaped as they end."""

    def __init__(self, settings: Settings, *, local: bool = False, address: str | None = None) -> None:
        self.settings = settings
        self.local = local
        self.address = address
        self._children: list[subprocess.Popen[bytes]] = []

    def resume(self, run_id: str) -> int:
        """Start ``rayline resume run_id`` in the background; return its pid."""
        self.reap()
        folder = Path(self.settings.resolved_home) / "ui"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        args = [sys.executable, "-m", "rayline.cli.main", "resume", run_id, "--quiet"]
        if self.local:
            args.append("--local")
        if self.address:
            args += ["--address", self.address]
        env = {**os.environ, "RAYLINE_HOME": str(self.settings.resolved_home)}
        with open(folder / f"resume-{run_id}.log", "ab") as log:
            child = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                     start_new_session=True)  # fmt: skip
        self._children.append(child)
        return child.pid

    def reap(self) -> None:
        """Forget children that have exited (collecting their exit status)."""
        self._children = [c for c in self._children if c.poll() is None]

    def stop(self, timeout: float = 10.0) -> None:
        """On shutdown: wait for running resumes (they keep running if they outlive ``timeout``)."""
        for c in self._children:
            try:
                c.wait(timeout)
            except subprocess.TimeoutExpired:
                pass


def cancel(settings: Settings, run_id: str, wait_s: float = 15.0) -> tuple[int, str]:
    """Cancel a run as ``rayline cancel RUN_ID`` does (``rayline.api.cancel``: a request in the
    run store that its driver, on any host, acts on; or CANCELLED at once when its driver is
    gone); returns 0 and the run's state, or 1 and why it could not be cancelled."""
    from rayline import api
    from rayline.errors import RaylineError

    try:
        run = api.cancel(run_id, wait=wait_s, settings=settings)
    except RaylineError as e:
        return 1, f"not cancelled: {e}"
    return 0, f"run {run.run_id}: {run.status.value}"


def registry(settings: Settings) -> Any:
    """The model registry of ``settings`` (the app keeps one open; close it when done)."""
    from rayline.models.registry.sql import ModelRegistry

    return ModelRegistry(settings)


def promote(reg: Any, name: str, version: int, alias: str, reason: str | None) -> Any:
    """Point ``alias`` of ``name`` at ``version`` in registry ``reg`` (``rayline models promote``)."""
    return reg.promote(name, version, alias, reason=reason or "promoted in the web UI", actor=_actor())


def rollback(reg: Any, name: str, alias: str, expected: int | None, reason: str | None) -> Any:
    """Move ``alias`` of ``name`` back one promotion (``rayline models rollback``); with
    ``expected``, only if it still points where the page showed it."""
    return reg.rollback(name, alias, reason=reason or "rolled back in the web UI", actor=_actor(),
                        expected=expected)  # fmt: skip


def _actor() -> str:
    from rayline.models.registry.records import default_actor

    return f"{default_actor()} (web UI)"
