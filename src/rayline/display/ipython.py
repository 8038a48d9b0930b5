"""Notebook display of the SDK's types, registered from above so that the SDK never imports
``display``.

IPython formatters are registered by type *name* (``for_type_by_name``): nothing is imported to
register them. A ``Graph`` or a ``Flow`` at the end of a cell shows as HTML (``graph_html``), and
as Mermaid in front ends that prefer Markdown. ``import rayline`` calls
``install_in_running_shell()``, which does nothing outside IPython; ``%load_ext
rayline.display.ipython`` does the same by hand. (A ``Run`` renders itself: ``Run._repr_html_``.)

Example::

    from IPython.core.formatters import DisplayFormatter
    formatter = DisplayFormatter()
    register(formatter)
    data, _ = formatter.format(my_flow)      # data["text/html"] is the graph
"""

from __future__ import annotations

import sys
from typing import Any

from rayline.display.notebook import graph_html
from rayline.display.render import to_mermaid

_GRAPH = ("rayline.sdk.graph", "Graph")
_FLOW = ("rayline.sdk.flow", "Flow")


def register(display_formatter: Any) -> None:
    """Register HTML and Markdown display of ``Graph`` and ``Flow`` with an IPython
    ``DisplayFormatter`` (``shell.display_formatter``)."""
    html = display_formatter.formatters["text/html"]
    markdown = display_formatter.formatters["text/markdown"]
    html.for_type_by_name(*_GRAPH, graph_html)
    html.for_type_by_name(*_FLOW, _flow_html)
    markdown.for_type_by_name(*_GRAPH, _graph_markdown)
    markdown.for_type_by_name(*_FLOW, _flow_markdown)


def install_in_running_shell() -> bool:
    """Register with the IPython shell this process runs in, if any (never imports IPython
    just to ask). True when registered."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    formatter = getattr(shell, "display_formatter", None)
    if formatter is None:
        return False
    register(formatter)
    return True


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext rayline.display.ipython``."""
    register(shell.display_formatter)


def _flow_html(flow: Any) -> str:
    return graph_html(flow.graph())


def _graph_markdown(graph: Any) -> str:
    return "```mermaid\n" + to_mermaid(graph) + "\n```"


def _flow_markdown(flow: Any) -> str:
    return _graph_markdown(flow.graph())
