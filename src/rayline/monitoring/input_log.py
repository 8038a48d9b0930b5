"""Served-input logging: the records of ``/predict`` requests, batched in memory and written to
Parquet by a background thread, off the request path.

Files land under the artifact URL, ``<RAYLINE_ARTIFACTS_URL>/monitor/<model>/<YYYY-MM-DD>/
part-<epoch ms>-<pid>-<n>.parquet`` (UTC date; by default the artifact folder
``<home>/artifacts``), so a replica on any node writes where the drift trigger on any host reads
(``monitor_location``). In a folder a file is written to a hidden ``.part-….tmp`` name and
renamed; on object storage it is one PUT of the whole file. Either way a reader (the drift
monitor, a ``NewData`` trigger) never sees half a file. Each row is one input record plus
``_ts`` (epoch seconds), ``_version`` and, when it is a scalar, ``_prediction``.

The request path only appends to a list (``log``); the thread flushes every
``flush_records`` records or ``flush_seconds`` seconds, whichever comes first. Past
``max_buffered`` unflushed records new ones are dropped and counted (``dropped``): logging never
slows or fails a request. ``close`` flushes what is left.

Turn it on for a deployment with ``serve_model(..., input_log=True)`` (or a dict of options:
``{"flush_records": 1000, "flush_seconds": 5, "max_buffered": 100000, "dir": "/data/monitor"}``;
``dir``, a folder or a URL, replaces ``<artifact URL>/monitor``, give the drift trigger the same
``log_dir``), with
``rayline serve MODEL --log-inputs [--log-dir PATH]``, or in a flow through
``rollout_if_promoted(..., input_log=...)``. An in-place update that does not say keeps the
logging of the version it replaces. The fallback, for every rayline replica whose deployment
does not say: ``RAYLINE_SERVE_REPLICA_ENV='{"RAYLINE_INPUT_LOG": "1"}'`` (or a JSON object of the
same options as the value of ``RAYLINE_INPUT_LOG``).
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

__all__ = ["ENV", "OPTIONS", "InputLogger", "input_log_options", "input_log_spec", "monitor_location"]

ENV = "RAYLINE_INPUT_LOG"


#: The logger options a deployment's ``input_log`` dict may set, with their types.
OPTIONS: dict[str, type | tuple[type, ...]] = {
    "flush_records": int, "flush_seconds": (int, float), "max_buffered": int, "dir": (str, Path),
}  # fmt: skip


def monitor_location(home: str | Path, model: str, log_dir: str | Path | None = None, *,
                     artifacts_url: str | None = None) -> tuple[Any, str]:  # fmt: skip
    """``(fsspec filesystem, path)`` of the logged inputs of ``model``: ``<log_dir>/<model>``
    (a folder or a URL), by default ``<artifact URL>/monitor/<model>``, the artifact URL being
    ``artifacts_url`` or the settings' (``RAYLINE_ARTIFACTS_URL``, else ``<home>/artifacts``).
    Object-storage endpoints and options come as for the artifact store
    (``RAYLINE_ARTIFACTS_OPTIONS``, ``AWS_ENDPOINT_URL``)."""
    from rayline.config import Settings
    from rayline.store.artifact_location import artifact_location

    settings = Settings(home=Path(home))
    if artifacts_url is not None:
        settings = settings.model_copy(update={"artifacts_url": artifacts_url})
    if log_dir is None:
        return artifact_location(settings, f"monitor/{model}")
    there = settings.model_copy(update={"artifacts_url": str(log_dir)})
    return artifact_location(there, model)


def input_log_spec(value: Any) -> bool | dict[str, Any] | None:
    """``serve_model``'s ``input_log`` argument, checked, as the JSON-able spec value.

    ``None`` (not said), ``True``/``False`` (on with defaults / off even where
    ``$RAYLINE_INPUT_LOG`` is set) or a mapping of ``OPTIONS`` (logging on with them; ``dir``
    made absolute).

    Raises:
        UsageError: another type, an unknown option, or an option of the wrong type.
    """
    from rayline.errors import UsageError

    if value is None or isinstance(value, bool):
        return value
    if not isinstance(value, Mapping):
        raise UsageError(f"input_log must be True, False, None or a dict of options, got {value!r}")
    out: dict[str, Any] = {}
    for key, v in value.items():
        kind = OPTIONS.get(key)
        if kind is None:
            raise UsageError(f"input_log: unknown option {key!r}; options: {', '.join(OPTIONS)}")
        if key == "dir":
            if not isinstance(v, str | Path) or not str(v).strip():
                raise UsageError(f"input_log: dir must be a folder path or a URL, got {v!r}")
            out[key] = str(v) if "://" in str(v) else str(Path(v).expanduser().absolute())
        elif isinstance(v, bool) or not isinstance(v, kind) or v <= 0:
            raise UsageError(f"input_log: {key} must be a positive number, got {v!r}")
        else:
            out[key] = v
    return out


def input_log_options(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The logger options a replica should use: the spec's ``input_log`` (``serve_model``'s
    option), else ``$RAYLINE_INPUT_LOG`` (``1``/``true`` or a JSON object); None when logging is
    off."""
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
                 max_buffered: int = 100_000, dir: str | Path | None = None,  # noqa: A002
                 artifacts_url: str | None = None) -> None:  # fmt: skip
        self.fs, self.root = monitor_location(home, model, dir, artifacts_url=artifacts_url)
        self._local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
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
        self._seq += 1
        name = f"part-{int(now.timestamp() * 1000)}-{os.getpid()}-{self._seq:05d}.parquet"
        folder = f"{self.root}/{now.strftime('%Y-%m-%d')}"
        if self._local:  # a folder: a hidden temp file, renamed
            Path(folder).mkdir(parents=True, exist_ok=True)
            tmp = Path(folder) / f".{name}.tmp"
            pq.write_table(table, tmp)
            os.replace(tmp, Path(folder) / name)
        else:  # object storage: one PUT of the whole file is atomic
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            self.fs.pipe_file(f"{folder}/{name}", sink.getvalue().to_pybytes())
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
