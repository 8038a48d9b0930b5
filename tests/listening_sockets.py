"""The TCP sockets a process tree listens on, read from ``/proc`` (Linux): what ``ss -ltnp``
shows, without needing ``ss``. A test of what rayline's own Ray exposes lists the listeners of
the driver and every process below it (GCS, raylet, agents, workers)."""

from __future__ import annotations

import os
from pathlib import Path

LISTEN = "0A"  # TCP state in /proc/net/tcp


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it (by parent pid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(children.get(p, []))
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _address(hex_addr: str) -> str:
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = ".".join(str(b) for b in reversed(raw))
    else:  # IPv6: four little-endian 32-bit words
        words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
        ip6 = b"".join(words)
        if ip6[:12] == b"\0" * 10 + b"\xff\xff":
            ip = ".".join(str(b) for b in ip6[12:])  # an IPv4-mapped address
        else:
            import ipaddress

            ip = str(ipaddress.IPv6Address(ip6))
    return f"{ip}:{int(port, 16)}"


def listeners(pids: set[int]) -> list[tuple[int, str, str]]:
    """(pid, process name, local address) of every TCP socket in LISTEN state owned by ``pids``."""
    owner: dict[str, int] = {}
    for pid in pids:
        for inode in _socket_inodes(pid):
            owner[inode] = pid
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] != LISTEN or cols[9] not in owner:
                continue
            pid = owner[cols[9]]
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                name = "?"
            found.append((pid, name, _address(cols[1])))
    return sorted(found)


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0]
    return host.startswith("127.") or host == "::1"
