"""In-process executor for unit tests and debugging: runs each node when it is submitted
(submissions arrive in topological order), so a debugger can step into the user's code."""

from __future__ import annotations

from typing import Any

from rayline.engine.compiler import PlannedNode
from rayline.engine.worker import NodeCall, Stored, TaskStatic, execute_node


class _Done:
    __slots__ = ("node_id", "value", "meta")

    def __init__(self, node_id: str, value: Any, meta: dict[str, Any]):
        self.node_id = node_id
        self.value = value
        self.meta = meta


class LocalExecutor:
    name = "local"

    def start(self) -> None:
        pass

    def prepare(self, nodes: list[PlannedNode]) -> None:
        pass

    def finish(self) -> None:
        pass

    def cluster_nodes(self) -> list[dict[str, float]] | None:
        return None

    def submit(self, node: PlannedNode, static: TaskStatic, call: NodeCall, inputs: list[Any]) -> _Done:
        values = [i if isinstance(i, Stored) else i.value for i in inputs]
        metas = []
        if call.cache_base is not None:
            metas = [{"status": "SUCCEEDED", "digest": i.digest} if isinstance(i, Stored) else i.meta for i in inputs]
        value, meta = execute_node(static, call, *values, *metas)
        return _Done(node.id, value, meta)

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        return list(handles)

    def metas(self, handles: list[_Done]) -> list[dict[str, Any]]:
        return [h.meta for h in handles]

    def cancel(self, handles: list[Any], *, force: bool = False) -> None:
        pass

    def release(self, handles: list[Any]) -> None:
        pass
