"""Cancel a run: the one function ``rayline cancel``, ``rayline.cancel`` and the UI's cancel call.

A cancel goes through the database, so it works from any host (or PID namespace) that shares
the run store: ``cancel_run`` records a request against the run's lease (``store/cancels.py``),
the driver's heartbeat sees it within about half a second, acknowledges it, cancels its Ray work
and records CANCELLED itself (exit code 130), which frees the flow's slot. A reserved run that
has not started is marked CANCELLED at once. A run whose driver is gone (its lease expired, or
its pid dead on this host and no driver acknowledged the request) is marked CANCELLED here; Ray
already stopped the tasks that driver owned, as it does for any driver that exits.

Example::

    with Session(executor="local") as session:
        code = cancel_run(session, "1a2b3c", wait_s=10, say=print)
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

from rayline.errors import EXIT_FAILED, EXIT_OK
from rayline.launch.session import Session
from rayline.store.cancels import CancelRequests

__all__ = ["cancel_run"]

Say = Callable[[str, bool], None]  # (line, to stderr?)

#: How long a live driver may take to acknowledge a request (it looks twice a second) before a
#: driver whose pid looks dead from here is taken for dead: from another PID namespace a live
#: driver's pid looks dead too.
ACK_GRACE_S = 3.0


def cancel_run(session: Session, run_id: str, *, wait_s: float, say: Say) -> int:
    """Cancel ``run_id`` (or a unique prefix) and wait up to ``wait_s`` seconds for it to end;
    ``say`` receives the lines for people. Returns the exit code: 0 cancelled (or already
    finished, or requested with ``wait_s`` 0), 1 still running after ``wait_s``.

    Raises:
        UsageError: no such run.
    """
    record = session.find_run(run_id)
    rid = record.run_id
    if record.status.terminal:
        say(f"run {rid} already finished: {record.status.value}; nothing to cancel", False)
        return EXIT_OK
    cancels = CancelRequests(session.runs, session.settings.lease_ttl)
    by = f"pid {os.getpid()} on {socket.gethostname()}"
    now = cancels.request(rid, f"cancelled with `rayline cancel` ({by})", by=by)
    if now.status.terminal:
        say(f"run {rid}: {now.status.value}", False)
        return EXIT_OK
    say(f"run {rid}: cancel requested; waiting up to {wait_s:g} s for its driver (pid {now.owner_pid} on "
        f"{now.owner_host}) to stop it", True)  # fmt: skip
    return _wait(session, cancels, now, wait_s, say)


def _wait(session: Session, cancels: CancelRequests, record: Any, wait_s: float, say: Say) -> int:
    rid, generation = record.run_id, record.generation
    t0 = time.monotonic()
    while True:
        now = session.runs.get_run(rid)
        if now.status.terminal:
            say(f"run {rid}: {now.status.value}", False)
            return EXIT_OK
        waited = time.monotonic() - t0
        acked = cancels.noticed(rid, generation)
        if (not acked and (waited >= ACK_GRACE_S or _lease_expired(session, now))
                and cancels.cancel_abandoned(rid)):  # fmt: skip
            say(f"run {rid}: driver pid {now.owner_pid} on {now.owner_host} is not running; marked CANCELLED", False)
            return EXIT_OK
        if waited >= wait_s:
            break
        time.sleep(0.2)
    if wait_s == 0:
        say(f"run {rid}: cancel requested; its driver stops it within a few seconds", False)
        return EXIT_OK
    state = "stopping it" if cancels.noticed(rid, generation) else "has not seen the request yet"
    say(f"run {rid} is still {now.status.value} after {wait_s:g} s; its driver (pid {now.owner_pid} on "
        f"{now.owner_host}) {state}. The request stands: the driver stops the run when it sees it, or "
        f"if the driver is gone the run is marked CANCELLED once its lease expires "
        f"({session.settings.lease_ttl:g} s): `rayline cancel {rid}` again then", True)  # fmt: skip
    return EXIT_FAILED


def _lease_expired(session: Session, record: Any) -> bool:
    beat = record.heartbeat_at or record.started_at or record.created_at
    return time.time() - beat.timestamp() > session.settings.lease_ttl
