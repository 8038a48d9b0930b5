"""How a test coordinates with the tasks and drivers it starts: poll with a deadline, read the pid
a task wrote, check a process is alive, count a task's ``ran-<name>`` ledger lines.

Tasks under test write files (``<name>.pid``, ``ran-<name>``) and wait for markers (``go``); the
test polls for those files with ``wait_for``, so every wait has a timeout.

Example::

    pid = wait_for(lambda: read_pid(folder / "gated.pid"), 30, "'gated' to write its pid")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 10, f"worker pid {pid} to die")
    assert ledger(folder, "gated") == 2
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_for(
    condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition", interval: float = 0.05
) -> Any:
    """Poll ``condition`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def read_pid(path: Path) -> int | None:
    """The pid in ``path``, or None while it is not written yet (or caught half-written)."""
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def ledger(folder: Path, name: str) -> int:
    """How many times task ``name`` ran: the lines of ``folder/ran-<name>``."""
    p = folder / f"ran-{name}"
    return len(p.read_text().split()) if p.exists() else 0


def at_once(call: Callable[[], Any], n: int, timeout: float = 60.0) -> list[Any]:
    """Call ``call`` from ``n`` threads released together; what each returned, or the exception
    it raised, in the order they finished."""
    barrier, results = threading.Barrier(n), []

    def run() -> None:
        barrier.wait()
        try:
            results.append(call())
        except Exception as exc:  # the test decides what a loser's error must be
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    return results
