"""The web UI's pure parts: which binds are loopback, and the run graph's layout."""

from __future__ import annotations

import pytest

from rayline.ui.graph_svg import layout, plan_nodes
from rayline.ui.security import is_loopback, same


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.com", False),
])  # fmt: skip
def test_only_loopback_addresses_count_as_this_machine_only(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_tokens_compare_equal_only_when_both_are_given_and_equal() -> None:
    assert same("abc", "abc")
    assert not same("abc", "abd") and not same("", "") and not same(None, "abc")


def test_the_graph_is_drawn_one_row_per_depth_with_state_colours_and_edges() -> None:
    plan = {"nodes": [
        {"id": "load", "task": "flows.x:load", "inputs": []},
        {"id": "a", "task": "flows.x:square", "inputs": ["load"]},
        {"id": "b", "task": "flows.x:square", "inputs": ["load"]},
        {"id": "total", "task": "flows.x:total", "inputs": ["a", "b"]},
    ]}  # fmt: skip
    drawing = layout(plan_nodes(plan), {"load": "SUCCEEDED", "a": "RUNNING", "b": "FAILED"})
    by_node = {b.node_id: b for b in drawing.boxes}
    assert by_node["load"].y < by_node["a"].y == by_node["b"].y < by_node["total"].y
    assert by_node["a"].x != by_node["b"].x
    assert (by_node["load"].state, by_node["a"].state, by_node["total"].state) == ("SUCCEEDED", "RUNNING", None)
    assert by_node["b"].fill == "#f8d7da" and by_node["total"].fill == "#ffffff"
    assert by_node["a"].task == "square"
    assert len(drawing.edges) == 4
    assert all(0 <= b.x and b.x + drawing.box_w <= drawing.width for b in drawing.boxes)


def test_without_a_stored_plan_the_tasks_are_drawn_unconnected() -> None:
    drawing = layout(plan_nodes(None, ["x", "y"]), {"x": "SUCCEEDED"})
    assert [b.node_id for b in drawing.boxes] == ["x", "y"] and drawing.edges == ()


def test_rayline_ui_has_help_with_examples_and_binds_loopback_by_default() -> None:
    from click.testing import CliRunner

    from rayline.cli.main import cli

    result = CliRunner().invoke(cli, ["ui", "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.stdout and "127.0.0.1" in result.stdout and "token" in result.stdout
