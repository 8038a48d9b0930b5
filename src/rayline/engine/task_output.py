"""Capture what one attempt of a task prints, where it runs, and keep it as the task's log.

``capture(sink, limit)`` is a context manager around the user's function. While it is open,
everything written to ``sys.stdout`` / ``sys.stderr`` by the attempt (``print``, ``logging``
handlers writing to them, ``warnings``, tracebacks) still goes to the console as before (a tee:
Ray streams it to the driver) and is also kept in a ``CapturedOutput``:

- *routing*: ``sys.stdout``/``sys.stderr`` are replaced once per process by a ``_Router`` that
  sends each write to the capture of the attempt that made it, found through a ``ContextVar``,
  so concurrent attempts in one process (threads, a pool actor) never mix their logs. A write
  from a thread the task started (which does not inherit the context) goes to the process's
  only open capture when the attempt owns its process (a Ray worker), else to the console only;
- *cap*: at most ``limit`` bytes (``RAYLINE_TASK_LOG_LIMIT``, default 1 MiB) per attempt: the
  first half and the last half are kept, with a line saying how many bytes were cut between;
- *flush*: the process's flusher thread (``output_pumps.py``) hands the text to
  ``sink(data, final)`` every ``interval`` seconds while it changes, and the attempt once more
  at the end (``final``), so a log can be followed while the task runs
  and survives the death of the driver or the worker up to the last second or two.

- *below Python*: when the attempt owns its process (a Ray worker, ``fd_level=True``), file
  descriptors 1 and 2 are pointed at pipes (once per process, ``output_pumps.FdTees``), so output
  of subprocesses and C code is kept too; a reader thread tees each pipe to where the descriptor
  pointed before. Elsewhere
  (the in-process executor, where the driver shares the process) such output reaches the console
  but is not captured.

Example::

    with capture(lambda data, final: logs.write(run, node, 1, data, final=final)) as out:
        print("hello")
    out.data()     # b'hello\\n'
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

from rayline.engine import output_pumps
from rayline.store.task_logs import CUT_LINE

log = logging.getLogger("rayline.task_output")

DEFAULT_LIMIT = 1024 * 1024
FLUSH_INTERVAL_S = 1.0

_ACTIVE: ContextVar[CapturedOutput | None] = ContextVar("rayline_task_output", default=None)
_OPEN: list[CapturedOutput] = []  # captures open in this process (for writes from other threads)
_INSTALL_LOCK = threading.Lock()


def log_limit() -> int:
    """The per-attempt cap in bytes: ``RAYLINE_TASK_LOG_LIMIT`` (default 1 MiB; at least 1 KiB)."""
    raw = os.environ.get("RAYLINE_TASK_LOG_LIMIT", "")
    try:
        return max(int(raw), 1024) if raw.strip() else DEFAULT_LIMIT
    except ValueError:
        return DEFAULT_LIMIT


class CapturedOutput:
    """The text one attempt printed, capped at ``limit`` bytes (head and tail kept)."""

    def __init__(self, limit: int = DEFAULT_LIMIT, *, owns_process: bool = False) -> None:
        self.limit = max(int(limit), 2)
        self.owns_process = owns_process
        self.fd_level = False  # its file descriptors 1 and 2 feed it: Python writes arrive there
        self._settle: Callable[[], None] | None = None  # waits until written output is in here
        self._head = bytearray()
        self._tail = bytearray()
        self._cut = 0
        self._version = 0
        self._lock = threading.Lock()

    def add(self, text: str) -> None:
        """Keep ``text`` (as UTF-8); past the cap, only the newest bytes of the tail stay."""
        self.add_bytes(text.encode("utf-8", errors="replace"))

    def add_note(self, text: str) -> None:
        """Append ``text`` after everything written so far (not shown on the console): how the
        attempt ended, e.g. its traceback."""
        if self._settle is not None:
            self._settle()
        self.add(text)

    def add_bytes(self, data: bytes) -> None:
        """Keep ``data`` as written (the cap applies as for ``add``)."""
        half = self.limit // 2
        with self._lock:
            self._version += 1
            room = half - len(self._head)
            if room > 0:
                self._head += data[:room]
                data = data[room:]
            if not data:
                return
            self._tail += data
            over = len(self._tail) - (self.limit - half)
            if over > 0:
                del self._tail[:over]
                self._cut += over

    @property
    def version(self) -> int:
        """A number that changes with every write (the flusher writes only when it changed)."""
        return self._version

    def data(self) -> bytes:
        """The log as stored: head, then (if anything was cut) a line saying so, then tail."""
        with self._lock:
            if not self._cut:
                return bytes(self._head + self._tail)
            note = CUT_LINE.format(cut=self._cut, limit=self.limit).encode()
            return bytes(self._head) + note + bytes(self._tail)


class _Router:
    """Stands in for ``sys.stdout``/``sys.stderr``: writes go to the real stream and to the
    capture of the attempt that made them. Everything else is the real stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        out = _ACTIVE.get()
        if out is None and len(_OPEN) == 1 and _OPEN[0].owns_process:
            out = _OPEN[0]
        if out is not None and text and not (out.fd_level and self._writes_to_fd()):
            out.add(text)
        return self._stream.write(text)

    def _writes_to_fd(self) -> bool:
        """Whether the real stream writes to descriptor 1 or 2 (so a descriptor tee sees it)."""
        try:
            return self._stream.fileno() in (1, 2)
        except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
            return False

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _install() -> None:
    """Route ``sys.stdout``/``sys.stderr`` through ``_Router`` (once per process; again if
    something replaced them since)."""
    with _INSTALL_LOCK:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, _Router):
                setattr(sys, name, _Router(stream))


