"""``rayline logs RUN_ID [NODE]``: what the tasks of a run printed, from the logs kept with the
run under the artifact store (``store/task_logs.py``); ``--follow`` tails them while it runs."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from rayline.store.task_logs import LogPart, TaskLogs, split_cut

FOLLOW_POLL_S = 0.5


@click.command("logs", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_id")
@click.argument("node", required=False)
@click.option("--attempt", "-a", type=click.IntRange(min=1), help="Only this attempt (1, 2, …).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output while the run is "
              "RUNNING; end when it ends.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: a list of {node_id, attempt, "
              "log, text}; with --follow, one object per line as output arrives.")
def logs_cmd(run_id: str, node: str | None, attempt: int | None, follow: bool, as_json: bool) -> int:
    """Print what the tasks of a run printed (stdout and stderr of every attempt).

    Without NODE, every task's logs in the order the tasks started, each under a
    `==> node (attempt N) <==` line; with NODE, that task's. Logs are kept with the run (under
    the artifact store), capped per attempt at RAYLINE_TASK_LOG_LIMIT bytes (default 1 MiB,
    head and tail kept), and readable after the driver died. RUN_ID may be a unique prefix.

    \b
    Examples:
      rayline logs 1a2b3c
      rayline logs 1a2b3c train --attempt 2
      rayline logs 1a2b3c --follow
      rayline logs 1a2b3c train --json | jq -r '.[].text'
    """
    from rayline.errors import UsageError
    from rayline.launch.session import Session

    with Session(executor="local") as session:
        record = session.find_run(run_id)
        session.interrupt_if_stale(record)
        run_id = record.run_id
        logs = TaskLogs(session.artifacts)
        order = _task_order(session.runs.get_tasks(run_id))
        if node is not None and node not in order and node not in logs.nodes(run_id):
            known = ", ".join(order) or "none"
            raise UsageError(f"run {run_id} has no task '{node}' (tasks: {known})")
        if follow:
            return _follow(session, run_id, logs, node, attempt, as_json=as_json)
        nodes = [node] if node is not None else _ordered(order, logs.nodes(run_id))
        parts = logs.parts(run_id, nodes, attempt)
    if as_json:
        click.echo(json.dumps([_part_json(logs, run_id, p) for p in parts]))
        return 0
    if not parts:
        what = f"task '{node}'" if node else "any task"
        click.echo(f"no logs recorded for {what} of run {run_id}"
                   + (f" (attempt {attempt})" if attempt else ""), err=True)  # fmt: skip
        return 0
    headed = node is None or len(parts) > 1
    for p in parts:
        if headed:
            click.echo(f"==> {p.node_id} (attempt {p.attempt}) <==" if node is None
                       else f"--- attempt {p.attempt} ---")  # fmt: skip
        click.echo(p.text, nl=not p.text.endswith("\n"))
    return 0


def _task_order(tasks: list[Any]) -> list[str]:
    """Node ids in the order the tasks started (those not started last, in record order)."""
    indexed = list(enumerate(tasks))
    indexed.sort(key=lambda it: (it[1].started_at is None, it[1].started_at or 0, it[0]))
    return [t.node_id for _, t in indexed]


def _ordered(order: list[str], with_logs: list[str]) -> list[str]:
    have = set(with_logs)
    return [n for n in order if n in have] + [n for n in with_logs if n not in set(order)]


def _part_json(logs: TaskLogs, run_id: str, p: LogPart) -> dict[str, Any]:
    return {"node_id": p.node_id, "attempt": p.attempt, "log": logs.location(run_id, p.node_id, p.attempt),
            "text": p.text}  # fmt: skip


def new_output(data: bytes, offset: int) -> tuple[bytes, int]:
    """What a log holds past byte ``offset`` of what the task wrote, and the new offset.

    A capped log keeps its head and tail: bytes that fell into the cut are replaced by one line
    saying how many were lost."""
    head, cut, tail = split_cut(data)
    if not cut:
        return (data[offset:], len(data)) if len(data) > offset else (b"", offset)
    tail_start = len(head) + cut
    out = b""
    if offset < len(head):
        out, offset = head[offset:], len(head)
    if offset < tail_start:
        out += f"\n[rayline: {tail_start - offset} bytes of this log were cut (RAYLINE_TASK_LOG_LIMIT)]\n".encode()
        offset = tail_start
    out += tail[offset - tail_start:]
    return out, max(offset, tail_start + len(tail))


def _follow(session: Any, run_id: str, logs: TaskLogs, node: str | None, attempt: int | None,
            *, as_json: bool) -> int:  # fmt: skip
    """Print new output of the run's logs until the run has ended (then once more)."""
    offsets: dict[tuple[str, int], int] = {}
    pending: dict[tuple[str, int], str] = {}
    prefixed = node is None
    while True:
        record = session.runs.get_run(run_id)
        if session.interrupt_if_stale(record):
            record = session.runs.get_run(run_id)
        ended = record.status.terminal
        for n in [node] if node is not None else _ordered(_task_order(session.runs.get_tasks(run_id)),
                                                           logs.nodes(run_id)):  # fmt: skip
            for k in logs.attempts(run_id, n):
                if attempt is not None and k != attempt:
                    continue
                key = (n, k)
                data = logs.read_bytes(run_id, n, k)
                if data is None:
                    continue
                if key not in offsets and not prefixed and offsets and not as_json:
                    click.echo(f"--- attempt {k} ---")
                chunk, offsets[key] = new_output(data, offsets.get(key, 0))
                if chunk:
                    _emit(key, chunk.decode("utf-8", errors="replace"), pending, prefixed, as_json)
        if ended:
            break
        time.sleep(FOLLOW_POLL_S)
    for key, rest in pending.items():
        if rest:
            click.echo(f"{key[0]}#{key[1]} | {rest}" if prefixed else rest)
    return 0


def _emit(key: tuple[str, int], text: str, pending: dict[tuple[str, int], str], prefixed: bool,
          as_json: bool) -> None:  # fmt: skip
    if as_json:
        click.echo(json.dumps({"node_id": key[0], "attempt": key[1], "text": text}))
        return
    if not prefixed:
        click.echo(text, nl=False)
        return
    text = pending.pop(key, "") + text
    *lines, rest = text.split("\n")
    for line in lines:
        click.echo(f"{key[0]}#{key[1]} | {line}")
    pending[key] = rest
