"""A Ray cluster of two nodes on this machine that share no disk, for the multi-node tests.

- the **head**: ``ray start --head --block`` on 127.0.0.1 with token authentication (a token
  file of its own; the driver is given it through ``RAY_AUTH_TOKEN_PATH``), in the host's mount
  namespace, where the driver runs too;
- a **worker node**: ``ray start --address … --block`` with the custom resource ``worker_node``
  (a task pinned there asks for ``resources={"worker_node": 1}``), started by ``unshare -m
  --propagation private`` in a mount namespace of its own, where a fresh tmpfs covers the whole
  ``workdir``: everything the driver writes there (its ``RAYLINE_HOME``, artifact folders, the
  head's Ray session) is invisible to it, as on a second machine. Only ``workdir/shared`` is put
  back (a bind mount of the driver's folder), to stand for a disk every node mounts.

Each node is a process group of its own (``start_new_session``), stopped by that group (SIGTERM,
then SIGKILL), never by name; the worker's mounts go with its namespace. Every wait has a
deadline: Ray starts slowly on a loaded 2-core machine, so the waits are long and poll for what
they need (the node count in the GCS) rather than sleep.

Example::

    with NodeCluster.start(Path(tempfile.mkdtemp(prefix="rl-mn-", dir="/tmp"))) as cluster:
        done = cluster.rayline("run", "flow.py", "--address", cluster.address, home=cluster.shared / "home")
        os.killpg(cluster.worker_pgid, signal.SIGKILL)   # lose the worker node
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.coordination import wait_for

__all__ = ["NodeCluster", "NodeStartFailed", "free_port", "new_workdir", "stop_group"]

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
#: Ray and rayline settings a user's shell may carry; the cluster and its drivers start from none.
_CLEARED = ("RAY_ADDRESS", "RAYLINE_RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAYLINE_HOME", "RAYLINE_DB_URL", "RAYLINE_ARTIFACTS_URL")  # fmt: skip
#: A loaded 2-core machine starts Ray's agents slowly; Ray's own 30 s waits are too short.
_SLOW_START = {"RAY_agent_register_timeout_ms": "180000", "RAY_raylet_start_wait_time_s": "180",
               "PYTHONUNBUFFERED": "1"}  # fmt: skip
START_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _own_ports() -> list[str]:
    """Free ports for the listeners ``ray start`` would put on fixed defaults (another Ray on the
    machine, or the other node, may hold them)."""
    names = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port")  # fmt: skip
    return [f"--{name}={free_port()}" for name in names]


def stop_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the process group ``proc`` leads, then SIGKILL what is left of it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


# The worker node's mount namespace: keep ``shared`` (bound aside first), cover the workdir with
# a tmpfs, put ``shared`` back, then become the node.
_WORKER_SCRIPT = """set -e
mount --bind "$RL_WORKDIR/shared" "$RL_STAGE"
mount -t tmpfs -o mode=0700 rl-worker-node "$RL_WORKDIR"
mkdir -p "$RL_WORKDIR/shared"
mount --move "$RL_STAGE" "$RL_WORKDIR/shared"
exec "$@"
"""


class NodeCluster:
    """The two nodes; ``address`` for ``--address``/``RAY_ADDRESS``, ``env``/``rayline`` for a
    driver with the right settings, ``head_pgid``/``worker_pgid`` to kill a node."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.shared = workdir / "shared"
        self.shared.mkdir(parents=True, exist_ok=True)
        self.stage = Path(f"{workdir}.stage")
        self.stage.mkdir(exist_ok=True)
        self.token = workdir / "ray-token"
        self.token.write_text(secrets.token_hex(32))
        self.token.chmod(0o600)
        self.port = free_port()
        # The worker node's Ray session (logs, sockets) is outside the covered workdir, so that a
        # test can read its logs; nothing of the driver's is there.
        self.worker_ray = Path(f"{workdir}.worker-ray")
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    @classmethod
    def start(cls, workdir: Path, attempts: int = 5) -> NodeCluster:
        """Start both nodes; a node whose raylet dies while starting (on a loaded machine Ray's
        dashboard agent can take longer than the raylet waits for it) is started again, up to
        ``attempts`` times."""
        cluster = cls(workdir)
        try:
            for start in (cluster._start_head, cluster._start_worker):
                for attempt in range(1, attempts + 1):
                    try:
                        start()
                        break
                    except NodeStartFailed:
                        if attempt == attempts:
                            raise
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def head_pgid(self) -> int:
        assert self.head is not None
        return self.head.pid

    @property
    def worker_pgid(self) -> int:
        assert self.worker is not None
        return self.worker.pid

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        """A driver's environment: this cluster's token, ``RAYLINE_HOME=home``, this checkout's
        rayline on ``PYTHONPATH``; ``extra`` on top (``RAYLINE_ARTIFACTS_URL=…``)."""
        env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token), RAYLINE_HOME=str(home),
                   PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]), **extra)  # fmt: skip
        return env

    def rayline(self, *args: str, home: Path, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
        """Run the ``rayline`` CLI as a driver of this cluster (``RAY_ADDRESS`` set) and wait."""
        env = self.env(home, RAY_ADDRESS=self.address, **extra)
        return subprocess.run([str(BIN / "rayline"), *args], env=env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip

    def alive_nodes(self) -> int:
        """How many alive nodes the head's GCS knows (the "Active:" nodes of ``ray status``,
        which needs no dashboard), -1 if it cannot say."""
        done = subprocess.run([str(BIN / "ray"), "status", f"--address={self.address}"], env=self._node_env(),
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        if done.returncode != 0 or "Active:" not in done.stdout:
            return -1
        active = done.stdout.split("Active:", 1)[1].split("Pending:", 1)[0]
        return sum(1 for line in active.splitlines() if line.strip().startswith("1 node_"))

    def stop(self) -> None:
        for proc in (self.worker, self.head):
            if proc is not None:
                stop_group(proc)
        self.worker = self.head = None
        subprocess.run(["rm", "-rf", str(self.workdir), str(self.stage), str(self.worker_ray), f"{self.workdir}.head.log",
                        f"{self.workdir}.worker.log"], check=False, timeout=120)  # fmt: skip

    def __enter__(self) -> NodeCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ nodes

    def _node_env(self) -> dict[str, str]:
        # Not rayline's single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0): Ray refuses a
        # second node there. Both nodes are on 127.0.0.1 by --node-ip-address instead.
        return self.env(self.workdir / "head-home", **_SLOW_START)

    def _popen(self, command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        with log.open("w") as sink:
            return subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip

    def _start_head(self) -> None:
        log = Path(f"{self.workdir}.head.log")
        self.head = self._popen(
            [str(BIN / "ray"), "start", "--head", "--block", f"--port={self.port}", "--node-ip-address=127.0.0.1",
             "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats", *_own_ports(),
             f"--ray-client-server-port={free_port()}", f"--temp-dir={self.workdir / 'ray-head'}"],
            log, self._node_env())  # fmt: skip
        try:
            self._wait_started(self.head, log, self.workdir / "ray-head")
        except NodeStartFailed:
            stop_group(self.head, grace_s=5)
            self.head = None
            subprocess.run(["rm", "-rf", str(self.workdir / "ray-head")], check=False, timeout=60)
            raise

    def _start_worker(self) -> None:
        log = Path(f"{self.workdir}.worker.log")  # outside the workdir: the test reads it
        env = {**self._node_env(), "RL_WORKDIR": str(self.workdir), "RL_STAGE": str(self.stage),
               "RAY_AUTH_TOKEN": self.token.read_text().strip()}  # its token file is hidden there  # fmt: skip
        env.pop("RAY_AUTH_TOKEN_PATH")
        self.worker = self._popen(
            ["unshare", "-m", "--propagation", "private", "bash", "-c", _WORKER_SCRIPT, "rl-worker-node",
             str(BIN / "ray"), "start", f"--address={self.address}", "--block", "--node-ip-address=127.0.0.1",
             "--num-cpus=1", '--resources={"worker_node": 1}', "--disable-usage-stats", *_own_ports(),
             f"--temp-dir={self.worker_ray}"],
            log, env)  # fmt: skip
        try:
            self._wait_started(self.worker, log, self.worker_ray)
        except NodeStartFailed:
            stop_group(self.worker, grace_s=5)
            self.worker = None
            subprocess.run(["rm", "-rf", str(self.worker_ray)], check=False, timeout=60)
            raise
        wait_for(lambda: self.alive_nodes() == 2 or self.worker.poll() is not None, START_TIMEOUT_S,
                 "the head's GCS to count 2 alive nodes", interval=2.0)  # fmt: skip
        assert self.worker.poll() is None, log.read_text()[-3000:]

    @staticmethod
    def _wait_started(proc: subprocess.Popen, log: Path, temp_dir: Path) -> None:
        raylet_log = temp_dir / "session_latest" / "logs" / "raylet.out"

        def raylet_died() -> bool:
            try:
                return "Check failed" in raylet_log.read_text(errors="replace")
            except OSError:
                return False

        wait_for(lambda: "Ray runtime started" in log.read_text() or proc.poll() is not None or raylet_died(),
                 START_TIMEOUT_S, f"`ray start` to report the node started ({log})", interval=0.5)  # fmt: skip
        if raylet_died() or proc.poll() is not None:
            try:
                died = [ln[-400:] for ln in raylet_log.read_text(errors="replace").splitlines() if "Check failed" in ln]
            except OSError:
                died = []
            raise NodeStartFailed("\n".join([log.read_text()[-3000:], *died]))


class NodeStartFailed(AssertionError):
    """A ``ray start`` ended, or its raylet died, before the node started."""


def new_workdir() -> Path:
    """A fresh short folder under /tmp (Ray's socket paths must stay short)."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="rl-mn-", dir="/tmp"))


