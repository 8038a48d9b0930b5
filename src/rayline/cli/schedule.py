"""``rayline schedule list|tick``, ``rayline scheduler`` and ``rayline trigger``.

Where schedules come from: the PATHS given (flow files with ``@flow(schedule=...)``, YAML flows
with ``schedule:``, or schedules files with a ``schedules:`` list), else
``configs/schedules.yaml`` in the current directory (see ``rayline.triggers.catalog``).

Which executor runs the started runs: Ray (``$RAY_ADDRESS``/``--address``, or a local Ray
started on demand), or, with ``--local`` or ``RAYLINE_EXECUTOR=local``, this process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from datetime import UTC, datetime
from typing import Any

import click

from rayline.errors import EXIT_BUSY, EXIT_FAILED, EXIT_OK, exit_code_for_status

log = logging.getLogger("rayline.scheduler")

_PATHS_HELP = ("PATHS are flow files (.py with @flow(schedule=...), .yaml with `schedule:`) or "
               "schedules files (YAML with a `schedules:` list); default configs/schedules.yaml.")  # fmt: skip
_LOCAL_HELP = "Run in-process without Ray (also: RAYLINE_EXECUTOR=local)."
_ADDRESS_HELP = "Ray cluster for the runs (default: $RAY_ADDRESS, or a local Ray on demand)."


def _executor(local: bool, address: str | None) -> str | None:
    env = os.environ.get("RAYLINE_EXECUTOR", "").strip().lower()
    if env not in ("", "local", "ray"):
        raise click.UsageError(f"RAYLINE_EXECUTOR={env!r}: use 'local' or 'ray'")
    chosen = "local" if local or env == "local" else None
    if chosen and address:
        raise click.UsageError("--local runs without Ray, so it cannot be combined with --address")
    return chosen


def _parse_now(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.UsageError(f"--now {text!r}: expected an ISO time such as 2026-03-08T03:00:00Z") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _iso(t: datetime | None) -> str | None:
    from rayline.triggers.trigger import iso_utc

    return iso_utc(t) if t else None


# ------------------------------------------------------------------------------ schedule
@click.group("schedule", context_settings={"help_option_names": ["-h", "--help"]})
def schedule_group() -> None:
    """Cron schedules and triggers: list them, or fire what is due now.

    \b
    Examples:
      rayline schedule list flows/churn.py
      rayline schedule list --json                 (reads configs/schedules.yaml)
      rayline schedule tick flows/churn.py --local
    \b
    A crontab line that runs every schedule in configs/schedules.yaml on time:
      * * * * * cd /srv/ml && rayline schedule tick >> /var/log/rayline.log 2>&1
    """


@schedule_group.command("list")
@click.argument("paths", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list on stdout.")
def list_cmd(paths: tuple[str, ...], as_json: bool) -> int:
    """Show each schedule and trigger, its next fire time (UTC) and its last run.

    PATHS are flow files or schedules files (default configs/schedules.yaml). A schedule never
    polled yet shows the next fire time it would have.
    """
    from rayline.errors import StoreError
    from rayline.launch.session import Session
    from rayline.store.slots import FlowSlots
    from rayline.store.trigger_states import TriggerStates
    from rayline.triggers.catalog import load_entries
    from rayline.triggers.trigger import utc_now

    entries = load_entries(paths)
    now = utc_now()
    rows = []
    with Session(executor="local") as eng:
        states, slots = TriggerStates(eng.runs), FlowSlots(eng.runs)
        for e in entries:
            rec = states.get(e.trigger_id)
            nxt = rec.next_at if rec and rec.next_at else (
                e.trigger.next_after(now) if hasattr(e.trigger, "next_after") else None)  # fmt: skip
            last = None
            if rec and rec.last_run_id:
                try:
                    r = eng.runs.get_run(rec.last_run_id)
                    last = {"run_id": r.run_id, "status": r.status.value, "created_at": _iso(r.created_at)}
                except StoreError:
                    last = {"run_id": rec.last_run_id, "status": "DELETED", "created_at": None}
            rows.append({
                "flow": e.flow_name, "kind": e.trigger.kind, "trigger": e.trigger.describe(),
                "trigger_id": e.trigger_id, "source": e.target, "overlap": e.trigger.overlap,
                "catchup": getattr(getattr(e.trigger, "catchup", None), "mode", None),
                "tz": getattr(e.trigger, "tz", None), "next_fire": _iso(nxt),
                "next_fire_local": nxt.astimezone(e.trigger.zone).isoformat() if nxt and hasattr(e.trigger, "zone") else None,
                "due": bool(nxt and nxt <= now),
                "last_fired_at": _iso(rec.last_fired_at) if rec else None, "last_run": last,
                "queued": slots.queued(e.flow_name),
            })  # fmt: skip
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return 0
    click.echo(f"{'FLOW':<18} {'KIND':<9} {'NEXT FIRE (UTC)':<21} {'OVERLAP':<8} {'LAST RUN':<34} TRIGGER")
    for r in rows:
        last = r["last_run"]
        last_s = f"{last['run_id']} {last['status']} {(last['created_at'] or '')[:19]}" if last else "-"
        nxt = (r["next_fire"] or "-")[:19] + ("Z" if r["next_fire"] else "") + (" *" if r["due"] else "")
        click.echo(f"{r['flow']:<18} {r['kind']:<9} {nxt:<21} {r['overlap']:<8} {last_s:<34} {r['trigger']}")
    if any(r["due"] for r in rows):
        click.echo("* due now: no scheduler has polled it since (rayline schedule tick, or rayline scheduler)")
    return 0


@schedule_group.command("tick")
@click.argument("paths", nargs=-1)
@click.option("--local", is_flag=True, help=_LOCAL_HELP)
@click.option("--address", metavar="ADDRESS", help=_ADDRESS_HELP)
@click.option("--now", "now_s", metavar="ISO", help="Pretend it is this time (UTC unless an offset "
              "is given), e.g. to fire a missed tick by hand.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list on stdout.")
def tick_cmd(paths: tuple[str, ...], local: bool, address: str | None, now_s: str | None, as_json: bool) -> int:
    """Start whatever is due now, wait for those runs, and exit: what system cron calls.

    Safe to run from cron every minute, and twice at once: each tick has a unique run key
    (flow, logical time), so it makes one run, and the overlap policy (default skip) keeps a
    flow from running twice at once; a skipped tick is recorded as a SKIPPED run with the
    reason. Log lines go to stderr (UTC timestamps when not a terminal), one line per fire to
    stdout.

    New-data triggers fire on the first tick after their data has held still for the debounce
    time; for latency in seconds rather than crontab minutes, run `rayline scheduler`.

    Exit codes: 0 nothing was due, or every started run succeeded (skipped ticks included);
    1 a started run failed or a due flow could not be fired; 2 a usage or definition error.
    """
    from rayline.config import Settings
    from rayline.launch.launchers import InProcessLauncher
    from rayline.triggers.catalog import load_entries
    from rayline.triggers.scheduler import Scheduler

    executor = _executor(local, address)
    now = _parse_now(now_s)
    entries = load_entries(paths)
    settings = Settings()
    launcher = InProcessLauncher(settings, executor, address)
    with Scheduler(entries, settings=settings, launcher=launcher) as sched:
        report = sched.tick(now)
    finished = dict(launcher.finished)
    rows = [{"flow": f.flow_name, "kind": f.kind, "logical_time": f.logical_time, "action": f.action,
             "run_id": f.run_id, "run_key": f.run_key, "reason": f.reason,
             "status": finished.get(f.run_id or "")} for f in report]  # fmt: skip
    extra = [r for r in finished if r not in {f.run_id for f in report}]
    if as_json:
        click.echo(json.dumps({"fired": rows, "also_started": [{"run_id": r, "status": finished[r]} for r in extra]}))
    else:
        for r in rows:
            status = f" -> {r['status']}" if r["status"] else ""
            when = f" @ {r['logical_time']}" if r["logical_time"] else ""
            click.echo(f"{r['flow']} {r['kind']}{when}: {r['action']} {r['run_id'] or ''}{status}".rstrip())
        for run_id in extra:
            click.echo(f"queued run {run_id}: started -> {finished[run_id]}")
        if not rows and not extra:
            log.info("nothing due")
    failed = any(f.action == "error" for f in report) or any(
        s not in ("SUCCEEDED", "SUCCEEDED_WITH_WARNINGS") for s in finished.values())  # fmt: skip
    return EXIT_FAILED if failed else EXIT_OK


# ----------------------------------------------------------------------------- scheduler
@click.command("scheduler", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1)
@click.option("--local", is_flag=True, help=_LOCAL_HELP)
@click.option("--address", metavar="ADDRESS", help=_ADDRESS_HELP)
@click.option("--max-sleep", default=30.0, show_default=True, help="Longest sleep between ticks (s).")
@click.option("--shutdown-timeout", default=30.0, show_default=True,
              help="On SIGINT/SIGTERM, seconds to let running runs stop (they are cancelled, "
                   "resumable) before they are killed.")
def scheduler_cmd(paths: tuple[str, ...], local: bool, address: str | None, max_sleep: float,
                  shutdown_timeout: float) -> int:  # fmt: skip
    """Run schedules and triggers until stopped (SIGINT or SIGTERM: exits 0).

    Sleeps until the next fire time, fires what is due, and starts each run in a child
    process; new-data triggers poll every second by default. State (last fire, next fire in
    UTC) lives in the run store, so a restart carries on where it stopped, applying each
    schedule's catch-up policy to ticks missed meanwhile.
    """
    from rayline.config import Settings
    from rayline.launch.launchers import ProcessLauncher
    from rayline.triggers.catalog import load_entries
    from rayline.triggers.scheduler import Scheduler

    executor = _executor(local, address)
    entries = load_entries(paths)
    settings = Settings()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        launcher = ProcessLauncher(settings, local=executor == "local", address=address)
        with Scheduler(entries, settings=settings, launcher=launcher) as sched:
            sched.run_forever(stop, max_sleep=max_sleep, shutdown_timeout=shutdown_timeout)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


# ------------------------------------------------------------------------------- trigger
@click.command("trigger", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", metavar="FLOW_PATH[:FLOW]")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A flow parameter (VALUE read as YAML), as for `rayline run`.")
@click.option("--reason", default="manual trigger", show_default=True, help="Why: recorded on the run.")
@click.option("--key", help="Idempotency key: a second trigger with the same key returns the first run.")
@click.option("--overlap", type=click.Choice(["skip", "queue", "allow"]),
              help="Default: the policy of the flow's declared schedule, else skip.")
@click.option("--local", is_flag=True, help=_LOCAL_HELP)
@click.option("--address", metavar="ADDRESS", help=_ADDRESS_HELP)
@click.option("--no-wait", is_flag=True, help="Start the run in the background and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def trigger_cmd(target: str, params: tuple[str, ...], reason: str, key: str | None, overlap: str | None,
                local: bool, address: str | None, no_wait: bool, as_json: bool) -> int:  # fmt: skip
    """Fire a flow by hand, recording why (kind manual, reason, user, host) on its run.

    As with `rayline run`, the run goes through the flow's overlap policy: if a run of the flow
    is going, it is skipped (exit 3) or queued and run when the slot frees.

    \b
    Examples:
      rayline trigger flows/churn.py --reason "relabelled October"
      rayline trigger flows/train.py:train -p lr=0.01 --key oct-relabel --local

    Exit codes: 0 the run succeeded (or was queued/started with --no-wait, or the key's run
    exists and did not fail); 1 it failed; 2 usage or definition error; 3 skipped (busy);
    130 cancelled.
    """
    from rayline.cli.run import absolute_target, parse_params
    from rayline.launch.flow_files import load_flow_file
    from rayline.triggers.manual import trigger_flow

    executor = _executor(local, address)
    target = absolute_target(target)
    flow_file = load_flow_file(target)  # loaded once: trigger_flow plans this graph
    values = parse_params(params, flow_file.graph)
    result = trigger_flow(flow_file, values, reason=reason, key=key, overlap=overlap, executor=executor,
                          address=address, wait=not no_wait)  # fmt: skip
    got, run = result.reservation, result.run
    status = run.status.value if run is not None else None
    out = {"action": got.action, "run_id": got.run_id, "status": status, "reason": got.reason or reason}
    if as_json:
        click.echo(json.dumps(out))
    else:
        line = f"{got.action} run {got.run_id}" if got.run_id else got.action
        click.echo(f"{line}{f' -> {status}' if status else ''}{f': {got.reason}' if got.reason else ''}")
    if got.action == "skipped" or status == "SKIPPED":
        return EXIT_BUSY
    if status is None or status in ("PENDING", "RUNNING"):
        return EXIT_OK
    return exit_code_for_status(status)
