"""A ``Graph`` as text for a terminal, as Mermaid, and as Graphviz DOT. Pure string code.

Each renderer takes optional ``states`` (node id -> state name such as ``"SUCCEEDED"``) and
shows them: in brackets in text, as colours in Mermaid and DOT. Graphs of more than
``COLLAPSE_OVER`` nodes are drawn with fan-outs collapsed: the nodes that call the same task from
the same upstream boxes become one box, ``square ×1000``, so that diagrams stay readable.

Example::

    print(to_text(graph, states={"load": "SUCCEEDED", "train": "RUNNING"}))
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from rayline.sdk.graph import Graph, Ref, iter_refs

COLLAPSE_OVER = 200

# state -> (fill, stroke); shared with rayline.display.notebook.
STATE_COLOURS: dict[str, tuple[str, str]] = {
    "PENDING": ("#f1f3f5", "#adb5bd"),
    "RUNNING": ("#cfe2ff", "#0d6efd"),
    "SUCCEEDED": ("#d1e7dd", "#198754"),
    "CACHED": ("#d2f4ea", "#20c997"),
    "FAILED": ("#f8d7da", "#dc3545"),
    "UPSTREAM_FAILED": ("#ffe5d0", "#fd7e14"),
    "CANCELLED": ("#fff3cd", "#ffc107"),
    "INTERRUPTED": ("#fff3cd", "#ffc107"),
    "SKIPPED": ("#e9ecef", "#6c757d"),
}
NO_STATE_COLOURS = ("#ffffff", "#495057")
# A collapsed box shows the most urgent state among its members.
_URGENCY = (
    "FAILED",
    "UPSTREAM_FAILED",
    "INTERRUPTED",
    "CANCELLED",
    "RUNNING",
    "PENDING",
    "SKIPPED",
    "CACHED",
    "SUCCEEDED",
)


def state_name(state: Any) -> str:
    """``"SUCCEEDED"`` for ``"succeeded"``, ``TaskStatus.SUCCEEDED`` and the like."""
    return str(getattr(state, "value", state)).upper()


def state_colours(state: Any) -> tuple[str, str]:
    """(fill, stroke) colours for a state; white for none or an unknown one."""
    if state is None:
        return NO_STATE_COLOURS
    return STATE_COLOURS.get(state_name(state), NO_STATE_COLOURS)


@dataclass(frozen=True, slots=True)
class Box:
    """One box of a drawing: a node, or a collapsed fan-out of nodes of the same task."""

    key: str  # a safe identifier for Mermaid and DOT
    label: str  # the node id, or "task ×N"
    task: str
    members: tuple[str, ...]
    upstream: tuple[str, ...]  # keys of upstream boxes
    level: int  # longest path from a root
    state: str | None = None
    counts: tuple[tuple[str, int], ...] = ()  # state -> how many members (collapsed boxes)

    @property
    def collapsed(self) -> bool:
        return len(self.members) > 1


def levels(graph: Graph) -> dict[str, int]:
    """Each node's depth: 0 for nodes without upstream, else 1 + the deepest upstream."""
    out: dict[str, int] = {}
    pending = list(graph.nodes)
    while pending:
        rest = []
        for n in pending:
            ups = [u for u in n.upstream if u in graph]
            if all(u in out for u in ups):
                out[n.id] = 1 + max((out[u] for u in ups), default=-1)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # a cycle (not a valid graph): put what is left last
            top = max(out.values(), default=-1) + 1
            out.update((n.id, top) for n in rest)
            break
        pending = rest
    return out


def boxes(
    graph: Graph, states: dict[str, Any] | None = None, collapse_over: int = COLLAPSE_OVER
) -> list[Box]:
    """The boxes to draw, in graph order; fan-outs are collapsed past ``collapse_over`` nodes."""
    states = states or {}
    depth = levels(graph)
    collapse = len(graph) > collapse_over
    group_of: dict[str, int] = {}
    groups: dict[tuple[Any, ...], int] = {}
    members: list[list[str]] = []
    for n in graph.nodes:
        ups = frozenset(group_of[u] for u in n.upstream if u in group_of)
        key: tuple[Any, ...] = (n.spec.name, ups) if collapse else (n.id,)
        if key not in groups:
            groups[key] = len(members)
            members.append([])
        group_of[n.id] = groups[key]
        members[groups[key]].append(n.id)
    keys = _unique_keys(
        [m[0] if len(m) == 1 else f"{graph.node(m[0]).spec.name}_x{len(m)}" for m in members]
    )
    out = []
    for i, ids in enumerate(members):
        first = graph.node(ids[0])
        ups = dict.fromkeys(
            keys[group_of[u]] for nid in ids for u in graph.node(nid).upstream if u in group_of
        )
        # In a collapsed box, members without a state yet are counted as pending.
        counts = Counter(
            state_name(states[nid]) if nid in states else "PENDING"
            for nid in ids
            if nid in states or (states and len(ids) > 1)
        )
        state = next((s for s in _URGENCY if counts.get(s)), None) or next(iter(counts), None)
        label = ids[0] if len(ids) == 1 else f"{first.spec.name} ×{len(ids)}"
        out.append(
            Box(
                keys[i],
                label,
                first.spec.name,
                tuple(ids),
                tuple(ups),
                min(depth[nid] for nid in ids),
                state,
                tuple(sorted(counts.items())),
            )
        )
    return out


