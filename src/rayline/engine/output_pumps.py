"""The process-wide halves of task-output capture (``task_output.py``), started once per process
and kept, because starting threads per attempt costs more than a small task (~0.3 ms a thread on
2 busy cores):

- ``Flusher``: one thread that hands each open capture's text to its sink every interval while
  it changes;
- ``FdTees``: file descriptors 1 and 2 pointed at pipes for the rest of the process (only where
  an attempt owns its process: a Ray worker), each with a thread that tees every chunk to where
  the descriptor pointed before and gives whole lines to the attempt that owns the descriptors
  now. ``sync()`` returns once everything written before it was handed on, so an attempt's log
  ends with what it wrote, and nothing of it goes to the next attempt.

These are caches of running threads and descriptors, not state that changes what a run does.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("rayline.task_output")

SYNC_MARK = b"\x00\x01rayline-fd-sync\x01\x00"
_LOCK = threading.Lock()
_TEES: FdTees | None = None
_TEES_FAILED = False
_FLUSHER: Flusher | None = None


class Flusher:
    """Calls ``flush(capture)`` for each registered capture every ``interval`` seconds."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[Any, Callable[[Any], None], float]] = {}
        self._wake = threading.Condition()
        thread = threading.Thread(target=self._loop, name="rayline-task-logs", daemon=True)
        thread.start()

    def add(self, out: Any, flush: Callable[[Any], None], interval: float) -> None:
        with self._wake:
            self._items[id(out)] = (out, flush, interval)
            self._wake.notify()

    def remove(self, out: Any) -> None:
        with self._wake:
            self._items.pop(id(out), None)

    def _loop(self) -> None:
        import time

        due: dict[int, float] = {}
        while True:
            with self._wake:
                while not self._items:
                    due.clear()
                    self._wake.wait()
                items = list(self._items.items())
                now = time.monotonic()
                for key, (_, _, interval) in items:
                    due.setdefault(key, now + interval)
                wait = min(due[k] for k, _ in items) - now
                if wait > 0:
                    self._wake.wait(wait)
                    continue
            for key, (out, flush, interval) in items:
                if due.get(key, 0) <= now:
                    due[key] = now + interval
                    flush(out)
            for key in set(due) - {k for k, _ in items}:
                due.pop(key, None)


def flusher() -> Flusher:
    """This process's flusher thread (started on first use)."""
    global _FLUSHER
    with _LOCK:
        if _FLUSHER is None:
            _FLUSHER = Flusher()
        return _FLUSHER


class _FdTee:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.owner: Any = None  # the CapturedOutput that gets what is written now
        self.saved = os.dup(fd)
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self.read_end = read_end
        self._synced = threading.Condition()
        self._asked = self._done = 0
        threading.Thread(target=self._pump, name=f"rayline-fd{fd}", daemon=True).start()

    def ask(self) -> int:
        """Put a sync mark in the pipe; ``wait`` for its number."""
        with self._synced:
            self._asked += 1
            target = self._asked
        os.write(self.fd, SYNC_MARK)  # one write under PIPE_BUF: never split by other writers
        return target

    def wait(self, target: int, timeout: float = 2.0) -> None:
        with self._synced:
            self._synced.wait_for(lambda: self._done >= target, timeout)

    def restore(self) -> None:
        os.dup2(self.saved, self.fd)

    def _give(self, data: bytes) -> None:
        owner = self.owner
        if owner is not None and data:
            owner.add_bytes(data)

    def _pump(self) -> None:
        carry = b""  # the start of a sync mark, cut by a read
        line = b""  # the owner's partial line: lines of 1 and 2 interleave whole
        while True:
            try:
                chunk = os.read(self.read_end, 65536)
            except OSError:
                return
            if not chunk:
                return
            data = carry + chunk
            carry = b""
            while (i := data.find(SYNC_MARK)) >= 0:
                self._tee(data[:i])
                self._give(line + data[:i])
                line, data = b"", data[i + len(SYNC_MARK):]
                with self._synced:
                    self._done += 1
                    self._synced.notify_all()
            k = data.rfind(b"\x00", max(0, len(data) - len(SYNC_MARK) + 1))
            if k >= 0 and SYNC_MARK.startswith(data[k:]):
                data, carry = data[:k], data[k:]
            self._tee(data)
            line += data
            cut = line.rfind(b"\n") + 1 if len(line) < 65536 else len(line)
            self._give(line[:cut])
            line = line[cut:]

    def _tee(self, data: bytes) -> None:
        if data:
            try:
                os.write(self.saved, data)
            except OSError:
                pass


class FdTees:
    """Descriptors 1 and 2 teed for the rest of the process (see the module's docstring)."""

    def __init__(self) -> None:
        self.tees: list[_FdTee] = []
        try:
            for fd in (1, 2):
                self.tees.append(_FdTee(fd))
        except OSError:
            self.restore()
            raise
        atexit.register(self.restore)

    def own(self, out: Any) -> None:
        """Give what is written from now on to ``out`` (None: to the console only)."""
        for t in self.tees:
            t.owner = out

    def sync(self) -> None:
        """Return once what was written to 1 and 2 so far went to its owner (both at once)."""
        for t, target in [(t, t.ask()) for t in self.tees]:
            t.wait(target)

    def restore(self) -> None:
        for t in self.tees:
            t.restore()


def fd_tees() -> FdTees | None:
    """This process's descriptor tees (set up on first use), or None where they cannot be."""
    global _TEES, _TEES_FAILED
    with _LOCK:
        if _TEES is None and not _TEES_FAILED:
            try:
                _TEES = FdTees()
            except OSError as exc:
                log.debug("file descriptor capture unavailable: %s", exc)
                _TEES_FAILED = True
        return _TEES
