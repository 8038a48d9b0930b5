"""The executor seam the ``Runner`` is typed against: start the compute, submit a node, wait for
some to finish, read their metas, cancel, and say whether the compute is still there.

A ``Handle`` is whatever the executor returns from ``submit``; the runner reads only its
``node_id`` and otherwise passes it back: to ``wait``, ``metas``, ``cancel`` and ``release``, and
as an upstream input of later submissions. Two executors implement it: ``LocalExecutor`` (in this
process, one node per ``wait``) and ``RayExecutor`` (Ray tasks, or calls on warm actors from
``pool.py`` for small one-CPU nodes). ``tests/unit/test_executor_protocol.py`` checks that their
signatures match this protocol's.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from rayline.engine.compiler import PlannedNode
from rayline.engine.worker import NodeCall, TaskStatic


class Handle(Protocol):
    """One submitted node, as the executor tracks it."""

    node_id: str


@runtime_checkable
class Executor(Protocol):
    """What the ``Runner`` needs from the compute that runs a plan's nodes."""

    name: str
    #: True when nodes run one at a time inside ``wait`` (in this process), so a ready node may
    #: wait for its turn: the Runner's deadline backstop, for work running elsewhere, is off and
    #: only the per-attempt timeout inside ``execute_node`` applies.
    sequential: bool

    def start(self) -> None:
        """Connect to (or start) the compute; idempotent."""

    def cluster_nodes(self) -> list[dict[str, float]] | None:
        """Total resources per alive node, for compile-time feasibility checks (None: unknown)."""

    def prepare(self, nodes: list[PlannedNode]) -> None:
        """Called once before the nodes of a run are submitted."""

    def finish(self) -> None:
        """Called once when the run's loop ends, whatever the outcome."""

    def submit(self, node: PlannedNode, static: TaskStatic, call: NodeCall, inputs: list[Any]) -> Any:
        """Start one node (submissions arrive in topological order). ``inputs`` are upstream
        handles or ``Stored`` markers, in the order of ``node.inputs``."""

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        """The handles among ``handles`` whose node finished (possibly none after ``timeout``).
        The runner records what finished before it waits again, so each finished node is
        committed to the run store as soon as it is returned here."""

    def metas(self, handles: list[Any]) -> list[dict[str, Any]]:
        """The finished nodes' meta dicts, in order; infrastructure failures become FAILED metas."""

    def cancel(self, handles: list[Any], *, force: bool = False) -> None:
        """Stop these nodes (queued or running); Ray does not retry cancelled tasks."""

    def release(self, handles: list[Any]) -> None:
        """Forget these handles so their values can be freed."""

    def lost(self) -> str | None:
        """Why the compute is gone (e.g. the Ray cluster's head cannot be reached), or None while
        it is there. Called from the runner's heartbeat thread, so it must be quick and must not
        block on the compute itself."""