def to_text(graph: Graph, states: dict[str, Any] | None = None) -> str:
    """An indented listing for a terminal: one line per node, indented by depth, with its task,
    its upstream nodes and (if given) its state.

    Example output::

        hello: 3 nodes
        params: n = 3
          load  [make_numbers]  (SUCCEEDED)
            square  [square]  <- load  (RUNNING)
              total  [total]  <- square
        outputs: total
    """
    states = states or {}
    depth = levels(graph)
    lines = [f"{graph.name}: {len(graph)} node{'s' if len(graph) != 1 else ''}"]
    if graph.params:
        lines.append("params: " + ", ".join(_param_text(p) for p in graph.params))
    for n in graph.nodes:
        text = "  " * (depth[n.id] + 1) + n.id
        if n.spec.name != n.id:
            text += f"  [{n.spec.name}]"
        if n.upstream:
            shown = list(n.upstream[:5])
            more = f", … +{len(n.upstream) - 5} more" if len(n.upstream) > 5 else ""
            text += "  <- " + ", ".join(shown) + more
        if n.id in states:
            text += f"  ({state_name(states[n.id])})"
        lines.append(text)
    outs = [r.node for r in iter_refs(graph.outputs) if isinstance(r, Ref)]
    if outs:
        lines.append("outputs: " + ", ".join(outs))
    if states:
        tally = Counter(state_name(states[n.id]) for n in graph.nodes if n.id in states)
        lines.append("states: " + ", ".join(f"{c} {s}" for s, c in sorted(tally.items())))
    return "\n".join(lines)


def to_mermaid(graph: Graph, states: dict[str, Any] | None = None) -> str:
    """A Mermaid ``flowchart TD``; states become ``classDef`` colours."""
    lines = ["flowchart TD"]
    drawn = boxes(graph, states)
    by_state: dict[str, list[str]] = {}
    for b in drawn:
        label = _mermaid_text(b.label)
        if not b.collapsed and b.task != b.label:
            label += "<br/>" + _mermaid_text(b.task)
        if b.collapsed and b.counts:
            label += "<br/>" + _mermaid_text(_counts_text(b.counts))
        lines.append(f'  {b.key}["{label}"]')
        if b.state is not None:
            by_state.setdefault(b.state, []).append(b.key)
    for b in drawn:
        lines += [f"  {u} --> {b.key}" for u in b.upstream]
    for state, keys in by_state.items():
        fill, stroke = state_colours(state)
        cls = "st_" + _safe_id(state.lower())
        lines.append(f"  classDef {cls} fill:{fill},stroke:{stroke},color:#212529")
        lines.append(f"  class {','.join(keys)} {cls}")
    return "\n".join(lines)


def to_dot(graph: Graph, states: dict[str, Any] | None = None) -> str:
    """Graphviz DOT (``dot -Tsvg``); states become fill colours."""
    lines = [
        f"digraph {_dot_str(graph.name)} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica"];',
    ]
    drawn = boxes(graph, states)
    for b in drawn:
        label = b.label
        if not b.collapsed and b.task != b.label:
            label += "\n" + b.task
        if b.collapsed and b.counts:
            label += "\n" + _counts_text(b.counts)
        attrs = f"label={_dot_str(label)}"
        if b.state is not None:
            fill, stroke = state_colours(b.state)
            attrs += f', fillcolor="{fill}", color="{stroke}", tooltip={_dot_str(b.state)}'
        lines.append(f"  {b.key} [{attrs}];")
    for b in drawn:
        lines += [f"  {u} -> {b.key};" for u in b.upstream]
    lines.append("}")
    return "\n".join(lines)


def _param_text(p: Any) -> str:
    typ = getattr(p.annotation, "__name__", None) if p.annotation is not None else None
    text = p.name + (f": {typ}" if typ else "")
    return text + (" (required)" if p.required else f" = {p.default!r}")


def _counts_text(counts: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{c} {s.lower()}" for s, c in counts)


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _unique_keys(names: list[str]) -> list[str]:
    # "n_" keeps keys clear of Mermaid's keywords (end, graph, ...) and of leading digits.
    seen: set[str] = set()
    out = []
    for name in names:
        key = base = "n_" + _safe_id(name)
        i = 2
        while key in seen:
            key, i = f"{base}_{i}", i + 1
        seen.add(key)
        out.append(key)
    return out


def _mermaid_text(text: str) -> str:
    for ch, code in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(ch, code)
    return text


def _dot_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
