"""How the CLI prints: tables (rich on a terminal, plain columns otherwise), durations, times,
task counts and multi-line text. Every command prints through these; what it prints about a run
comes from the run's ``RunView`` (``rayline.display.run_view``)."""

from __future__ import annotations

import sys
from typing import Any

import click

STATUS_STYLE = {"SUCCEEDED": "green", "SUCCEEDED_WITH_WARNINGS": "yellow", "CACHED": "green",
                "FAILED": "red", "UPSTREAM_FAILED": "red", "CANCELLED": "yellow",
                "INTERRUPTED": "yellow", "RUNNING": "cyan"}  # fmt: skip


def counts_text(counts: dict[str, int], sep: str = " ") -> str:
    """``3 succeeded 1 failed``: task counts, the largest first."""
    return sep.join(f"{n} {s.lower()}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def first_line(text: str | None) -> str:
    """The first line of ``text``; for a table cell or a list, never for an error's report."""
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def block(label: str, text: str) -> str:
    """``label`` then every line of ``text``, continuation lines indented under the first:

    error    task 'boom' failed: ValueError: schema contract violated (1 problem):
             column 'age': expected int64, found string
    """
    pad = " " * len(label)
    lines = str(text).strip().splitlines() or [""]
    return "\n".join([label + lines[0], *(pad + line for line in lines[1:])])


def print_table(columns: list[tuple[str, str]], rows: list[dict[str, Any]], status_key: str) -> None:
    """``rows`` under ``columns`` (key, title): a rich table on a terminal (states coloured),
    plain space-aligned columns otherwise (for grep and awk)."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(show_edge=False, header_style="bold")
        for _, title in columns:
            table.add_column(title, overflow="fold" if title == "ERROR" else "ellipsis")
        for row in rows:
            cells = []
            for key, _ in columns:
                text = str(row.get(key) or "")
                style = STATUS_STYLE.get(text) if key == status_key else None
                cells.append(f"[{style}]{text}[/]" if style else text.replace("[", r"\["))
            table.add_row(*cells)
        Console().print(table)
        return
    widths = [max(len(title), *(len(str(r.get(k) or "")) for r in rows)) for k, title in columns]
    lines = ["  ".join(t.ljust(w) for (_, t), w in zip(columns, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(r.get(k) or "").ljust(w)
                               for (k, _), w in zip(columns, widths, strict=True)).rstrip())
    click.echo("\n".join(lines))
