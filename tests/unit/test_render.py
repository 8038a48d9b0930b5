"""Graphs render as text, Mermaid, DOT and HTML; large fan-outs collapse; HTML is escaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rayline import flow, task
from rayline.display.notebook import graph_html, run_html
from rayline.display.render import to_dot, to_mermaid, to_text
from rayline.display.run_view import RunView, TaskView
from rayline.sdk.graph import Graph, Node, Ref
from rayline.store.states import RunStatus, TaskStatus


@task
def make_numbers(n: int) -> list[int]:
    return list(range(n))


@task
def square(x: int) -> int:
    return x * x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@flow
def hello(n: int = 3):
    nums = make_numbers(n)
    return total([square(nums), square(nums)])


@flow
def wide():
    nums = make_numbers(3)
    return total([square(nums) for _ in range(1000)])


EDGES = [
    ("make_numbers", "square"),
    ("make_numbers", "square-1"),
    ("square", "total"),
    ("square-1", "total"),
]
STATES = {"make_numbers": "SUCCEEDED", "square": "FAILED", "square-1": "RUNNING"}


@pytest.fixture(scope="module")
def graph() -> Graph:
    return hello.graph()


def test_text_lists_every_node_its_task_upstream_and_state(graph):
    text = to_text(graph, STATES)
    lines = text.splitlines()
    assert lines[0] == "hello: 4 nodes"
    assert "params: n: int = 3" in text
    row = next(line for line in lines if line.strip().startswith("square-1"))
    assert "[square]" in row and "<- make_numbers" in row and "(RUNNING)" in row
    total_row = next(line for line in lines if line.strip().startswith("total"))
    assert "<- square, square-1" in total_row
    assert total_row.index("total") > row.index("square-1")  # indented one level deeper
    assert "outputs: total" in text


def test_mermaid_contains_every_node_edge_and_state_colour(graph):
    text = to_mermaid(graph, STATES)
    assert text.startswith("flowchart TD")
    for node in graph.nodes:
        assert f'n_{node.id.replace("-", "_")}["{node.id}' in text
    for a, b in EDGES:
        assert f"n_{a.replace('-', '_')} --> n_{b.replace('-', '_')}" in text
    assert "classDef st_failed fill:#f8d7da" in text
    assert "class n_square st_failed" in text


def test_dot_contains_every_node_edge_and_state_colour(graph):
    text = to_dot(graph, STATES)
    assert text.startswith('digraph "hello" {') and text.endswith("}")
    for a, b in EDGES:
        assert f"n_{a.replace('-', '_')} -> n_{b.replace('-', '_')};" in text
    assert 'n_square_1 [label="square-1\\nsquare", fillcolor="#cfe2ff"' in text


def test_large_fan_out_collapses_into_one_box():
    g = wide.graph()
    assert len(g) == 1002
    states = {f"square-{i}": "SUCCEEDED" for i in range(1, 600)}
    mermaid = to_mermaid(g, states)
    assert "square ×1000" in mermaid
    assert "599 succeeded" in mermaid and "401 pending" in mermaid
    assert len(mermaid.splitlines()) < 20
    dot = to_dot(g)
    assert "square ×1000" in dot and dot.count("->") == 2
    assert "square ×1000" in graph_html(g)


def test_small_graphs_are_not_collapsed(graph):
    assert "×" not in to_mermaid(graph) and "×" not in to_dot(graph)


def _hostile_graph() -> Graph:
    spec = square.spec
    evil = "<script>alert(1)</script>"
    nodes = (
        Node("a", spec, (), "x.py:1"),
        Node(evil, spec, (("x", Ref("a")),), "x.py:2", upstream=("a",)),
    )
    return Graph(name=f'flow"{evil}', nodes=nodes, outputs=Ref(evil))


def test_html_escapes_names():
    g = _hostile_graph()
    html = graph_html(g, {"a": "SUCCEEDED"})
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "2 nodes" in html and "edges (1)" in html
    mermaid = to_mermaid(g)
    assert "<script>" not in mermaid
    assert '["#lt;script#gt;alert(1)#lt;/script#gt;<br/>square"]' in mermaid
    assert "<script>alert" in to_dot(g)  # DOT is plain text: only quotes need escaping
    assert 'digraph "flow\\"<script>' in to_dot(g)


def test_ipython_shows_graphs_and_flows_as_html_and_mermaid(graph):
    formatters = pytest.importorskip("IPython.core.formatters")
    from rayline.display.ipython import register

    plain = formatters.DisplayFormatter()
    assert "text/html" not in plain.format(graph)[0]  # the SDK has no display of its own
    shown = formatters.DisplayFormatter()
    register(shown)
    for obj in (graph, hello):
        data, _ = shown.format(obj)
        assert 'class="rayline-graph"' in data["text/html"] and "4 nodes" in data["text/html"]
        assert data["text/markdown"].startswith("```mermaid\nflowchart TD")


T0 = datetime.fromtimestamp(1_700_000_000.0, tz=UTC)


def _task(node_id: str, status: str, attempts: int, seconds: float, error: str | None = None) -> TaskView:
    return TaskView(node_id=node_id, status=TaskStatus(status), attempts=attempts, started_at=T0,
                    ended_at=T0 + timedelta(seconds=seconds), error_type=None, error=error,
                    traceback=None, output=None)  # fmt: skip


def _run(run_id: str, flow: str, status: str, ended: datetime | None, tasks: tuple[TaskView, ...]) -> RunView:
    return RunView(run_id=run_id, flow=flow, status=RunStatus(status), error=None, source=None,
                   params={}, run_key=None, trigger=None, created_at=T0, started_at=None,
                   ended_at=ended, owner_pid=None, owner_host=None, warnings=(), counters={},
                   tasks=tasks)  # fmt: skip


def test_run_html_shows_status_tasks_and_escapes_errors(graph):
    tasks = (
        _task("make_numbers", "SUCCEEDED", 1, 0.25),
        _task("square", "FAILED", 3, 1.5, "ValueError: <script>alert('x')</script>\nsecond line"),
    )
    html = run_html(_run("run-1", "hello", "FAILED", T0 + timedelta(seconds=12.5), tasks), graph)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "run-1" in html and "FAILED" in html and "12.50 s" in html
    assert "0.25 s" in html and ">3<" in html
    assert "second line" in html  # errors are shown whole
    assert "flow <code>hello</code> · 4 nodes" in html  # the graph, coloured by state
    assert "#f8d7da" in html


def test_run_html_without_graph_or_times():
    html = run_html(_run("r", "<b>", "RUNNING", None, ()))
    assert "&lt;b&gt;" in html and "<b>" not in html
    assert "rayline-graph" not in html
