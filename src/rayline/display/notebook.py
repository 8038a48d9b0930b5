"""Rich display of flows and runs in Jupyter: self-contained HTML (no JavaScript, no network).

``rayline.display.ipython`` registers ``graph_html`` for graphs and flows, so a graph shows itself at
the end of a cell; ``Run._repr_html_`` renders its ``RunView`` with ``run_html``. Errors are shown
whole. Every piece of user text (names, parameters, errors) goes through ``html.escape``.

Example::

    from rayline.display.notebook import graph_html, run_html
    from IPython.display import HTML
    HTML(run_html(read_run_view(store, run_id), graph))
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from html import escape
from typing import Any

from rayline.display.render import Box, boxes, state_colours, state_name
from rayline.display.run_view import RunView, TaskView
from rayline.sdk.graph import Graph

MAX_EDGES_LISTED = 500

_FONT = "font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; font-size: 13px;"
_CELL = "padding: 3px 8px; border-bottom: 1px solid #dee2e6; text-align: left; vertical-align: top;"


def graph_html(graph: Graph, states: dict[str, Any] | None = None) -> str:
    """The graph as HTML: a title with the flow name and node count, one row per depth level
    with a box per node (coloured by state, if ``states`` maps node ids to states), then the
    list of edges. Fan-outs of large graphs are collapsed as in ``rayline.display.render``."""
    drawn = boxes(graph, states)
    by_key = {b.key: b for b in drawn}
    n = len(graph)
    parts = [
        f'<div class="rayline-graph" style="{_FONT}">',
        f'<div style="font-weight: 600; margin-bottom: 4px;">flow <code>{_e(graph.name)}</code>'
        f" · {n} node{'s' if n != 1 else ''}</div>",
    ]
    if graph.params:
        params = ", ".join(
            f"<code>{_e(p.name)}</code>"
            + (" (required)" if p.required else f" = {_e(repr(p.default))}")
            for p in graph.params
        )
        parts.append(f'<div style="color: #495057; margin-bottom: 4px;">params: {params}</div>')
    parts.append('<table style="border-collapse: separate; border-spacing: 6px 6px;">')
    for level in sorted({b.level for b in drawn}):
        row = "".join(_box_html(b) for b in drawn if b.level == level)
        parts.append(
            f'<tr><th style="color: #868e96; font-weight: normal; text-align: right; '
            f'padding-right: 6px;">{level}</th><td>{row}</td></tr>'
        )
    parts.append("</table>")
    edges = [(by_key[u].label, b.label) for b in drawn for u in b.upstream]
    parts.append(_edges_html(edges))
    if states:
        parts.append(_legend_html(states))
    parts.append("</div>")
    return "\n".join(parts)


def run_html(view: RunView, graph: Graph | None = None) -> str:
    """A run as HTML: its status and times, a table of its tasks with their whole errors, and
    its graph coloured by state when ``graph`` is given."""
    tasks = view.tasks
    took = _seconds(view.duration_s)
    tally = Counter(t.status.value for t in tasks)
    parts = [
        f'<div class="rayline-run" style="{_FONT}">',
        f'<div style="font-weight: 600; margin-bottom: 4px;">run <code>{_e(view.run_id)}</code>'
        f" of flow <code>{_e(view.flow)}</code> {_badge(view.status)}</div>",
        f'<div style="color: #495057; margin-bottom: 6px;">started {_e(_time(view.created_at))}'
        f" · ended {_e(_time(view.ended_at))}" + (f" · took {_e(took)}" if took else "") + "</div>",
    ]
    if view.error:
        parts.append(f'<div style="margin-bottom: 6px;">{_pre(view.error)}</div>')
    if tally:
        parts.append(
            '<div style="margin-bottom: 6px;">'
            + " ".join(f"{_badge(s)} {c}" for s, c in sorted(tally.items()))
            + "</div>"
        )
    parts.append(_tasks_table(tasks))
    if graph is not None:
        parts.append(graph_html(graph, {t.node_id: t.status.value for t in tasks}))
    parts.append("</div>")
    return "\n".join(parts)


def _box_html(b: Box) -> str:
    fill, stroke = state_colours(b.state)
    sub = b.task if (not b.collapsed and b.task != b.label) else ""
    if b.collapsed and b.counts:
        sub = ", ".join(f"{c} {s.lower()}" for s, c in b.counts)
    tip = b.label + (f" — {b.state}" if b.state else "")
    if b.collapsed:
        tip += " — " + ", ".join(b.members[:20]) + (" …" if len(b.members) > 20 else "")
    return (
        f'<div title="{_e(tip)}" style="display: inline-block; margin: 2px 4px; padding: 4px 10px; '
        f'background: {fill}; border: 1.5px solid {stroke}; border-radius: 6px; color: #212529;">'
        f"<div><b>{_e(b.label)}</b></div>"
        + (f'<div style="font-size: 11px; color: #495057;">{_e(sub)}</div>' if sub else "")
        + (
            f'<div style="font-size: 11px;">{_e(b.state)}</div>'
            if b.state and not b.collapsed
            else ""
        )
        + "</div>"
    )


def _edges_html(edges: list[tuple[str, str]]) -> str:
    items = "".join(
        f"<li><code>{_e(a)}</code> → <code>{_e(b)}</code></li>" for a, b in edges[:MAX_EDGES_LISTED]
    )
    if len(edges) > MAX_EDGES_LISTED:
        items += f"<li>… and {len(edges) - MAX_EDGES_LISTED} more</li>"
    return (
        f"<details><summary>edges ({len(edges)})</summary>"
        f'<ul style="margin: 2px 0; columns: 3;">{items}</ul></details>'
    )


def _legend_html(states: dict[str, Any]) -> str:
    present = sorted({state_name(s) for s in states.values()})
    return '<div style="margin-top: 4px;">' + " ".join(_badge(s) for s in present) + "</div>"


def _tasks_table(tasks: tuple[TaskView, ...]) -> str:
    head = "".join(
        f'<th style="{_CELL}">{h}</th>' for h in ("task", "status", "attempts", "duration", "error")
    )
    rows = []
    for t in tasks:
        rows.append(
            f'<tr><td style="{_CELL}"><code>{_e(t.node_id)}</code></td>'
            f'<td style="{_CELL}">{_badge(t.status)}</td>'
            f'<td style="{_CELL}">{_e(t.attempts)}</td>'
            f'<td style="{_CELL}">{_e(_seconds(t.duration_s))}</td>'
            f'<td style="{_CELL}">{_pre(t.error_text) if t.error else ""}</td></tr>'
        )
    return (
        f'<table style="border-collapse: collapse; margin-bottom: 8px;"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _pre(text: str) -> str:
    """Every line of an error, scrollable when long."""
    return (
        f'<pre style="margin: 0; white-space: pre-wrap; max-height: 12em; '
        f'overflow: auto; font-size: 12px;">{_e(text)}</pre>'
    )


def _badge(state: Any) -> str:
    if state is None:
        return ""
    fill, stroke = state_colours(state)
    return (
        f'<span style="background: {fill}; border: 1px solid {stroke}; border-radius: 4px; '
        f'padding: 0 6px; font-size: 11px;">{_e(state_name(state))}</span>'
    )


def _time(value: dt.datetime | None) -> str:
    return "—" if value is None else value.isoformat(sep=" ", timespec="seconds")


def _seconds(value: Any) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, int | float):
        return str(value)
    if value < 60:
        return f"{value:.2f} s"
    minutes, seconds = divmod(value, 60)
    return f"{int(minutes)} min {seconds:.0f} s"


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)
