"""Cancel requests: how ``rayline cancel`` reaches a run's driver from any host, through the
database rather than a signal.

``request`` records a cancel of a RUNNING run against its lease ``generation`` (one row per run
in ``run_cancels``; a resume takes a new generation, which an old request does not touch); a
reserved run that has not started (PENDING) is marked CANCELLED at once, in the same
transaction, which frees its flow's slot or drops it from the queue. The driver's heartbeat
polls ``standing`` every fraction of a second, ``notice`` acknowledges it (so the requester knows
a live driver is on it), and the driver cancels its Ray work and records CANCELLED itself. A
run whose driver is gone is ended by ``cancel_abandoned`` (or by whoever finds its lease stale:
``leases.interrupt`` ends a run with a standing request CANCELLED, not INTERRUPTED).

Example::

    cancels = CancelRequests(store)
    run = cancels.request("1a2b3c4d5e6f", "cancelled with `rayline cancel` on host a")
    cancels.standing("1a2b3c4d5e6f", run.generation)   # the reason, seen by the driver
"""

from __future__ import annotations

import socket
import time
from typing import Any

from sqlalchemy import Connection, insert, select, update

from rayline.store import leases
from rayline.store.run_records import RunRecord, run_from_row
from rayline.store.schema import run_cancels, runs
from rayline.store.states import RunStatus

__all__ = ["CancelRequests"]


class CancelRequests:
    """Cancel requests of the runs in ``store`` (a ``RunStore``, or anything with its
    ``transaction``, ``url`` and ``is_stale``)."""

    def __init__(self, store: Any, lease_ttl: float = 30.0) -> None:
        self.store, self.lease_ttl = store, lease_ttl

    def request(self, run_id: str, reason: str, *, by: str = "") -> RunRecord:
        """Ask the run to stop; return it as it is after this transaction: CANCELLED if it was
        a reserved run that had not started, unchanged (RUNNING, the request recorded for its
        generation) if a driver has it, or already ended.

        Raises:
            StoreError: no such run.
        """
        with self.store.transaction() as conn:
            run = _locked(conn, run_id, self.store.url)
            if run.status == RunStatus.PENDING:
                values = {"status": str(RunStatus.CANCELLED), "ended_at": time.time(),
                          "error": f"{reason} before it started"}  # fmt: skip
                leases.fence(conn, run_id, run.generation, {**values, "generation": run.generation + 1},
                             where=self.store.url)  # fmt: skip
            elif run.status == RunStatus.RUNNING:
                row = {"generation": run.generation, "requested_at": time.time(), "reason": reason,
                       "requested_by": by[:256], "noticed_at": None}  # fmt: skip
                mine = update(run_cancels).where(run_cancels.c.run_id == run_id)
                if conn.execute(mine.values(**row)).rowcount == 0:
                    conn.execute(insert(run_cancels).values(run_id=run_id, **row))
            else:
                return run
            return _locked(conn, run_id, self.store.url)

    def standing(self, run_id: str, generation: int) -> str | None:
        """The reason of a cancel requested for the run's lease ``generation``, or None."""
        stmt = select(run_cancels.c.reason).where(
            run_cancels.c.run_id == run_id, run_cancels.c.generation == generation
        )
        with self.store.transaction(read=True) as conn:
            return conn.execute(stmt).scalar()

    def notice(self, run_id: str, generation: int) -> None:
        """The driver holding ``generation`` acknowledges the request: it is cancelling."""
        stmt = update(run_cancels).where(run_cancels.c.run_id == run_id, run_cancels.c.generation == generation)
        with self.store.transaction() as conn:
            conn.execute(stmt.values(noticed_at=time.time()))

    def noticed(self, run_id: str, generation: int) -> bool:
        """Whether the driver holding ``generation`` has acknowledged the run's request."""
        stmt = select(run_cancels.c.noticed_at).where(
            run_cancels.c.run_id == run_id, run_cancels.c.generation == generation
        )
        with self.store.transaction(read=True) as conn:
            return conn.execute(stmt).scalar() is not None

    def cancel_abandoned(self, run_id: str) -> bool:
        """End a RUNNING run whose driver is gone (``leases.is_stale``) CANCELLED, its unfinished
        tasks too, and revoke the lease; True if it did. Ray stops the tasks a dead driver owned
        by itself; nothing else runs the run's work."""
        with self.store.transaction() as conn:
            run = _locked(conn, run_id, self.store.url)
            if not leases.is_stale(run, self.lease_ttl, host=socket.gethostname()):
                return False
            leases.interrupt(conn, run, self.lease_ttl, where=self.store.url, found_by="`rayline cancel`")
            return True


def _locked(conn: Connection, run_id: str, where: str) -> RunRecord:
    row = conn.execute(select(runs).where(runs.c.run_id == run_id).with_for_update()).first()
    if row is None:
        raise leases.missing_run(run_id, where)
    return run_from_row(row)
