"""``rayline run`` and ``rayline resume``: drive a run through ``rayline.api`` (and so through
``rayline.launch``) with a live progress display on stderr, then print a summary (or one JSON
object) on stdout."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from rayline.cli.output import block, counts_text, first_line
from rayline.cli.progress import make_progress
from rayline.display.time_text import format_seconds
from rayline.errors import EXIT_BUSY, EXIT_STORE, StoreUnusableError
from rayline.errors import exit_code_for_status as exit_code_for


# ---------------------------------------------------------------------------- commands
@click.command("run", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", metavar="PATH[:FLOW]")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A flow parameter. VALUE is read as YAML (5 is an int, 0.1 a float, true a "
                   "bool, [1, 2] a list) and then converted to the parameter's annotation; a "
                   "value that does not convert (true for an int) is refused (exit 2). "
                   "secret:NAME passes a reference to the secret NAME (an environment variable "
                   "or a file in RAYLINE_SECRETS_DIR where the task runs), never its value.")
@click.option("--set", "sets", multiple=True, metavar="NODE.OPTION=VALUE",
              help="Override a task option for one node id or task name, e.g. train.retries=3 "
                   "or train.gpus=1.")
@click.option("--address", metavar="ADDRESS", help="Ray cluster to run on (default: $RAY_ADDRESS, "
              "or a local Ray started on demand).")
@click.option("--local", is_flag=True, help="Run in this process without Ray (debugging, tests).")
@click.option("--overlap", type=click.Choice(["skip", "queue", "allow"]),
              help="While another run of the flow is going: skip (exit 3), queue (wait for it) or "
                   "allow (run anyway). Default: the policy of the flow's declared schedule, else skip.")
@click.option("--queue", metavar="NAME", help="The admission queue to wait in (declared in the "
              "file $RAYLINE_QUEUES names); default: the flow's own, else 'default'.")
@click.option("--priority", type=int, help="Admission priority, higher first; default: the flow's "
              "own, else its queue's.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout, nothing else.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display on stderr.")
def run_cmd(target: str, params: tuple[str, ...], sets: tuple[str, ...], address: str | None,
            local: bool, overlap: str | None, queue: str | None, priority: int | None, as_json: bool,
            quiet: bool) -> int:
    """Run a flow and wait for it to finish.

    PATH is a Python file with a @flow (add :FLOW when it holds several) or a YAML flow file.
    Progress goes to stderr; a summary (or, with --json, one JSON object) to stdout. A failed
    run can be resumed with `rayline resume RUN_ID`.

    The run holds the flow's slot in the run store, so overlapping invocations (say, from
    system cron) never run the same flow twice at once: with the overlap policy skip (the
    default) an invocation that finds a run of the flow going records a SKIPPED run, says
    which run holds the slot, and exits 3 without running anything. A killed run's slot is
    taken over once its lease expires.

    \b
    Exit codes: 0 succeeded, 1 failed, 2 definition or usage error (a -p value
    of the wrong type too), 3 skipped (the flow was busy), 4 the store cannot be used,
    130 cancelled.

    \b
    Examples:
      rayline run flows/hello.py -p scale=3
      rayline run pipeline.py:train -p lr=0.01 --set train.retries=3
      rayline run configs/churn.yaml --address ray://head:10001 --json
    """
    from rayline import api
    from rayline.launch.admission import choose_overlap
    from rayline.launch.flow_files import load_flow_file

    if local and address:
        raise click.UsageError("--local runs without Ray, so it cannot be combined with --address")
    target = absolute_target(target)
    flow_file = load_flow_file(target)  # loaded once: the graph and its declared overlap
    graph = flow_file.graph
    if queue is not None or priority is not None:
        graph = dataclasses.replace(graph, queue=queue or graph.queue,
                                    priority=graph.priority if priority is None else priority)  # fmt: skip
    values = parse_params(params, graph)
    overrides = parse_sets(sets)
    policy = choose_overlap(overlap, flow_file.declared_overlap)
    executor = "local" if local else None
    started = time.monotonic()
    with json_stdout(as_json) as out:
        with make_progress(enabled=not quiet) as progress:
            result = api.run(graph, values, executor=executor, address=address, overlap=policy,
                             overrides=overrides or None, on_event=progress.on_event)
        if result.status.value == "SKIPPED" and (result.record.trigger or {}).get("held_by"):
            return report_skipped(result, as_json, out)  # the flow was busy; not context.skip()
        return report(result, time.monotonic() - started, as_json, resume_flags(local, address), out)


@click.command("resume", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_id")
@click.option("--address", metavar="ADDRESS", help="Ray cluster to run on (default: $RAY_ADDRESS, "
              "or a local Ray started on demand).")
@click.option("--local", is_flag=True, help="Run in this process without Ray (debugging, tests).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout, nothing else.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display on stderr.")
def resume_cmd(run_id: str, address: str | None, local: bool, as_json: bool, quiet: bool) -> int:
    """Resume a failed, cancelled or interrupted run.

    Tasks that succeeded (and whose stored outputs still verify) are adopted; only the rest
    run again, with the run's original parameters. RUN_ID may be a unique prefix. A run that
    `rayline run`, a schedule or a trigger started takes its flow's slot back: while another
    run of the flow is going, or while another process is resuming this run, nothing is
    resumed and the exit code is 3. A run killed before it started is resumed like any
    other. Output and exit codes are otherwise as for `rayline run`.

    \b
    Examples:
      rayline resume 1a2b3c4d
      rayline resume 1a2b --address ray://head:10001 --json
    """
    from rayline import api
    from rayline.errors import FlowBusyError, RunBusyError
    from rayline.launch.session import Session

    if local and address:
        raise click.UsageError("--local runs without Ray, so it cannot be combined with --address")
    with Session(executor="local") as session:
        run_id = session.find_run(run_id).run_id  # an unknown or ambiguous id is a usage error
    started = time.monotonic()
    with json_stdout(as_json) as out:
        try:
            with make_progress(enabled=not quiet) as progress:
                result = api.resume(run_id, executor="local" if local else None, address=address,
                                    on_event=progress.on_event)
        except (FlowBusyError, RunBusyError) as exc:  # nothing was resumed: exit 3
            if not as_json:
                raise
            doc = {"run_id": run_id, "resumed": False, "reason": str(exc), "held_by": exc.held_by}
            click.echo(json.dumps(doc), file=out)
            return exc.exit_code
        return report(result, time.monotonic() - started, as_json, resume_flags(local, address), out)


@contextlib.contextmanager
def json_stdout(as_json: bool) -> Iterator[TextIO | None]:
    """With ``--json``, stdout is reserved for the one JSON object: whatever else writes to
    ``sys.stdout`` meanwhile (a task's print in-process, Ray's forwarded worker logs) goes to
    stderr. Yields the real stdout to write the object to.

    Ray forwards worker output from a thread, so lines can arrive after the run has ended: a
    Ray session that this command started is shut down before stdout is restored.
    """
    if not as_json:
        yield None
        return
    ray_was_up = _ray_initialized()
    real = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield real
    finally:
        try:
            if not ray_was_up and _ray_initialized():
                import ray

                ray.shutdown()
        finally:
            sys.stdout = real


def _ray_initialized() -> bool:
    ray = sys.modules.get("ray")  # never import Ray just to ask
    return bool(ray is not None and getattr(ray, "is_initialized", lambda: False)())


# ---------------------------------------------------------------------------- parsing
def absolute_target(target: str) -> str:
    """``path[:flow]`` with the path made absolute, so the recorded source resumes from any
    directory."""
    if Path(target).exists():
        return str(Path(target).resolve())
    path_s, sep, attr = target.partition(":")
    if not Path(path_s).exists():
        return target  # load_flow reports the missing file
    return f"{Path(path_s).resolve()}{sep}{attr}"


def parse_params(items: tuple[str, ...], graph: Any) -> dict[str, Any]:
    """``-p name=value`` pairs, each converted strictly to its parameter's annotation
    (``rayline.launch.params``): a value that does not convert is a usage error (exit 2)."""
    from rayline.launch.params import parse_param_text

    raw: dict[str, str] = {}
    for item in items:
        name, value = _split_assignment(item, "-p", "NAME=VALUE")
        raw[name] = value
    return parse_param_text(graph, raw)


def parse_sets(items: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``--set node.option=value`` pairs into ``{"node": {"option": value}}``."""
    from rayline.launch.params import yaml_value

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, value = _split_assignment(item, "--set", "NODE.OPTION=VALUE")
        node, dot, option = key.rpartition(".")
        if not dot or not node or not option:
            raise click.UsageError(
                f"--set {item!r}: expected NODE.OPTION=VALUE (a node id or task name, a dot, "
                "an option), e.g. --set train.retries=3"
            )
        out.setdefault(node, {})[option] = yaml_value(value)
    return out


