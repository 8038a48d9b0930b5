"""Progress of a run on stderr, fed by the runner's ``on_event(kind, data)`` callback.

The callback can fire thousands of times a second, so it only updates counters; drawing happens
elsewhere, at a bounded rate:

- on a terminal, a rich ``Live`` display (a done/total bar and a table of running and failed
  tasks, each error's first line) that rich redraws from its own thread at most 8 times a second;
- otherwise (cron, CI, pipes), plain timestamped lines: the start, one line per failed task and
  per retry (a multi-line error follows it whole, indented), a progress line every ~10 s for
  long runs, and the final line.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, TextIO

log = logging.getLogger("rayline.cli")

_FAILED = ("FAILED", "UPSTREAM_FAILED", "CANCELLED", "INTERRUPTED")


def make_progress(enabled: bool = True, stream: TextIO | None = None) -> Progress:
    """The display that fits stderr: live on a terminal, plain lines otherwise."""
    if not enabled:
        return Progress()
    stream = stream or sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return LiveProgress(stream) if tty else LineProgress(stream)


def utc_stamp(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Progress:
    """Counts what the runner reports; shows nothing (``--quiet``). Subclasses draw."""

    def __init__(self) -> None:
        self.run_id = ""
        self.flow = ""
        self.total = 0
        self.done = 0
        self.adopted = 0
        self.counts: dict[str, int] = {}
        self.running: dict[str, float] = {}  # node id -> monotonic start
        self.failed: dict[str, str] = {}  # node id -> "STATUS: error line"
        self.status: str | None = None
        self.error: str | None = None
        self.started = time.monotonic()

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """The runner's callback. A display problem must never fail the run, so nothing
        raised here escapes."""
        try:
            self._count(kind, data)
        except Exception as exc:
            log.debug("progress display ignored %s event: %s", kind, exc)

    # Counters only, no drawing, no I/O on the common path.
    def _count(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "task_finished":
            nid = data["node_id"]
            status = str(data["status"])
            self.running.pop(nid, None)
            self.done += 1
            self.counts[status] = self.counts.get(status, 0) + 1
            meta = data.get("meta") or {}
            if meta.get("attempts") and len(meta["attempts"]) > 1:
                self.retried(nid, meta["attempts"])
            if meta.get("warnings"):
                self.warned(nid, meta["warnings"])
            if status in _FAILED and status != "UPSTREAM_FAILED":  # those are counted only
                self.failed[nid] = f"{status}: {_error_of(meta)}"
                self.task_failed(nid, status, meta)
        elif kind == "task_started":
            self.running[data["node_id"]] = time.monotonic()
        elif kind == "tasks_added":  # the items of a map, known once its input is
            self.total += len(data["node_ids"])
        elif kind == "run_started":
            self.run_id = data["run_id"]
            plan = data.get("plan")
            self.flow = getattr(getattr(plan, "graph", None), "name", "") or ""
            self.total = len(getattr(plan, "nodes", ()) or ())
            self.adopted = len(data.get("adopted") or ())
            self.done = self.adopted
            if self.adopted:
                self.counts["ADOPTED"] = self.adopted
            self.started = time.monotonic()
            self.run_started()
        elif kind == "queued":  # admission: this run's ready work waits for its turn
            self.queued(str(data.get("message", "")))
        elif kind == "run_finished":
            self.status = str(data["status"])
            self.error = data.get("error")
            self.run_finished()

    # Hooks for the displays.
    def run_started(self) -> None:
        pass

    def task_failed(self, node_id: str, status: str, meta: dict[str, Any]) -> None:
        pass

    def retried(self, node_id: str, attempts: list[dict[str, Any]]) -> None:
        pass

    def warned(self, node_id: str, warnings: list[str]) -> None:
        pass

    def queued(self, message: str) -> None:
        pass

    def run_finished(self) -> None:
        pass

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def counts_text(self) -> str:
        return ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.counts.items(), key=lambda kv: -kv[1]))


class LineProgress(Progress):
    """Plain timestamped lines for logs: ``2026-11-22T17:00:01Z run 1a2b3c started: ...``."""

    def __init__(self, stream: TextIO, interval: float = 10.0):
        super().__init__()
        self.stream = stream
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def line(self, text: str, more: str = "") -> None:
        """One timestamped line; ``more`` (the rest of an error, every line) follows it,
        indented under the text so that each event still starts with a stamp."""
        stamp = utc_stamp()
        rest = "".join(f"{' ' * (len(stamp) + 3)}{line}\n" for line in more.splitlines())
        with self._lock:
            self.stream.write(f"{stamp} {text}\n{rest}")
            self.stream.flush()

    def run_started(self) -> None:
        adopted = f" ({self.adopted} adopted from the previous attempt)" if self.adopted else ""
        self.line(f"run {self.run_id} started: flow {self.flow}, {self.total} tasks{adopted}")

    def task_failed(self, node_id: str, status: str, meta: dict[str, Any]) -> None:
        first, more = _split(_error_of(meta))
        self.line(f"run {self.run_id} task {node_id} {status}: {first}", more)

    def retried(self, node_id: str, attempts: list[dict[str, Any]]) -> None:
        for a in attempts[:-1]:
            if a.get("status") != "FAILED":
                continue
            wait = f"; retried after {a['retry_in']:g} s" if a.get("retry_in") is not None else "; retried"
            first, more = _split(_attempt_error(a))
            self.line(f"run {self.run_id} task {node_id} attempt {a.get('attempt')} failed: {first}{wait}", more)

    def warned(self, node_id: str, warnings: list[str]) -> None:
        for w in warnings:
            first, more = _split(str(w))
            self.line(f"run {self.run_id} task {node_id} warning: {first}", more)

    def queued(self, message: str) -> None:
        self.line(f"run {self.run_id} {message}")

    def run_finished(self) -> None:
        took = time.monotonic() - self.started
        first, more = _split(self.error or "")
        tail = f": {first}" if first else ""
        self.line(f"run {self.run_id} {self.status} in {took:.1f} s ({self.counts_text() or 'no tasks'}){tail}", more)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            if self.run_id and self.status is None:
                self.line(f"run {self.run_id} progress: {self.done}/{self.total} done, "
                          f"{len(self.running)} running, {len(self.failed)} failed "
                          f"({time.monotonic() - self.started:.0f} s)")

    def __enter__(self) -> LineProgress:
        self._ticker = threading.Thread(target=self._tick, name="rayline-progress", daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=1)


class LiveProgress(Progress):
    """A rich ``Live`` display on stderr, redrawn by rich's thread at most 8 times a second."""

    MAX_ROWS = 12

    def __init__(self, stream: TextIO):
        super().__init__()
        self.stream = stream
        self._live: Any = None

    def __enter__(self) -> LiveProgress:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self.stream)
        self._live = Live(get_renderable=self.render, console=console, refresh_per_second=8,
                          transient=False, redirect_stdout=False, redirect_stderr=True)
        self._live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.stop()  # draws the final state once more

    def render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        running = self.running.copy()  # dict.copy is atomic under the GIL: safe across threads
        failed = self.failed.copy()
        elapsed = time.monotonic() - self.started
        if not self.run_id:
            return Text("starting…", style="dim")
        state = self.status or "RUNNING"
        style = {"SUCCEEDED": "green", "SUCCEEDED_WITH_WARNINGS": "yellow", "FAILED": "red",
                 "CANCELLED": "yellow"}.get(state, "cyan")
        head = Text.assemble(("run ", "dim"), (self.run_id, "bold"), f"  {self.flow}  ",
                             (state, style), f"  {self.done}/{self.total} done  {elapsed:.0f} s")
        bar = ProgressBar(total=max(self.total, 1), completed=self.done, width=None)
        parts: list[Any] = [head, bar]
        if running or failed:
            table = Table(box=None, show_header=True, header_style="dim", pad_edge=False)
            table.add_column("task")
            table.add_column("state")
            table.add_column("", overflow="ellipsis", no_wrap=True, max_width=80)
            now = time.monotonic()
            rows = 0
            for nid, err in list(failed.items())[: self.MAX_ROWS]:
                st, _, msg = err.partition(": ")
                table.add_row(nid, Text(st, style="red"), _split(msg)[0])
                rows += 1
            for nid, t0 in sorted(running.items(), key=lambda kv: kv[1])[: max(self.MAX_ROWS - rows, 0)]:
                table.add_row(nid, Text("RUNNING", style="cyan"), f"{now - t0:.0f} s")
                rows += 1
            hidden = len(running) + len(failed) - rows
            parts.append(table)
            if hidden > 0:
                parts.append(Text(f"… and {hidden} more", style="dim"))
        return Group(*parts)


def _error_of(meta: dict[str, Any]) -> str:
    attempts = meta.get("attempts") or []
    if not attempts:
        return meta.get("error_message") or "no error recorded"
    return _attempt_error(attempts[-1])


def _attempt_error(a: dict[str, Any]) -> str:
    """``Kind: the whole message`` of one attempt."""
    msg = (a.get("error_message") or "").strip()
    kind = a.get("error_type") or "error"
    return f"{kind}: {msg}" if msg else kind


def _split(text: str) -> tuple[str, str]:
    """(first line, the other lines) of a message."""
    first, _, more = str(text).strip().partition("\n")
    return first, more
