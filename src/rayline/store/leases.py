"""A run's lease, inside the caller's transaction: who owns the run, and its fencing token.

The owner of a RUNNING run holds a lease: its pid, its host and a heartbeat that every write made
on its behalf renews. ``generation`` is the fencing token: each such write names the generation
it holds, and ``fence`` applies it only while that is still the run's generation, in one
conditional UPDATE (atomic on any backend). ``take_over`` and ``interrupt_if_stale`` move the
generation on, so the former owner's next write raises ``LeaseLostError`` and writes nothing.

A lease is stale when its owner pid is dead on this host, or its last heartbeat is older than
``lease_ttl`` seconds. ``RunStore`` (``runs.py``) wraps these functions in its transactions.

Example::

    with engine.begin() as conn:
        generation = take_over(conn, run_id, owner_pid=os.getpid(), owner_host=host,
                               lease_ttl=30.0, host=host, where=url)
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, select, update

from rayline.errors import LeaseLostError, RunBusyError, StoreError
from rayline.store.run_records import RunRecord, run_from_row, to_ts
from rayline.store.schema import run_cancels, runs, tasks
from rayline.store.states import RunStatus, TaskStatus


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host runs (a zombie does not; one we may not see does)."""
    import psutil  # lazy: only resume and the scheduler ask

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def missing_run(run_id: str, where: str) -> StoreError:
    """The error for a run id that is not in the store at ``where``."""
    return StoreError(f"no run '{run_id}' in {where}; `rayline runs list` shows the runs")


def fence(conn: Connection, run_id: str, held: int, values: dict[str, Any], *, where: str) -> None:
    """Update the run with ``values`` (and a fresh heartbeat) if generation ``held`` still holds
    its lease.

    Raises:
        LeaseLostError: the run is at another generation now; nothing was written.
        StoreError: no such run.
    """
    values = {"heartbeat_at": time.time(), **values}
    stmt = update(runs).where(runs.c.run_id == run_id, runs.c.generation == held)
    if conn.execute(stmt.values(**values)).rowcount == 1:
        return
    row = conn.execute(select(runs).where(runs.c.run_id == run_id)).first()
    if row is None:
        raise missing_run(run_id, where)
    now = row._mapping
    raise LeaseLostError(
        f"run {run_id} is no longer ours: this process holds lease generation {held}, "
        f"but the run is at generation {now['generation']} (status {now['status']}, owner "
        f"pid {now['owner_pid']} on {now['owner_host']}); stopping without writing"
    )


def is_stale(run: RunRecord, lease_ttl: float, *, host: str) -> bool:
    """Whether a RUNNING run's owner is gone, seen from ``host``.

    Stale when its owner pid is dead on ``host``, or its last heartbeat (or, before the first,
    its start) is older than ``lease_ttl`` seconds. Runs in other states are not.
    """
    if run.status != RunStatus.RUNNING:
        return False
    if run.owner_host == host and run.owner_pid is not None:
        if not pid_alive(run.owner_pid):
            return True
    beat = run.heartbeat_at or run.started_at or run.created_at
    return time.time() - beat.timestamp() > lease_ttl


def _locked_run(conn: Connection, run_id: str, where: str) -> RunRecord:
    row = conn.execute(select(runs).where(runs.c.run_id == run_id).with_for_update()).first()
    if row is None:
        raise missing_run(run_id, where)
    return run_from_row(row)


