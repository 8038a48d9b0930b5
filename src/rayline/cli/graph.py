"""``rayline graph``: draw a flow's graph without running it (Ray is never started)."""

from __future__ import annotations

from typing import Any

import click


@click.command("graph", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", metavar="PATH[:FLOW]")
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]), default="text",
              show_default=True, help="text for a terminal, mermaid for Markdown/GitHub, dot for "
              "Graphviz (`| dot -Tsvg > flow.svg`).")
@click.option("--run", "run_id", metavar="RUN_ID", help="Colour the nodes with the task states "
              "of this recorded run.")
def graph_cmd(target: str, fmt: str, run_id: str | None) -> int:
    """Print a flow's task graph: text, Mermaid or Graphviz DOT.

    The flow is loaded and traced only; nothing runs and Ray is not started, so this is a
    quick check that a flow file is well formed.

    \b
    Examples:
      rayline graph flows/hello.py
      rayline graph pipeline.py:train --format mermaid > train.md
      rayline graph flows/hello.py --format dot | dot -Tsvg > hello.svg
      rayline graph flows/hello.py --run 1a2b3c
    """
    from rayline.api import load_flow
    from rayline.cli.run import absolute_target
    from rayline.display import render

    graph = load_flow(absolute_target(target))
    states = _states(run_id) if run_id else None
    draw = {"text": render.to_text, "mermaid": render.to_mermaid, "dot": render.to_dot}[fmt]
    click.echo(draw(graph, states=states))
    return 0


def _states(run_id: str) -> dict[str, Any]:
    from rayline.display.run_view import read_run_view
    from rayline.launch.session import Session

    with Session(executor="local") as eng:
        view = read_run_view(eng.runs, eng.find_run(run_id).run_id, attempts=False)
    return {t.node_id: t.status.value for t in view.tasks}
