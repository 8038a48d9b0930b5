"""The executor seam: submit a node, wait for some to finish, read their metas, cancel.

A ``Handle`` is whatever the executor returns from ``submit``; the runner treats it as opaque
and passes it back as an upstream input of later submissions.
"""

from __future__ import annotations

from typing import Any, Protocol

from rayline.engine.compiler import PlannedNode
from rayline.engine.worker import NodeCall


class Executor(Protocol):
    name: str

    def start(self) -> None:
        """Connect to (or start) the compute; idempotent."""

    def cluster_nodes(self) -> list[dict[str, float]] | None:
        """Total resources per alive node, for compile-time feasibility checks (None: unknown)."""

    def prepare(self, nodes: list[PlannedNode]) -> None:
        """Called once before the nodes of a run are submitted."""

    def finish(self) -> None:
        """Called once when the run's loop ends, whatever the outcome."""

    def submit(self, node: PlannedNode, call: NodeCall, inputs: list[Any]) -> Any:
        """Start one node. ``inputs`` are upstream handles or ``Stored`` markers, in order."""

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        """The handles among ``handles`` whose node finished (possibly none after ``timeout``)."""

    def meta(self, handle: Any) -> dict[str, Any]:
        """The finished node's meta dict; infrastructure failures become a FAILED meta."""

    def cancel(self, handles: list[Any], *, force: bool = False) -> None:
        """Stop these nodes (queued or running); Ray does not retry cancelled tasks."""

    def release(self, handles: list[Any]) -> None:
        """Forget these handles so their values can be freed."""
