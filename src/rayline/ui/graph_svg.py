"""The run's graph as positioned boxes for an SVG: the boxes ``rayline graph`` draws.

The graph comes from the plan stored with the run (node ids, tasks, upstream inputs), so the UI
never imports the user's flow file. ``rayline.display.render.boxes`` decides the boxes (fan-outs
of big graphs collapsed, each box's state and colours); this module only places them: one row
per depth, boxes spread along it.

Example::

    drawing = layout(plan_nodes(plan_json), {"load": "SUCCEEDED", "train": "RUNNING"})
    drawing.width, [(b.label, b.x, b.y, b.fill) for b in drawing.boxes]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rayline.display.render import boxes, state_colours
from rayline.sdk.graph import NodeIndex

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 168, 44, 24, 40, 12


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str


@dataclass(frozen=True, slots=True)
class PlanNode:
    """A node as the stored plan records it: the shape ``render.boxes`` reads of a ``Node``."""

    id: str
    spec: _Spec
    upstream: tuple[str, ...]


class PlanGraph(NodeIndex[PlanNode]):
    """The nodes of a stored plan, readable by ``render.boxes`` like a ``Graph``."""

    def __init__(self, nodes: Sequence[PlanNode]) -> None:
        self.nodes = tuple(nodes)
        self._index = {n.id: n for n in self.nodes}

    def __iter__(self) -> Iterator[PlanNode]:
        return iter(self.nodes)


def plan_nodes(plan: dict[str, Any] | None, task_ids: Sequence[str] = ()) -> PlanGraph:
    """The graph of a stored plan (``Plan.to_json``); without one, the run's tasks unconnected."""
    if not plan or not plan.get("nodes"):
        return PlanGraph([PlanNode(t, _Spec(t), ()) for t in task_ids])
    out = []
    for n in plan["nodes"]:
        task = str(n.get("task") or n["id"]).rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        out.append(PlanNode(n["id"], _Spec(task), tuple(n.get("inputs") or ())))
    return PlanGraph(out)


@dataclass(frozen=True, slots=True)
class PlacedBox:
    """One box with its place in the drawing, its colours and (for a node) its node id."""

    key: str
    label: str
    task: str
    node_id: str | None  # None for a collapsed fan-out
    state: str | None
    fill: str
    stroke: str
    x: int
    y: int
    counts: str


@dataclass(frozen=True, slots=True)
class Drawing:
    """Boxes and edges (x1, y1, x2, y2) of an SVG ``width`` × ``height``."""

    boxes: tuple[PlacedBox, ...]
    edges: tuple[tuple[int, int, int, int], ...]
    width: int
    height: int
    box_w: int = BOX_W
    box_h: int = BOX_H


def layout(graph: PlanGraph, states: dict[str, Any] | None = None) -> Drawing:
    """Place the boxes of ``graph`` (coloured by ``states``) one row per depth."""
    drawn = boxes(graph, states)  # type: ignore[arg-type]
    rows: dict[int, list[Any]] = {}
    for b in drawn:
        rows.setdefault(b.level, []).append(b)
    widest = max((len(r) for r in rows.values()), default=1)
    width = MARGIN * 2 + widest * BOX_W + (widest - 1) * GAP_X
    placed: dict[str, PlacedBox] = {}
    for level, row in sorted(rows.items()):
        row_w = len(row) * BOX_W + (len(row) - 1) * GAP_X
        x0 = (width - row_w) // 2
        for i, b in enumerate(row):
            fill, stroke = state_colours(b.state)
            counts = ", ".join(f"{c} {s.lower()}" for s, c in b.counts) if b.collapsed else ""
            placed[b.key] = PlacedBox(
                key=b.key, label=b.label, task=b.task, node_id=None if b.collapsed else b.members[0],
                state=b.state, fill=fill, stroke=stroke, x=x0 + i * (BOX_W + GAP_X),
                y=MARGIN + level * (BOX_H + GAP_Y), counts=counts,
            )  # fmt: skip
    edges = []
    for b in drawn:
        for u in b.upstream:
            up, down = placed[u], placed[b.key]
            edges.append((up.x + BOX_W // 2, up.y + BOX_H, down.x + BOX_W // 2, down.y))
    height = MARGIN * 2 + (max(rows, default=0) + 1) * (BOX_H + GAP_Y) - GAP_Y
    return Drawing(tuple(placed.values()), tuple(edges), width, height)
