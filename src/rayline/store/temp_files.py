"""Temporary files that carry their writer's identity, and the rule that says a writer is gone.

Every atomic write first writes a temp file named ``.rl-<machine>-<pid>-<ms>-<random>.tmp``:

- ``machine``: 16 hex digits of sha256(hostname, boot id, pid namespace), so two containers that
  share a hostname but not a pid namespace, or one host before and after a reboot, differ;
- ``pid``: the writing process;
- ``ms``: when the write started (epoch milliseconds).

A writer is gone when its machine is this one and its pid is dead (or now belongs to a process
that started after the write did), or, written elsewhere, when its file has not changed for the
lease TTL (a live writer keeps touching it). A name in the older ``.<name>.<pid>.<hex>.tmp`` form
carries no machine and is judged by age alone.

Example::

    name = temp_name()                       # '.rl-3f2a…-4711-1765100000000-9c1e2d3f.tmp'
    writer_gone(parse_temp_name(name), mtime=time.time(), now=time.time(), ttl=30.0)  # False
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass

_NEW = re.compile(r"\.rl-(?P<machine>[0-9a-f]{16})-(?P<pid>\d{1,10})-(?P<ms>\d{1,16})-[0-9a-f]{8}\.tmp")
_ANY = re.compile(r"\..+\.tmp")
#: A process that started this much after the write began cannot be its writer (clock slack).
_START_SLACK_S = 1.0


@dataclass(frozen=True, slots=True)
class TempWriter:
    """Who wrote a temp file: ``machine`` (None for an old-style name), ``pid`` and ``started``
    (epoch seconds; None for an old-style name)."""

    machine: str | None
    pid: int | None
    started: float | None


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


@functools.cache
def machine_id() -> str:
    """This machine (host, boot, pid namespace) as 16 hex digits; the same for the whole process."""
    try:
        pid_ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pid_ns = ""
    raw = "\n".join([socket.gethostname(), _read("/proc/sys/kernel/random/boot_id"), pid_ns])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def temp_name() -> str:
    """A fresh temp file name carrying this process's identity and the time."""
    ms = int(time.time() * 1000)
    return f".rl-{machine_id()}-{os.getpid()}-{ms}-{secrets.token_hex(4)}.tmp"


def parse_temp_name(name: str) -> TempWriter | None:
    """The writer named in ``name``, or None if ``name`` is not a temp file's name."""
    m = _NEW.fullmatch(name)
    if m:
        return TempWriter(m["machine"], int(m["pid"]), int(m["ms"]) / 1000)
    if _ANY.fullmatch(name):
        return TempWriter(None, None, None)
    return None


def _process_started(pid: int) -> float | None:
    """When ``pid`` started (epoch seconds); None if it does not run (zombies included)."""
    import psutil  # lazy: only sweeps ask

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return 0.0  # it runs; we may not look closer


def writer_gone(writer: TempWriter, *, mtime: float, now: float, ttl: float) -> bool:
    """Whether the writer of a temp file is gone, so that the file can be removed.

    Same machine: its pid is dead, or belongs to a process that started after the write began.
    Elsewhere (or unknown): the file has not changed for ``ttl`` seconds.
    """
    if writer.machine == machine_id() and writer.pid is not None and writer.started is not None:
        if writer.pid == os.getpid():
            return False
        started = _process_started(writer.pid)
        return started is None or started > writer.started + _START_SLACK_S
    return now - mtime > ttl
