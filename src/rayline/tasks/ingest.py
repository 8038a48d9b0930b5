"""Ingest tasks: validate Parquet input once, hand a small ``ParquetSource`` downstream.

The task reads footers, not data: every downstream task (features, training workers) streams
its rows straight from storage. Problems with the data end the run before anything trains:
corrupt files (or quarantine them), schema drift against the contract, and empty input.

Example::

    from rayline import flow, task
    from rayline.tasks import read_parquet

    @task
    def train(source):
        for batch in source.iter_batches(65_536):
            ...

    @flow
    def nightly(path: str = "s3://bucket/events/"):
        src = read_parquet(path, columns=["age", "label"], filter=[("age", ">", 17)],
                           schema={"age": "int64", "label": "float32"},
                           on_bad_file="quarantine", incremental=True, on_empty="skip")
        return train(src)
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from rayline import context
from rayline.connectors import parquet
from rayline.connectors.parquet import ParquetSource
from rayline.sdk.task import task


@task(cpus=1, retries=0, worker_retries=0, name="read_parquet")
def read_parquet(
    path: str,
    *,
    columns: Sequence[str] | None = None,
    filter: Any = None,  # noqa: A002 - the documented keyword
    schema: pa.Schema | Mapping[str, Any] | None = None,
    on_bad_file: str = "fail",
    incremental: bool = False,
    on_empty: str = "fail",
    schema_evolution: str = "additive",
    storage_options: Mapping[str, Any] | None = None,
) -> ParquetSource:
    """Validate Parquet input and return a ``ParquetSource`` (no rows are loaded).

    Args:
        path: a file, a folder, a hive-partitioned dataset, or any fsspec URL.
        columns: read only these columns (projection push-down).
        filter: a ``pyarrow.compute`` expression or a DNF list ``[("age", ">", 30)]``
            (push-down to row groups and pages; partition columns prune files).
        schema: the contract: a ``pyarrow.Schema`` or ``{"age": "int64"}``. Without one the
            first file is the reference and every other file must match it.
        on_bad_file: ``"fail"`` (the run fails, naming each unreadable file and why) or
            ``"quarantine"`` (move them to ``<root>/_quarantine/`` with a reason file, warn,
            count ``quarantined_files``, and go on with the rest).
        incremental: only files not seen by this flow's last successful run (a watermark of
            path, size and mtime, stored when this run succeeds). Without ``schema``, new files
            are checked against the schema that run read, so drift across runs is caught too.
        on_empty: ``"fail"`` or ``"skip"`` (this task and everything downstream end SKIPPED,
            and so does the run: "no new data").
        schema_evolution: ``"additive"`` (new columns allowed), ``"strict"``, or ``"widening"``
            (additive plus lossless numeric widening such as int32 read as int64).
        storage_options: passed to fsspec (credentials, endpoints) for remote URLs.

    Example::

        src = read_parquet("data/", columns=["id", "age"], schema={"id": "int64"})
        src.num_rows, src.to_table()
    """
    ctx = context.current()
    exclude, last_schema = None, None
    if incremental:
        previous = context.previous_watermark("files", default=None) or []
        exclude = {(str(e["path"]), int(e["size"]), e.get("mtime")) for e in previous}
        last_schema = context.previous_watermark("schema", default=None)
        if schema is None:  # new files must match what the last good run read, not only each other
            schema = _schema_from_text(last_schema)
    where = f"run {ctx.run_id}, flow '{ctx.flow_name}', task '{ctx.node_id}'" if ctx else ""
    source = parquet.open(
        path, columns=columns, filter=_dnf(filter), schema=schema, schema_evolution=schema_evolution,
        on_bad_file=on_bad_file, on_empty=on_empty, exclude=exclude,
        storage_options=storage_options, context=where,
    )  # fmt: skip
    if source.quarantined:
        names = "; ".join(f"{q.path} ({q.reason})" for q in source.quarantined[:20])
        more = f" and {len(source.quarantined) - 20} more" if len(source.quarantined) > 20 else ""
        context.count("quarantined_files", len(source.quarantined))
        context.warn(
            f"{len(source.quarantined)} unreadable Parquet file(s) moved to "
            f"{source.root.rstrip('/')}/_quarantine/: {names}{more}"
        )
    if source.empty:  # on_empty="skip" (with "fail" the connector raised): nothing to do
        context.skip(f"{source.note} (on_empty='skip')")
    context.count("input_files", len(source.files))
    context.count("input_rows", source.num_rows)
    if incremental:
        context.set_watermark("files", sorted(source.seen, key=lambda e: e["path"]))
        if source.files:
            last_schema = _schema_to_text(pa.schema([f for f in source.schema if f.name not in source.partitioning]))
        if last_schema:
            context.set_watermark("schema", last_schema)
    return source


def _schema_to_text(schema: pa.Schema) -> str:
    # Arrow IPC bytes, base64: exact (time zones, nested types) and JSON-able for the run store.
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def _schema_from_text(text: str | None) -> pa.Schema | None:
    if not text:
        return None
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def _dnf(filter: Any) -> Any:  # noqa: A002
    # YAML gives lists where pyarrow's DNF wants tuples: [["age", ">", 30]] -> [("age", ">", 30)].
    if isinstance(filter, list) and filter and all(isinstance(x, list | tuple) for x in filter):
        if all(isinstance(x, list | tuple) and len(x) == 3 and isinstance(x[0], str) for x in filter):
            return [tuple(x) for x in filter]
        return [[tuple(y) for y in x] for x in filter]
    return filter


__all__ = ["ParquetSource", "read_parquet"]
