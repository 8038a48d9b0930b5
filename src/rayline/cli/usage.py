"""``rayline usage``: the CPU- and GPU-seconds that runs used, per queue, flow or day."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from rayline.cli.output import print_table


@click.command("usage", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--by", "by", type=click.Choice(["queue", "flow", "day"]), default="flow",
              show_default=True, help="Group the runs by queue, flow or UTC day.")
@click.option("--since", metavar="DATE", help="Only runs created at or after DATE "
              "(ISO 8601: 2026-12-01 or 2026-12-01T08:00; UTC unless it says otherwise).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
def usage_cmd(by: str, since: str | None, as_json: bool) -> int:
    """Report the resources runs used: CPU-seconds and GPU-seconds (what each task attempt held
    times how long it ran), and the most memory one attempt held.

    \b
    Examples:
      rayline usage
      rayline usage --by queue --since 2026-12-01
      rayline usage --by day --json | jq '.[] | select(.gpu_seconds > 3600)'
    """
    from rayline.launch.session import Session
    from rayline.store.usage import usage_report

    start = _parse_since(since) if since else None
    with Session(executor="local") as session:
        rows = usage_report(session.runs, by=by, since=start)  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows]))
        return 0
    if not rows:
        click.echo("no usage recorded" + (f" since {since}" if since else ""), err=True)
        return 0
    columns = [("key", by.upper()), ("runs", "RUNS"), ("attempts", "ATTEMPTS"),
               ("cpu", "CPU-SECONDS"), ("gpu", "GPU-SECONDS"), ("memory", "MAX MEMORY")]
    table = [{"key": r.key, "runs": str(r.runs), "attempts": str(r.attempts), "cpu": f"{r.cpu_seconds:.1f}",
              "gpu": f"{r.gpu_seconds:.1f}", "memory": _bytes(r.max_memory_bytes)} for r in rows]
    print_table(columns, table, status_key="")
    return 0


def _parse_since(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 date (2026-12-01 or 2026-12-01T08:00)",
                                 param_hint="--since") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _bytes(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)
