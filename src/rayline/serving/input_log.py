"""Served-input logging: the records of ``/predict`` requests, batched in memory and written to
Parquet by a background thread, off the request path.

Files land under ``<home>/monitor/<model>/<YYYY-MM-DD>/part-<epoch ms>-<pid>-<n>.parquet``
(UTC date), written to a hidden ``.part-….tmp`` name and renamed, so a reader (the drift
monitor, a ``NewData`` trigger) never sees half a file. Each row is one input record plus
``_ts`` (epoch seconds), ``_version`` and, when it is a scalar, ``_prediction``.

The request path only appends to a list (``log``); the thread flushes every
``flush_records`` records or ``flush_seconds`` seconds, whichever comes first. Past
``max_buffered`` unflushed records new ones are dropped and counted (``dropped``): logging never
slows or fails a request. ``close`` flushes what is left.

Turn it on for a deployment with the spec key ``input_log`` (``True`` or
``{"flush_records": 1000, "flush_seconds": 5}``) or, for every rayline replica, with
``RAYLINE_SERVE_REPLICA_ENV='{"RAYLINE_INPUT_LOG": "1"}'`` (or a JSON object of the same options).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["ENV", "InputLogger", "input_log_options", "monitor_dir"]

ENV = "RAYLINE_INPUT_LOG"


def monitor_dir(home: str | Path, model: str) -> Path:
    """``<home>/monitor/<model>``: where the logged inputs of ``model`` are."""
    return Path(home) / "monitor" / model


def input_log_options(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The logger options a replica should use: the spec's ``input_log``, else ``$RAYLINE_INPUT_LOG``
    (``1``/``true`` or a JSON object); None when logging is off."""
    value: Any = spec.get("input_log")
    if value is None:
        raw = os.environ.get(ENV, "").strip()
        if not raw or raw.lower() in ("0", "false", "no", "off"):
            return None
        value = json.loads(raw) if raw.startswith("{") else True
    if value is False:
        return None
    return dict(value) if isinstance(value, Mapping) else {}


class InputLogger:
    """Buffers records and writes them to Parquet from a daemon thread (see the module docstring)."""

    def __init__(self, home: str | Path, model: str, version: int | None = None, *,
                 flush_records: int = 1000, flush_seconds: float = 5.0,
                 max_buffered: int = 100_000) -> None:  # fmt: skip
        self.root = monitor_dir(home, model)
        self.version = version
        self.flush_records, self.flush_seconds = int(flush_records), float(flush_seconds)
        self.max_buffered = int(max_buffered)
        self.logged = self.dropped = self.written_files = 0
        self._buf: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._seq = 0
        self._thread = threading.Thread(target=self._run, name=f"rayline-input-log-{model}", daemon=True)
        self._thread.start()

    def log(self, records: Sequence[Mapping[str, Any]], predictions: Sequence[Any] | None = None) -> None:
        """Queue ``records`` (and their predictions) for the next file; never raises, never blocks
        on I/O."""
        try:
            now = time.time()
            rows = []
            for i, r in enumerate(records):
                row = {**r, "_ts": now, "_version": self.version}
                if predictions is not None and i < len(predictions):
                    p = predictions[i]
                    if isinstance(p, int | float | str | bool):
                        row["_prediction"] = p
                rows.append(row)
            with self._lock:
                room = self.max_buffered - len(self._buf)
                if room < len(rows):
                    self.dropped += len(rows) - max(room, 0)
                    rows = rows[: max(room, 0)]
                self._buf.extend(rows)
                self.logged += len(rows)
                full = len(self._buf) >= self.flush_records
            if full:
                self._wake.set()
        except Exception as exc:  # logging must never fail a request
            log.debug("input log: %s", exc)

    def flush(self) -> int:
        """Write what is buffered now; the number of rows written."""
        with self._lock:
            rows, self._buf = self._buf, []
        if not rows:
            return 0
        try:
            self._write(rows)
        except Exception as exc:  # a full disk must not take the replica down
            self.dropped += len(rows)
            log.warning("input log: could not write %d rows under %s: %s", len(rows), self.root, exc)
            return 0
        return len(rows)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # records of mixed shapes: keep them as JSON
            table = pa.table({"_record": [json.dumps(r, default=str) for r in rows],
                              "_ts": [r["_ts"] for r in rows]})  # fmt: skip
        now = datetime.now(UTC)
        folder = self.root / now.strftime("%Y-%m-%d")
        folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = f"part-{int(now.timestamp() * 1000)}-{os.getpid()}-{self._seq:05d}.parquet"
        tmp = folder / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, folder / name)
        self.written_files += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and write what is left."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self.flush()

    def stats(self) -> dict[str, Any]:
        return {"logged": self.logged, "dropped": self.dropped, "files": self.written_files,
                "dir": str(self.root)}  # fmt: skip
