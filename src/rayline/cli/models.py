"""``rayline models list|show|promote|rollback|history``: the model registry from the shell.

The registry lives in the run store's database (``RAYLINE_DB_URL``, by default SQLite in
``RAYLINE_HOME``; see ``rayline.models.registry``). Every command
takes ``--json`` for scripts. Unknown models, versions and aliases exit with code 2 and a message
that lists what exists.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click


class LookupFailed(click.ClickException):
    """Unknown model, version or alias, or a refused alias move: exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _registry() -> Any:
    from rayline.models.registry import open_registry

    return open_registry()


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a registry call; registry errors become exit code 2 with their message."""
    from rayline.errors import StoreError

    try:
        return fn(*args, **kwargs)
    except (StoreError, ValueError) as e:
        raise LookupFailed(str(e)) from None


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=None, default=str))


def _table(columns: list[tuple[str, str]], rows: list[dict[str, Any]]) -> None:
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(show_edge=False, header_style="bold")
        for _, title in columns:
            table.add_column(title)
        for r in rows:
            table.add_row(*(str(r.get(k, "") if r.get(k) is not None else "-").replace("[", r"\[")
                            for k, _ in columns))  # fmt: skip
        Console().print(table)
        return
    cells = [[str(r.get(k) if r.get(k) is not None else "-") for k, _ in columns] for r in rows]
    widths = [max(len(t), *(len(c[i]) for c in cells)) for i, (_, t) in enumerate(columns)]
    click.echo("  ".join(t.ljust(w) for (_, t), w in zip(columns, widths, strict=True)).rstrip())
    for c in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())


def _when(iso: str) -> str:
    return iso.replace("+00:00", "Z").split(".")[0] + "Z" if "." in iso else iso


def _metrics_text(metrics: dict[str, Any]) -> str:
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()]
    return " ".join(parts[:4]) + (" …" if len(parts) > 4 else "")


@click.group("models", context_settings={"help_option_names": ["-h", "--help"]})
def models_group() -> None:
    """Registered models: versions, aliases, promotion and rollback.

    \b
    Examples:
      rayline models list
      rayline models show churn
      rayline models promote churn 4 production --reason "gate passed"
      rayline models rollback churn production
    """


@models_group.command("list", short_help="List registered models.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
def list_cmd(as_json: bool) -> int:
    """One line per model: latest version, number of versions, aliases."""
    summaries = [s.to_dict() for s in _call(_registry().list_models)]
    if as_json:
        _echo_json(summaries)
        return 0
    if not summaries:
        click.echo("no models registered yet; register one with register_model(...) in a flow",
                   err=True)  # fmt: skip
        return 0
    rows = [{**s, "aliases": " ".join(f"{a}->{v}" for a, v in sorted(s["aliases"].items())),
             "updated_at": _when(s["updated_at"])} for s in summaries]  # fmt: skip
    _table([("name", "MODEL"), ("latest_version", "LATEST"), ("num_versions", "VERSIONS"),
            ("aliases", "ALIASES"), ("updated_at", "UPDATED")], rows)  # fmt: skip
    return 0


@models_group.command("show", short_help="Show a model's versions, or one version.")
@click.argument("ref", metavar="NAME[@VERSION|@ALIAS]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def show_cmd(ref: str, as_json: bool) -> int:
    """Every version of NAME (metrics, aliases, lineage), or the one NAME@N / NAME@ALIAS names."""
    from rayline.models.registry import parse_ref

    reg = _registry()
    name, version, alias = _call(parse_ref, ref)
    if version is not None or alias is not None:
        mv = _call(reg.get, name, version=version, alias=alias)
        if as_json:
            _echo_json(mv.to_dict())
        else:
            for key, value in mv.to_dict().items():
                shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
                click.echo(f"{key:16} {shown if shown is not None else '-'}")
        return 0
    versions = _call(reg.versions, name)
    if as_json:
        _echo_json([v.to_dict() for v in versions])
        return 0
    rows = [{"version": v.version, "flavor": v.flavor, "aliases": " ".join(v.aliases),
             "metrics": _metrics_text(v.metrics), "run": v.lineage.get("run_id"),
             "created_at": _when(v.created_at.isoformat())} for v in versions]  # fmt: skip
    _table([("version", "VERSION"), ("flavor", "FLAVOR"), ("aliases", "ALIASES"),
            ("metrics", "METRICS"), ("run", "RUN"), ("created_at", "CREATED")], rows)  # fmt: skip
    return 0


@models_group.command("promote", short_help="Point an alias at a version.")
@click.argument("name")
@click.argument("version", type=int)
@click.argument("alias")
@click.option("--reason", help="Why (kept in the history).")
@click.option("--json", "as_json", is_flag=True, help="Print the history entry as JSON.")
def promote_cmd(name: str, version: int, alias: str, reason: str | None, as_json: bool) -> int:
    """Point ALIAS of model NAME at VERSION (e.g. production); the move is recorded."""
    event = _call(_registry().promote, name, version, alias, reason=reason)
    _report(event, as_json)
    return 0


@models_group.command("rollback", short_help="Move an alias back to its previous version.")
@click.argument("name")
@click.argument("alias")
@click.option("--reason", help="Why (kept in the history).")
@click.option("--json", "as_json", is_flag=True, help="Print the history entry as JSON.")
def rollback_cmd(name: str, alias: str, reason: str | None, as_json: bool) -> int:
    """Move ALIAS of model NAME back to the version it pointed at before its last promotion."""
    event = _call(_registry().rollback, name, alias, reason=reason)
    _report(event, as_json)
    return 0


@models_group.command("history", short_help="Show alias moves and serving events.")
@click.argument("name")
@click.option("--alias", help="Only this alias.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
def history_cmd(name: str, alias: str | None, as_json: bool) -> int:
    """Every promotion, rollback and rollout of NAME, oldest first."""
    events = [e.to_dict() for e in _call(_registry().history, name, alias)]
    if as_json:
        _echo_json(events)
        return 0
    if not events:
        click.echo(f"model '{name}' has no alias moves yet", err=True)
        return 0
    rows = [{**e, "at": _when(e["at"]), "move": _move(e)} for e in events]
    _table([("at", "WHEN"), ("event", "EVENT"), ("alias", "ALIAS"), ("move", "VERSIONS"),
            ("actor", "BY"), ("reason", "REASON")], rows)  # fmt: skip
    return 0


def _move(e: dict[str, Any]) -> str:
    return f"{e['from_version'] if e['from_version'] is not None else '-'} -> {e['to_version']}"


def _report(event: Any, as_json: bool) -> None:
    if as_json:
        _echo_json(event.to_dict())
    else:
        click.echo(f"{event.name}@{event.alias}: {_move(event.to_dict())} ({event.event})")
