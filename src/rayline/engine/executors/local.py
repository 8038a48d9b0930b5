"""In-process executor for unit tests and debugging: a debugger can step into the user's code.

``submit`` only records the node; ``wait`` runs the first submitted node that has not run yet
(its upstream nodes ran before it, since submissions arrive in topological order) and returns
it at once. So the runner records each node's outcome before the next one starts, exactly as with
Ray: a driver killed mid-run loses only the node it was running, and ``resume`` adopts the rest.
"""

from __future__ import annotations

from typing import Any

from rayline.engine.compiler import PlannedNode
from rayline.engine.worker import NodeCall, Stored, TaskStatic, execute_node


class LocalHandle:
    """One node, submitted (``ran`` False) or finished (``value`` and ``meta`` set)."""

    __slots__ = ("node_id", "static", "call", "inputs", "ran", "value", "meta")

    def __init__(self, node_id: str, static: TaskStatic, call: NodeCall, inputs: list[Any]):
        self.node_id = node_id
        self.static, self.call, self.inputs = static, call, inputs
        self.ran = False
        self.value: Any = None
        self.meta: dict[str, Any] = {}

    def run(self) -> None:
        """Run the node (its upstream handles first, should any not have run)."""
        for i in self.inputs:
            if isinstance(i, LocalHandle) and not i.ran:
                i.run()
        values = [i if isinstance(i, Stored) else i.value for i in self.inputs]
        metas = []
        if self.call.cache_base is not None:
            metas = [{"status": "SUCCEEDED", "digest": i.digest} if isinstance(i, Stored) else i.meta
                     for i in self.inputs]  # fmt: skip
        self.value, self.meta = execute_node(self.static, self.call, *values, *metas)
        self.ran = True
        self.static = self.call = self.inputs = None  # type: ignore[assignment]


class LocalExecutor:
    name = "local"
    sequential = True

    def start(self) -> None:
        pass

    def prepare(self, nodes: list[PlannedNode]) -> None:
        pass

    def finish(self) -> None:
        pass

    def cluster_nodes(self) -> list[dict[str, float]] | None:
        return None

    def submit(self, node: PlannedNode, static: TaskStatic, call: NodeCall, inputs: list[Any]) -> LocalHandle:
        return LocalHandle(node.id, static, call, inputs)

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        done = [h for h in handles if h.ran]
        if done:
            return done
        for h in handles:
            h.run()
            return [h]
        return []

    def metas(self, handles: list[Any]) -> list[dict[str, Any]]:
        return [h.meta for h in handles]

    def cancel(self, handles: list[Any], *, force: bool = False) -> None:
        pass

    def release(self, handles: list[Any]) -> None:
        for h in handles:
            h.value = None

    def lost(self) -> str | None:
        return None
