"""Launchers start reserved runs: ``InProcessLauncher`` here and now (``rayline run``,
``rayline trigger``, ``rayline schedule tick``: run, wait), ``ProcessLauncher`` one child process
per run (``rayline scheduler``, ``rayline trigger --no-wait``: ``python -m rayline.launch
RUN_ID``), so a scheduler loop never blocks and a crashing run cannot take it down.

Both have the same surface: ``start(run_id, plan=None, ...)``, ``busy()``, ``reap()``,
``shutdown(timeout)``. A plan that the caller compiled for the reservation is passed on, so a
run started in this process is never compiled twice; a child process loads and compiles its run
once.

Example::

    launcher = InProcessLauncher(Settings(), executor="local")
    launcher.start(run_id)
    launcher.finished          # [(run_id, "SUCCEEDED")]
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

from rayline.config import Settings
from rayline.engine.compiler import Plan
from rayline.launch.admission import start_reserved
from rayline.launch.session import Session

log = logging.getLogger("rayline.launch")

__all__ = ["InProcessLauncher", "ProcessLauncher", "start_run"]


def start_run(
    run_id: str,
    *,
    settings: Settings | None = None,
    executor: Any = None,
    address: str | None = None,
    on_event: Any = None,
    plan: Plan | None = None,
) -> Any:
    """Start the reserved PENDING run ``run_id`` in a session of its own and wait for it;
    return its final record (see ``admission.start_reserved``)."""
    with Session(settings, executor, address) as session:
        start_reserved(session, run_id, plan=plan, on_event=on_event)
        return session.runs.get_run(run_id)


class InProcessLauncher:
    """Starts each run in this process and waits for it; ``finished`` lists (run id, status)."""

    def __init__(self, settings: Settings, executor: Any = None, address: str | None = None) -> None:
        self.settings, self.executor, self.address = settings, executor, address
        self.finished: list[tuple[str, str]] = []

    def start(self, run_id: str, *, plan: Plan | None = None, on_event: Any = None,
              raise_errors: bool = False) -> None:  # fmt: skip
        """Run ``run_id`` here; a run that cannot start is logged (and ends FAILED) unless
        ``raise_errors``."""
        t0 = time.monotonic()
        try:
            record = start_run(run_id, settings=self.settings, executor=self.executor, address=self.address,
                               on_event=on_event, plan=plan)  # fmt: skip
        except Exception as exc:
            self.finished.append((run_id, "FAILED"))
            if raise_errors:
                raise
            log.error("run %s did not start: %s", run_id, exc)
            return
        status = record.status.value
        self.finished.append((run_id, status))
        if on_event is not None:
            return  # the caller watches the run's events and reports its end itself
        tail = f": {record.error.strip().splitlines()[0]}" if record.error else ""
        log.info("run %s (%s) %s in %.1f s%s", run_id, record.flow_name, status, time.monotonic() - t0, tail)

    def busy(self) -> bool:
        return False

    def reap(self) -> None:
        pass

    def shutdown(self, timeout: float) -> None:
        pass


class ProcessLauncher:
    """Starts each run in a child process and keeps track of them."""

    def __init__(self, settings: Settings, local: bool = False, address: str | None = None) -> None:
        self.settings, self.local, self.address = settings, local, address
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def command(self, run_id: str) -> list[str]:
        cmd = [sys.executable, "-m", "rayline.launch", run_id]
        if self.local:
            cmd.append("--local")
        if self.address:
            cmd += ["--address", self.address]
        return cmd

    def start(self, run_id: str, **_: Any) -> None:
        """Start ``run_id`` in a child process (which loads and compiles it; a ``plan`` given
        here cannot cross the process boundary and is ignored)."""
        env = dict(os.environ)
        s = self.settings
        env.update(RAYLINE_HOME=str(s.resolved_home), RAYLINE_LEASE_TTL=str(s.lease_ttl),
                   RAYLINE_HEARTBEAT_INTERVAL=str(s.heartbeat_interval))  # fmt: skip
        if s.db_url:
            env["RAYLINE_DB_URL"] = s.db_url
        if s.artifacts_url:
            env.update(RAYLINE_ARTIFACTS_URL=s.artifacts_url,
                       RAYLINE_ARTIFACTS_OPTIONS=json.dumps(s.artifacts_options))  # fmt: skip
        # A session of its own: a Ctrl-C on the scheduler's terminal reaches the scheduler,
        # which then stops each run cleanly (SIGINT -> CANCELLED), once.
        self.children[run_id] = subprocess.Popen(self.command(run_id), env=env, stdin=subprocess.DEVNULL,
                                                 start_new_session=True)  # fmt: skip
        log.info("run %s started in pid %d", run_id, self.children[run_id].pid)

    def busy(self) -> bool:
        return bool(self.children)

    def reap(self) -> None:
        for run_id, child in list(self.children.items()):
            code = child.poll()
            if code is not None:
                del self.children[run_id]
                log.info("run %s finished (pid %d exited %d)", run_id, child.pid, code)

    def shutdown(self, timeout: float) -> None:
        """Ask every running child to stop (SIGINT: the run is recorded CANCELLED and can be
        resumed), wait up to ``timeout`` s, then kill what is left."""
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for run_id, child in self.children.items():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("run %s (pid %d) did not stop within %g s; killing it", run_id, child.pid, timeout)
                child.kill()
                child.wait()
        self.children.clear()