@contextmanager
def capture(
    sink: Callable[[bytes, bool], None] | None,
    limit: int = DEFAULT_LIMIT,
    *,
    owns_process: bool = False,
    fd_level: bool = False,
    interval: float = FLUSH_INTERVAL_S,
) -> Iterator[CapturedOutput]:
    """Capture this attempt's output; hand it to ``sink(data, final)`` as it grows and at the end.

    ``owns_process``: nothing else runs in this process meanwhile (a Ray worker), so writes from
    threads the task started belong to it. ``fd_level`` (only with ``owns_process``): capture
    file descriptors 1 and 2 as well (subprocesses, C code). A failing ``sink`` is logged, never
    raised.
    """
    out = CapturedOutput(limit, owns_process=owns_process)
    _install()
    token = _ACTIVE.set(out)
    _OPEN.append(out)
    tees = output_pumps.fd_tees() if fd_level and owns_process and len(_OPEN) == 1 else None
    if tees is not None:
        _flush_streams()
        tees.sync()  # what was written before (e.g. Ray's ":task_name:" line) is not this attempt's
        tees.own(out)
        out.fd_level = True
        out._settle = lambda: (_flush_streams(), tees.sync())
    periodic = _Periodic(out, sink) if sink is not None else None
    if periodic is not None:
        output_pumps.flusher().add(out, periodic, interval)
    try:
        yield out
    finally:
        _flush_streams()
        if tees is not None:
            tees.sync()  # everything written so far is in ``out``
            tees.own(None)
            out.fd_level = False
            out._settle = None
        _ACTIVE.reset(token)
        _OPEN.remove(out)
        if periodic is not None:
            output_pumps.flusher().remove(out)
            periodic.final()


class _Periodic:
    """Hands a capture's text to its sink when it changed; after ``final`` never again (so a
    late periodic write cannot replace the final log)."""

    def __init__(self, out: CapturedOutput, sink: Callable[[bytes, bool], None]) -> None:
        self.out, self.sink = out, sink
        self.seen = 0
        self.done = False
        self.lock = threading.Lock()

    def __call__(self, _out: Any = None) -> None:
        with self.lock:
            version = self.out.version
            if self.done or version == self.seen:
                return
            self.seen = version
            if self.out.fd_level:
                _flush_streams()  # Python's buffered text into the pipes
            _deliver(self.sink, self.out.data(), False)

    def final(self) -> None:
        with self.lock:
            self.done = True
            if self.out.version:
                _deliver(self.sink, self.out.data(), True)


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


def _deliver(sink: Callable[[bytes, bool], None], data: bytes, final: bool) -> None:
    try:
        sink(data, final)
    except Exception as exc:  # a log that cannot be written never fails the task
        log.warning("could not write the task's log: %s", exc)
