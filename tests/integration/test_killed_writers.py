"""Hole 3 of issue 12: a writer killed mid-write leaves no temporary file behind for long.

A real subprocess writes a 64 MB output through the artifact store; its ``os.write`` is wrapped
so that, 8 MiB in, it drops a ``writing`` marker and waits for ``go`` (files, not sleeps,
coordinate it with the test). ``kill -9`` then leaves its temp file; the next open of the store
removes it, because the file names its writer and that writer is gone. A live writer's temp file
is kept, and its write completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from rayline.store.artifacts import ArtifactStore
from tests.coordination import pid_alive, read_pid, wait_for

ROOT = Path(__file__).resolve().parents[2]
WRITER = """
import os, sys, time
from pathlib import Path
import numpy as np
from rayline.store.artifacts import ArtifactStore

home, signals = sys.argv[1], Path(sys.argv[2])
store = ArtifactStore.open(home)
value = np.random.default_rng(int(sys.argv[3])).random(8 * 1024 * 1024)  # 64 MB
real_write, chunks = os.write, [0]

def write(fd, data):
    n = real_write(fd, data[: 1 << 20])
    chunks[0] += 1
    if chunks[0] == 8:
        (signals / "writing").write_text(str(os.getpid()))
        while not (signals / "go").exists():
            time.sleep(0.01)
    return n

os.write = write
(signals / "done").write_text(store.put(value).digest)
"""


def start_writer(home: Path, signals: Path, seed: int) -> subprocess.Popen:
    signals.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(home), str(signals), str(seed)], env=env)
    wait_for(lambda: read_pid(signals / "writing") or proc.poll() is not None, 60, "the writer to be mid-write")
    assert proc.poll() is None, f"the writer exited with {proc.returncode} before writing"
    return proc


def temp_files(home: Path) -> list[Path]:
    """Every temp file anywhere in the artifact store."""
    return sorted(p for p in (home / "artifacts").rglob(".*.tmp") if p.is_file())


def test_a_killed_writers_temp_file_is_removed_when_the_store_is_opened(tmp_path):
    home = tmp_path / "home"
    proc = start_writer(home, tmp_path / "killed", seed=1)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
    assert not pid_alive(proc.pid)
    [left] = temp_files(home)
    assert str(proc.pid) in left.name and left.stat().st_size >= 8 << 20  # the partial output

    ArtifactStore.open(home)
    assert temp_files(home) == []


def test_a_live_writers_temp_file_is_kept_and_its_write_completes(tmp_path):
    home = tmp_path / "home"
    signals = tmp_path / "live"
    proc = start_writer(home, signals, seed=2)
    try:
        [partial] = temp_files(home)
        store = ArtifactStore.open(home)
        assert temp_files(home) == [partial]
        assert store.sweep_temp_files(lease_ttl=0.0) == []  # its pid runs on this machine
        (signals / "go").touch()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    digest = (signals / "done").read_text()
    assert store.verify(digest) and temp_files(home) == []