def _split_assignment(item: str, flag: str, form: str) -> tuple[str, str]:
    name, eq, value = item.partition("=")
    name = name.strip()
    if not eq or not name:
        raise click.UsageError(f"{flag} {item!r}: expected {form}, e.g. {flag} n=5")
    return name, value


# ---------------------------------------------------------------------------- reporting
def resume_flags(local: bool, address: str | None) -> str:
    if local:
        return " --local"
    return f" --address {address}" if address else ""


def report(result: Any, seconds: float, as_json: bool, flags: str = "", out: TextIO | None = None) -> int:
    """Print the outcome of a run (summary or JSON) and return the exit code."""
    status = result.status.value
    if as_json:
        click.echo(json.dumps(run_json(result), default=str), file=out)
    else:
        click.echo(summary(result, seconds, flags), file=out)
    unusable = unusable_store(result) if status == "FAILED" else None
    if unusable is not None:  # the run failed because the store's disk refused its output
        click.echo(f"error: the store cannot be used: {unusable}", err=True)
        return EXIT_STORE
    return exit_code_for(status)


_UNUSABLE = f"{StoreUnusableError.__module__}.{StoreUnusableError.__qualname__}"


def unusable_store(result: Any) -> str | None:
    """Why the store could not take a failed task's output (full, read-only disk), else None."""
    for t in result.tasks:
        if t.error_type == _UNUSABLE:
            return " ".join((t.error_message or "").split())  # one line
    return None


