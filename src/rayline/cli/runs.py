"""``rayline runs list``, ``rayline runs show`` and ``rayline cancel``: read (and, for cancel,
end) recorded runs. Runs whose driver died are marked INTERRUPTED before they are shown."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from rayline.cli.run import exit_code_for, format_seconds

_STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "SUCCEEDED_WITH_WARNINGS", "FAILED", "CANCELLED",
             "INTERRUPTED", "SKIPPED")
_STYLE = {"SUCCEEDED": "green", "SUCCEEDED_WITH_WARNINGS": "yellow", "CACHED": "green", "FAILED": "red", "UPSTREAM_FAILED": "red",
          "CANCELLED": "yellow", "INTERRUPTED": "yellow", "RUNNING": "cyan"}


@click.group("runs", context_settings={"help_option_names": ["-h", "--help"]})
def runs_group() -> None:
    """List and inspect recorded runs.

    \b
    Examples:
      rayline runs list --flow hello --status FAILED
      rayline runs show 1a2b3c
    """


@runs_group.command("list", short_help="List recent runs.")
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(min=1),
              help="How many runs to show, newest first.")
@click.option("--flow", "flow_name", metavar="NAME", help="Only runs of this flow.")
@click.option("--status", type=click.Choice(_STATUSES, case_sensitive=False),
              help="Only runs in this state.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
def list_cmd(limit: int, flow_name: str | None, status: str | None, as_json: bool) -> int:
    """List recent runs, newest first: id, flow, status, start, duration, task counts.

    A table on a terminal, plain columns otherwise (for grep and awk).

    \b
    Examples:
      rayline runs list
      rayline runs list --flow hello --status FAILED --limit 5
      rayline runs list --json | jq -r '.[].run_id'
    """
    from rayline.api import Engine
    from rayline.store.states import RunStatus

    with Engine(executor="local") as eng:
        want = RunStatus(status.upper()) if status else None
        records = eng.runs.list_runs(limit=limit, flow_name=flow_name, status=want)
        if any(_refresh_stale(eng, r) for r in records):
            records = eng.runs.list_runs(limit=limit, flow_name=flow_name, status=want)
        rows = [_run_row(r, eng.runs.get_tasks(r.run_id)) for r in records]
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return 0
    if not rows:
        click.echo("no runs recorded yet; start one with `rayline run PATH`", err=True)
        return 0
    columns = [("run_id", "RUN"), ("flow", "FLOW"), ("status", "STATUS"), ("created_at", "STARTED"),
               ("duration", "DURATION"), ("tasks", "TASKS")]
    table = [{**r, "created_at": _short_time(r["created_at"]), "duration": _dur(r["duration_s"]),
              "tasks": _counts_text(r["counts"])} for r in rows]
    _print_table(columns, table, status_key="status")
    return 0


@runs_group.command("show", short_help="Show one run and its tasks.")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout, "
              "with every attempt of every task.")
def show_cmd(run_id: str, as_json: bool) -> int:
    """Show one run: its header and a table of tasks (status, attempts, duration, error).

    RUN_ID may be a unique prefix. A run whose driver died is shown as INTERRUPTED.

    \b
    Examples:
      rayline runs show 1a2b3c
      rayline runs show 1a2b3c --json | jq '.tasks[] | select(.status == "FAILED")'
    """
    from rayline.api import Engine, Run

    with Engine(executor="local") as eng:
        record = find_run(eng, run_id)
        eng.runs.mark_interrupted_if_stale(record.run_id, eng.settings.lease_ttl)
        result = Run.load(eng, record.run_id)
        events = eng.runs.get_events(record.run_id)
    data = show_json(result)
    data["events"] = [{"at": _iso(e.at), "kind": e.kind, "node_id": e.node_id, "digest": e.digest,
                       "message": e.message} for e in events]
    if as_json:
        click.echo(json.dumps(data, default=str))
        return 0
    r = result.record
    click.echo(f"run      {r.run_id}")
    click.echo(f"flow     {r.flow_name}  ({r.source or 'no source recorded'})")
    click.echo(f"status   {r.status.value}")
    click.echo(f"started  {_short_time(_iso(r.created_at))}"
               + (f"   ended {_short_time(_iso(r.ended_at))}   took {_dur(data['duration_s'])}"
                  if r.ended_at else ""))
    if r.params:
        click.echo("params   " + ", ".join(f"{k}={v!r}" for k, v in r.params.items()))
    if r.owner_pid and not r.status.terminal:
        click.echo(f"owner    pid {r.owner_pid} on {r.owner_host}")
    if r.error:
        click.echo(f"error    {r.error.strip().splitlines()[0]}")
    for w in data["warnings"]:
        click.echo(f"warning  {_first_line(w)}")
    if data["counters"]:
        click.echo("counters " + ", ".join(f"{k}={v:g}" for k, v in sorted(data["counters"].items())))
    for e in events:
        click.echo(f"event    {_short_time(_iso(e.at))} {e.kind}: {_first_line(e.message)}")
    click.echo("")
    columns = [("node_id", "NODE"), ("status", "STATUS"), ("attempts", "ATTEMPTS"),
               ("duration", "DURATION"), ("error", "ERROR")]
    table = [{"node_id": t["node_id"], "status": t["status"], "attempts": str(t["attempts"]),
              "duration": _dur(t["duration_s"]), "error": _error_text(t["error_type"], t["error"])}
             for t in data["tasks"]]
    _print_table(columns, table, status_key="status")
    if r.status.value in ("FAILED", "CANCELLED", "INTERRUPTED"):
        click.echo(f"\nresume with: rayline resume {r.run_id}")
    return 0


@click.command("cancel", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_id")
@click.option("--wait", "wait_s", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds to wait for the driver to record the cancellation.")
def cancel_cmd(run_id: str, wait_s: float) -> int:
    """Cancel a running run.

    If the run's driver process is alive on this host, it gets SIGINT (as from Ctrl-C) and
    records CANCELLED itself, stopping its tasks; this waits for that. If the driver is gone,
    the run is marked CANCELLED directly. A run already finished is left as it is. A run
    driven from another host must be cancelled there (exit code 2).

    \b
    Examples:
      rayline cancel 1a2b3c
      rayline cancel 1a2b3c --wait 120
    """
    from rayline.api import Engine
    from rayline.errors import UsageError

    with Engine(executor="local") as eng:
        record = find_run(eng, run_id)
        rid = record.run_id
        if record.status.terminal:
            click.echo(f"run {rid} already finished: {record.status.value}; nothing to cancel")
            return 0
        host = socket.gethostname()
        if record.owner_host and record.owner_host != host:
            raise UsageError(
                f"run {rid} is driven by pid {record.owner_pid} on host {record.owner_host}, not "
                f"this host ({host}); run `rayline cancel {rid}` there"
            )
        if record.owner_pid and record.owner_pid != os.getpid() and _alive(record.owner_pid) \
                and not eng.runs.is_stale(record, eng.settings.lease_ttl):
            return _interrupt_driver(eng, record, wait_s)
        _cancel_in_store(eng, record, "cancelled with `rayline cancel`; its driver was no longer running")
        click.echo(f"run {rid}: driver pid {record.owner_pid} is not running; marked CANCELLED")
        return 0


# ---------------------------------------------------------------------------- cancel helpers
def _interrupt_driver(eng: Any, record: Any, wait_s: float) -> int:
    rid = record.run_id
    os.kill(record.owner_pid, signal.SIGINT)
    click.echo(f"run {rid}: sent SIGINT to driver pid {record.owner_pid}; waiting up to "
               f"{wait_s:g} s for it to stop", err=True)
    deadline = time.monotonic() + wait_s
    while True:
        now = eng.runs.get_run(rid)
        if now.status.terminal:
            click.echo(f"run {rid}: {now.status.value}")
            return 0
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    click.echo(f"run {rid} is still {now.status.value} after {wait_s:g} s; its driver (pid "
               f"{record.owner_pid}) may be stuck. `kill {record.owner_pid}` stops it, then "
               f"`rayline cancel {rid}` marks the run CANCELLED", err=True)
    return 1


def _cancel_in_store(eng: Any, record: Any, why: str) -> None:
    from rayline.store.runs import TaskUpdate
    from rayline.store.states import RunStatus, TaskStatus

    ended = datetime.now(UTC)
    updates = [TaskUpdate(node_id=t.node_id, status=TaskStatus.CANCELLED, ended_at=ended)
               for t in eng.runs.get_tasks(record.run_id) if not t.status.terminal]
    # Fenced by the dead driver's lease generation: if anyone took the run over meanwhile,
    # LeaseLostError stops us from overwriting their state.
    if updates:
        eng.runs.record_tasks(record.run_id, updates, generation=record.generation)
    eng.runs.set_run_status(record.run_id, RunStatus.CANCELLED, error=why, generation=record.generation)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not a driver any more
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:
        return True


# ---------------------------------------------------------------------------- shared
def find_run(eng: Any, run_id: str) -> Any:
    """The run ``run_id`` (or unique prefix); an unknown or ambiguous id is a usage error."""
    from rayline.errors import LeaseLostError, StoreError, UsageError

    try:
        return eng.runs.find_run(run_id)
    except LeaseLostError:
        raise
    except StoreError as exc:
        raise UsageError(str(exc)) from None


def _refresh_stale(eng: Any, record: Any) -> bool:
    if record.status.value != "RUNNING":
        return False
    return eng.runs.mark_interrupted_if_stale(record.run_id, eng.settings.lease_ttl)


def _run_row(r: Any, tasks: list[Any]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.status.value] = counts.get(t.status.value, 0) + 1
    return {"run_id": r.run_id, "flow": r.flow_name, "status": r.status.value,
            "created_at": _iso(r.created_at), "ended_at": _iso(r.ended_at),
            "duration_s": _seconds(r.started_at or r.created_at, r.ended_at),
            "error": r.error, "run_key": r.run_key, "counts": counts}


def show_json(result: Any) -> dict[str, Any]:
    """A run with its tasks and every attempt of each, as JSON-ready data."""
    r = result.record
    by_node: dict[str, list[dict[str, Any]]] = {}
    for a in result.attempts:
        by_node.setdefault(a.node_id, []).append({
            "attempt": a.attempt, "status": a.status.value, "started_at": _iso(a.started_at),
            "ended_at": _iso(a.ended_at), "duration_s": _seconds(a.started_at, a.ended_at),
            "error_type": a.error_type, "error": a.error_message, "traceback": a.traceback,
            "worker_pid": a.worker_pid, "node_ip": a.node_ip,
        })
    return {
        "run_id": r.run_id, "flow": r.flow_name, "status": r.status.value, "error": r.error,
        "source": r.source, "params": r.params, "run_key": r.run_key,
        "created_at": _iso(r.created_at), "started_at": _iso(r.started_at),
        "ended_at": _iso(r.ended_at), "duration_s": _seconds(r.started_at or r.created_at, r.ended_at),
        "owner_pid": r.owner_pid, "owner_host": r.owner_host, "counts": result.counts(),
        "warnings": list(r.counters.get("warnings", [])), "counters": dict(r.counters.get("counters", {})),
        "exit_code": exit_code_for(r.status.value) if r.status.terminal else None,
        "tasks": [
            {"node_id": t.node_id, "status": t.status.value, "attempts": t.attempts,
             "started_at": _iso(t.started_at), "ended_at": _iso(t.ended_at),
             "duration_s": _seconds(t.started_at, t.ended_at), "error_type": t.error_type,
             "error": t.error_message, "digest": t.digest,
             "attempt_log": by_node.get(t.node_id, [])}
            for t in result.tasks
        ],
    }


def _print_table(columns: list[tuple[str, str]], rows: list[dict[str, Any]], status_key: str) -> None:
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
                style = _STYLE.get(text) if key == status_key else None
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


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


def _dur(seconds: float | None) -> str:
    return format_seconds(seconds) if seconds is not None else "-"


def _short_time(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _error_text(error_type: str | None, message: str | None) -> str:
    first = _first_line(message)
    kind = (error_type or "").rsplit(".", 1)[-1]
    return f"{kind}: {first}" if kind and first else first or kind


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:120] if lines else ""


def _counts_text(counts: dict[str, int]) -> str:
    return " ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))
