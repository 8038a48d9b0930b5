"""Cancel a run: the one function ``rayline cancel`` (and ``rayline.cancel``) calls.

Today a cancel reaches the run's driver by signal: if the driver process is alive on this host,
it gets SIGINT (as from Ctrl-C) and records CANCELLED itself, stopping its tasks; if the driver
is gone, the run is marked CANCELLED here, fenced by the dead driver's lease generation. A run
driven from another host must be cancelled there. The seam is ``cancel_run``: a cancel that goes
through the database (so that it works from any host) replaces its body, not its callers.

Example::

    with Session(executor="local") as session:
        code = cancel_run(session, "1a2b3c", wait_s=30, say=print)
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rayline.errors import EXIT_FAILED, EXIT_OK, UsageError
from rayline.launch.session import Session
from rayline.store.leases import pid_alive

__all__ = ["cancel_run"]

Say = Callable[[str, bool], None]  # (line, to stderr?)


def cancel_run(session: Session, run_id: str, *, wait_s: float, say: Say) -> int:
    """Cancel ``run_id`` (or a unique prefix); ``say`` receives the lines for people. Returns
    the exit code: 0 cancelled (or already finished), 1 the driver did not stop in ``wait_s``.

    Raises:
        UsageError: no such run, or it is driven from another host.
    """
    record = session.find_run(run_id)
    rid = record.run_id
    if record.status.terminal:
        say(f"run {rid} already finished: {record.status.value}; nothing to cancel", False)
        return EXIT_OK
    host = socket.gethostname()
    if record.owner_host and record.owner_host != host:
        raise UsageError(
            f"run {rid} is driven by pid {record.owner_pid} on host {record.owner_host}, not "
            f"this host ({host}); run `rayline cancel {rid}` there"
        )
    if record.owner_pid and record.owner_pid != os.getpid() and pid_alive(record.owner_pid) \
            and not session.runs.is_stale(record, session.settings.lease_ttl):  # fmt: skip
        return _interrupt_driver(session, record, wait_s, say)
    _cancel_in_store(session, record, "cancelled with `rayline cancel`; its driver was no longer running")
    say(f"run {rid}: driver pid {record.owner_pid} is not running; marked CANCELLED", False)
    return EXIT_OK


def _interrupt_driver(session: Session, record: Any, wait_s: float, say: Say) -> int:
    rid = record.run_id
    os.kill(record.owner_pid, signal.SIGINT)
    say(f"run {rid}: sent SIGINT to driver pid {record.owner_pid}; waiting up to {wait_s:g} s for it to stop", True)
    deadline = time.monotonic() + wait_s
    while True:
        now = session.runs.get_run(rid)
        if now.status.terminal:
            say(f"run {rid}: {now.status.value}", False)
            return EXIT_OK
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    say(f"run {rid} is still {now.status.value} after {wait_s:g} s; its driver (pid "
        f"{record.owner_pid}) may be stuck. `kill {record.owner_pid}` stops it, then "
        f"`rayline cancel {rid}` marks the run CANCELLED", True)  # fmt: skip
    return EXIT_FAILED


def _cancel_in_store(session: Session, record: Any, why: str) -> None:
    from rayline.store.runs import TaskUpdate
    from rayline.store.states import RunStatus, TaskStatus

    ended = datetime.now(UTC)
    updates = [TaskUpdate(node_id=t.node_id, status=TaskStatus.CANCELLED, ended_at=ended)
               for t in session.runs.get_tasks(record.run_id) if not t.status.terminal]  # fmt: skip
    # Fenced by the dead driver's lease generation: if anyone took the run over meanwhile,
    # LeaseLostError stops us from overwriting their state.
    if updates:
        session.runs.record_tasks(record.run_id, updates, generation=record.generation)
    session.runs.set_run_status(record.run_id, RunStatus.CANCELLED, error=why, generation=record.generation)