def report_skipped(result: Any, as_json: bool, out: TextIO | None = None) -> int:
    """One line (or JSON object) for a run that was skipped because its flow was busy."""
    held_by = (result.record.trigger or {}).get("held_by")
    if as_json:
        doc = {**run_json(result), "reason": result.error, "held_by": held_by}
        click.echo(json.dumps(doc, default=str), file=out)
    else:
        click.echo(f"run {result.run_id} ({result.flow_name}): SKIPPED, nothing ran: {result.error}", file=out)
    return EXIT_BUSY


def run_json(result: Any) -> dict[str, Any]:
    """What ``rayline run|resume --json`` print: the outcome of the run's ``RunView``."""
    return result.view().outcome()


def summary(result: Any, seconds: float, flags: str = "") -> str:
    """What ``rayline run`` prints when a run ends: status, task counts, the whole error,
    warnings, the result or the command that resumes."""
    view = result.view()
    status = view.status.value
    lines = [
        f"run {view.run_id} ({view.flow}): {status} in {format_seconds(seconds)}",
        f"  tasks: {counts_text(view.counts, ', ') or 'none'}",
    ]
    if view.error:
        lines.append(block("  error: ", view.error))
    if view.warnings:
        lines.append(f"  warnings: {len(view.warnings)}")
        lines += [f"    - {first_line(w)}" for w in view.warnings[:5]]
        if len(view.warnings) > 5:
            lines.append(f"    … {len(view.warnings) - 5} more: rayline runs show {view.run_id}")
    if status in ("SUCCEEDED", "SUCCEEDED_WITH_WARNINGS"):
        shown = _result_preview(result)
        if shown is not None:
            lines.append(f"  result:  {shown}")
        lines.append(f"  outputs: stored under {view.artifact_root}; load them with "
                     f"rayline.load_run({view.run_id!r}).result()")
        lines.append(f"  details: rayline runs show {view.run_id}")
    else:
        lines.append(f"  details: rayline runs show {view.run_id}")
        if view.failed_tasks:
            lines.append(f"  traceback: rayline runs show {view.run_id} --traceback")
        lines.append(f"  resume:  rayline resume {view.run_id}{flags}")
    return "\n".join(lines)


def _result_preview(run: Any, limit: int = 200) -> str | None:
    """A one-line repr of the flow's result when it is small (never a failure of the summary)."""
    try:
        text = repr(run.result())
    except Exception:
        return None
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
