"""Before a run on a cluster of several nodes: can every node see the local artifact folder?

A task writes its outputs to the artifact store on whatever node runs it. When the store is a
folder on the driver's disk and another node does not share that disk, the run "succeeds" and
its outputs are scattered over the nodes' own disks, unreadable by the driver, a resume or
serving. So before the first run on a cluster of more than one alive node, rayline writes a
random marker file into the folder and runs one tiny task pinned to each node
(``NodeAffinitySchedulingStrategy``, ``soft=False``) that reads it back. A node that does not
find it (or finds other bytes) refuses the run: ``UsageError`` (exit 2) naming the node(s),
``RAYLINE_ARTIFACTS_URL`` and how to set it. An object-store URL needs no check (the session
calls this only for a local folder).

The answer is remembered in ``RAYLINE_HOME/cluster_checks.json``, per cluster (its GCS address
and session name) and folder, as the ids of the nodes that saw it: a later run probes only nodes
that joined since. A refusal is not remembered (the user may mount the folder and try again). A
node that does not answer within ``timeout_s`` is warned about, not refused, nor remembered.

Example::

    check_artifact_folder(Path("/home/me/.rayline/artifacts"), Path("/home/me/.rayline/cluster_checks.json"))
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CACHE_FILE", "RayNode", "check_artifact_folder", "refusal_message"]

log = logging.getLogger("rayline.launch")

#: Under ``RAYLINE_HOME``: the nodes known to see each (cluster, folder).
CACHE_FILE = "cluster_checks.json"
_MARKER_PREFIX = ".rayline-node-check-"


@dataclass(frozen=True, slots=True)
class RayNode:
    """One alive node of the cluster, as a message names it."""

    node_id: str
    address: str
    name: str = ""

    def __str__(self) -> str:
        shown = self.name if self.name and self.name != self.address else ""
        return f"{self.node_id[:12]} ({self.address}{', ' + shown if shown else ''})"


def check_artifact_folder(folder: Path, cache: Path, *, timeout_s: float = 120.0) -> None:
    """Refuse a run on a multi-node cluster whose nodes cannot all see ``folder``.

    Call it connected to Ray. Does nothing on a cluster of one alive node, or when every alive
    node is already recorded in ``cache`` as seeing ``folder`` on this cluster.

    Raises:
        UsageError: some node does not see ``folder`` (exit 2); the message names them and
            ``RAYLINE_ARTIFACTS_URL``.
    """
    import ray

    nodes = [RayNode(n["NodeID"], n.get("NodeManagerAddress", "?"), n.get("NodeName", ""))
             for n in ray.nodes() if n.get("Alive")]  # fmt: skip
    if len(nodes) <= 1:
        return
    context = ray.get_runtime_context()
    key = f"{context.gcs_address} {context.get_session_name()} {folder}"
    records = _read(cache)
    known = set(records.get(key, []))
    todo = [n for n in nodes if n.node_id not in known]
    if not todo:
        return
    log.info("checking that %d Ray node(s) see the artifact folder %s", len(todo), folder)
    seen, blind, silent = _probe(folder, todo, timeout_s)
    if seen:
        records = _read(cache)  # another driver may have written meanwhile
        records[key] = sorted(set(records.get(key, [])) | {n.node_id for n in seen})
        _write(cache, records)
    if silent:
        log.warning("Ray node(s) %s did not answer within %.0f s whether they see the artifact folder %s; "
                    "running anyway", ", ".join(map(str, silent)), timeout_s, folder)  # fmt: skip
    if blind:
        from rayline.errors import UsageError

        raise UsageError(refusal_message(folder, blind, len(nodes)))


def refusal_message(folder: Path, blind: list[RayNode], total: int) -> str:
    """What a user reads when ``blind`` nodes (of ``total``) cannot see the artifact ``folder``."""
    names = ", ".join(map(str, blind))
    return (f"the artifact store is the local folder {folder}, which {len(blind)} of the {total} "
            f"nodes of this Ray cluster cannot see (node {names}): the outputs of tasks that run "
            "there would be written to that node's own disk, where this driver, a resume and "
            "serving cannot read them. Set RAYLINE_ARTIFACTS_URL to storage that every node "
            "reaches: an object store (e.g. RAYLINE_ARTIFACTS_URL=s3://my-bucket/rayline, with "
            "the usual AWS_* credentials; gs:// and abfs:// work too) or a folder mounted on every "
            "node at the same path (e.g. RAYLINE_ARTIFACTS_URL=file:///mnt/shared/rayline).")  # fmt: skip


def _sees(path: str, expected: str) -> bool:
    """On one node: whether the marker at ``path`` is there with ``expected`` content."""
    try:
        with open(path, encoding="ascii") as f:
            return f.read() == expected
    except (OSError, UnicodeDecodeError):
        return False


def _probe(folder: Path, nodes: list[RayNode], timeout_s: float) -> tuple[list[RayNode], ...]:
    """Write a marker into ``folder``, ask every node for it: (seen, blind, silent)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    content = secrets.token_hex(16)
    marker = folder / f"{_MARKER_PREFIX}{content[:12]}"
    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    try:
        sees = ray.remote(num_cpus=0, max_retries=0)(_sees)
        refs = {sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False),
                             name="rayline-artifact-folder-check").remote(str(marker), content): n
                for n in nodes}  # fmt: skip
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        for ref in pending:
            ray.cancel(ref, force=True)
        answers = {refs[r]: _answer(r) for r in ready}
    finally:
        marker.unlink(missing_ok=True)
    seen = [n for n in nodes if answers.get(n) is True]
    blind = [n for n in nodes if answers.get(n) is False]
    silent = [n for n in nodes if n not in answers or answers[n] is None]
    return seen, blind, silent


def _answer(ref: Any) -> bool | None:
    import ray

    try:
        return bool(ray.get(ref, timeout=10))
    except ray.exceptions.RayError:  # the node died meanwhile: it will run nothing of ours
        return None


def _read(cache: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(cache: Path, records: dict[str, Any]) -> None:
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(records, f, indent=1)
    os.replace(tmp, cache)