def take_over(
    conn: Connection,
    run_id: str,
    *,
    owner_pid: int,
    owner_host: str,
    lease_ttl: float,
    host: str,
    where: str,
) -> int:
    """Make ``owner_pid`` on ``owner_host`` the run's owner if its lease is not live; return the
    new generation. The run becomes RUNNING with a fresh ``started_at``, no ``ended_at``, no error.

    Raises:
        RunBusyError: the run is RUNNING under a live lease (another process drives it).
        StoreError: the run does not exist.
    """
    run = _locked_run(conn, run_id, where)
    if run.status == RunStatus.RUNNING and not is_stale(run, lease_ttl, host=host):
        beat = run.heartbeat_at or run.created_at
        ago = max(0.0, time.time() - beat.timestamp())
        raise RunBusyError(
            f"run {run_id} is still running in pid {run.owner_pid} on host "
            f"{run.owner_host} (heartbeat {ago:.0f} s ago); nothing was changed: cancel it "
            "first or wait",
            held_by=run_id,
        )
    return grant(conn, run, owner_pid=owner_pid, owner_host=owner_host, where=where)


def grant(conn: Connection, run: RunRecord, *, owner_pid: int, owner_host: str, where: str) -> int:
    """Give ``run`` (read in this transaction) a new lease held by ``owner_pid`` on
    ``owner_host``: RUNNING, a fresh ``started_at``, no ``ended_at``, no error. The caller has
    checked that it may (``take_over``, or ``FlowSlots.start`` for the slot holder). Returns the
    new generation.

    Raises:
        LeaseLostError: the run moved to another generation since it was read.
    """
    now = time.time()
    lease = {
        "owner_pid": owner_pid, "owner_host": owner_host, "heartbeat_at": now,
        "generation": run.generation + 1, "status": str(RunStatus.RUNNING),
        "started_at": now, "ended_at": None, "error": None,
    }  # fmt: skip
    fence(conn, run.run_id, run.generation, lease, where=where)
    return run.generation + 1


def interrupt_if_stale(
    conn: Connection, run_id: str, lease_ttl: float, *, host: str, where: str
) -> bool:
    """Mark a stale RUNNING run INTERRUPTED (its RUNNING tasks too) and revoke its lease.

    Returns:
        True if the run was stale and is now INTERRUPTED.

    Raises:
        StoreError: no such run.
    """
    run = _locked_run(conn, run_id, where)
    if not is_stale(run, lease_ttl, host=host):
        return False
    interrupt(conn, run, lease_ttl, where=where)
    return True


def interrupt(conn: Connection, run: RunRecord, lease_ttl: float, *, where: str, found_by: str = "") -> None:
    """Mark ``run`` (read in this transaction and found stale) INTERRUPTED, its RUNNING tasks
    too, and revoke its lease; ``found_by`` ends the recorded reason (e.g. "the scheduler").

    A run with a cancel standing for its lease (``cancels.py``: its driver died before it saw
    the request) ends CANCELLED instead, and so do its unfinished tasks."""
    why = (
        f"owner pid {run.owner_pid} on {run.owner_host} stopped "
        f"(no heartbeat within {lease_ttl:g} s or process gone)"
    ) + (f"; found by {found_by}" if found_by else "")
    ask = select(run_cancels.c.reason).where(run_cancels.c.run_id == run.run_id,
                                             run_cancels.c.generation == run.generation)  # fmt: skip
    cancelled = conn.execute(ask).scalar()
    status, unfinished = RunStatus.INTERRUPTED, [TaskStatus.RUNNING]
    if cancelled is not None:
        why = f"{cancelled}; its driver was no longer running ({why})"
        status, unfinished = RunStatus.CANCELLED, [TaskStatus.RUNNING, TaskStatus.PENDING]
    revoked = {
        "status": str(status), "ended_at": time.time(), "error": why,
        "generation": run.generation + 1, "heartbeat_at": to_ts(run.heartbeat_at),
    }  # fmt: skip
    fence(conn, run.run_id, run.generation, revoked, where=where)
    conn.execute(
        update(tasks)
        .where(tasks.c.run_id == run.run_id, tasks.c.status.in_([str(s) for s in unfinished]))
        .values(status=str(TaskStatus.CANCELLED if cancelled is not None else TaskStatus.INTERRUPTED),
                **({"ended_at": time.time()} if cancelled is not None else {}))
    )
