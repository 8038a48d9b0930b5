"""``rayline runs list``, ``rayline runs show`` and ``rayline cancel``: read (and, for cancel,
end) recorded runs. Runs whose driver died are marked INTERRUPTED before they are shown."""

from __future__ import annotations

import json
from typing import Any

import click

from rayline.cli.output import block, counts_text, first_line, print_table
from rayline.display.time_text import duration_text, short_time
from rayline.errors import exit_code_for_status as exit_code_for

_STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "SUCCEEDED_WITH_WARNINGS", "FAILED", "CANCELLED",
             "INTERRUPTED", "SKIPPED")


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
    from rayline.launch.session import Session
    from rayline.store.states import RunStatus

    with Session(executor="local") as eng:
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
    table = [{**r, "created_at": short_time(r["created_at"]), "duration": duration_text(r["duration_s"]),
              "tasks": counts_text(r["counts"])} for r in rows]
    print_table(columns, table, status_key="status")
    return 0


@runs_group.command("show", short_help="Show one run and its tasks.")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout, "
              "with every attempt of every task (errors and tracebacks whole).")
@click.option("--traceback", "tracebacks", is_flag=True, help="Also print the traceback of each "
              "failed task's last attempt.")
def show_cmd(run_id: str, as_json: bool, tracebacks: bool) -> int:
    """Show one run: its header, a table of tasks (status, attempts, duration, error), then the
    whole error of each failed task (every line; with --traceback, its traceback too).

    RUN_ID may be a unique prefix. A run whose driver died is shown as INTERRUPTED.

    \b
    Examples:
      rayline runs show 1a2b3c
      rayline runs show 1a2b3c --traceback
      rayline runs show 1a2b3c --json | jq '.tasks[] | select(.status == "FAILED")'
    """
    from rayline.api import Run
    from rayline.launch.session import Session

    with Session(executor="local") as eng:
        record = eng.find_run(run_id)
        eng.interrupt_if_stale(record)
        result = Run.load(eng, record.run_id)
        view = result.view()
    if as_json:
        click.echo(json.dumps(show_json(result), default=str))
        return 0
    print_run(view, tracebacks=tracebacks)
    for e in view.events:  # the run's history besides task states (e.g. outputs found lost)
        click.echo(f"event    {short_time(e['at'])} {e['kind']}: {first_line(e['message'])}")
    return 0


@click.command("cancel", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_id")
@click.option("--wait", "wait_s", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds to wait for the run to end CANCELLED (0: request it and return).")
def cancel_cmd(run_id: str, wait_s: float) -> int:
    """Cancel a run, from any host that shares the run store.

    The request goes through the database: the run's driver sees it within about a second,
    cancels the run's Ray tasks and records CANCELLED (its exit code is 130); this waits for
    that. A run that has not started yet is cancelled at once. If the driver is gone, the run
    is marked CANCELLED here (Ray stopped the tasks of the dead driver). A run already
    finished is left as it is. Exit code 1: still running after --wait (the request stands).

    \b
    Examples:
      rayline cancel 1a2b3c
      rayline cancel 1a2b3c --wait 0
    """
    from rayline.launch.cancel import cancel_run
    from rayline.launch.session import Session

    with Session(executor="local") as session:
        return cancel_run(session, run_id, wait_s=wait_s, say=lambda line, err: click.echo(line, err=err))


# ---------------------------------------------------------------------------- shared
def _refresh_stale(eng: Any, record: Any) -> bool:
    return eng.interrupt_if_stale(record)


def _run_row(r: Any, tasks: list[Any]) -> dict[str, Any]:
    from rayline.display.run_view import run_view

    return run_view(r, tasks).row()


def show_json(result: Any) -> dict[str, Any]:
    """What ``rayline runs show --json`` prints: the run's JSON document (``RunView.to_json``,
    every attempt of every task, errors whole) and the exit code it gave."""
    from rayline.cli.run import unusable_store
    from rayline.errors import EXIT_STORE

    view = result.view()
    code = exit_code_for(view.status.value) if view.status.terminal else None
    if view.status.value == "FAILED" and unusable_store(result) is not None:
        code = EXIT_STORE  # its output found the store's disk full or read-only
    return {**view.to_json(), "exit_code": code}


def print_run(view: Any, *, tracebacks: bool = False) -> None:
    """``rayline runs show``: the header, the task table, then each failed task's whole error
    (and, with ``tracebacks``, the traceback of its last attempt)."""
    click.echo(f"run      {view.run_id}")
    click.echo(f"flow     {view.flow}  ({view.source or 'no source recorded'})")
    click.echo(f"status   {view.status.value}")
    click.echo(f"started  {short_time(view.created_at)}"
               + (f"   ended {short_time(view.ended_at)}   took {duration_text(view.duration_s)}"
                  if view.ended_at else ""))
    if view.params:
        click.echo("params   " + ", ".join(f"{k}={v!r}" for k, v in view.params.items()))
    if view.trigger:
        click.echo("trigger  " + ", ".join(f"{k}={v}" for k, v in view.trigger.items()))
    if view.owner_pid and not view.status.terminal:
        click.echo(f"owner    pid {view.owner_pid} on {view.owner_host}")
    if view.error:
        click.echo(block("error    ", view.error))
    for w in view.warnings:
        click.echo(block("warning  ", w))
    if view.counters:
        click.echo("counters " + ", ".join(f"{k}={v:g}" for k, v in sorted(view.counters.items())))
    click.echo("")
    columns = [("node_id", "NODE"), ("status", "STATUS"), ("attempts", "ATTEMPTS"),
               ("duration", "DURATION"), ("error", "ERROR")]
    table = [{"node_id": t.node_id, "status": t.status.value, "attempts": _attempts_cell(t),
              "duration": duration_text(t.duration_s), "error": _error_cell(t)} for t in view.tasks]
    print_table(columns, table, status_key="status")
    for t in view.failed_tasks:
        click.echo(f"\n{t.node_id}: {t.status.value} after {t.attempts} attempt{'s' if t.attempts != 1 else ''}")
        click.echo(block("  ", t.error_text))
        if t.log_tail:
            click.echo(f"  last lines of its log (all: rayline logs {view.run_id} {t.node_id}):")
            click.echo("\n".join(f"  | {line}" for line in t.log_tail.splitlines()))
        if tracebacks:
            click.echo(block("  ", _traceback_of(t) or "(no traceback recorded)"))
    if view.failed_tasks and not tracebacks:
        click.echo(f"\ntracebacks: rayline runs show {view.run_id} --traceback")
    if view.status.value in ("FAILED", "CANCELLED", "INTERRUPTED"):
        click.echo(f"\nresume with: rayline resume {view.run_id}")


def _attempts_cell(task: Any) -> str:
    """``3``, or ``3 (1 PREEMPTED)`` when some attempts gave way to higher-priority work."""
    preempted = sum(1 for a in task.attempt_log if str(a.status) == "PREEMPTED")
    return f"{task.attempts} ({preempted} PREEMPTED)" if preempted else str(task.attempts)


def _error_cell(task: Any) -> str:
    """The first line of a task's error for the table (its whole error follows the table)."""
    text = task.error_text
    line = first_line(text)[:120]
    return line + " …" if line != text.strip() else line


def _traceback_of(task: Any) -> str | None:
    tracebacks = [a.traceback for a in task.attempt_log if a.traceback]
    return task.traceback or (tracebacks[-1] if tracebacks else None)
