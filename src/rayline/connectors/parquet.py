"""Parquet connector: ``open(location)`` validates a Parquet file, folder or hive-partitioned
dataset (local or any fsspec URL) and returns a ``ParquetSource`` — a small picklable value that
reads the data on demand, never all at once.

``open`` reads every file's footer (in threads; cheap), checks the schema contract
(``rayline.connectors.schema``), sets corrupt files aside or fails on them, and counts the rows
that survive the filter. Reading is in ``rayline.connectors.shards``.

Example::

    from rayline.connectors import parquet

    src = parquet.open("data/events/", columns=["id", "age"], filter=[("age", ">", 30)],
                       schema={"id": "int64", "age": "int32"})
    src.num_rows                       # rows after the filter
    for batch in src.iter_batches():   # bounded memory: pyarrow row groups, streamed
        ...
    train_shard = src.shards(4)[rank]  # one contiguous, balanced row range per worker
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from rayline.connectors import CorruptFileError, EmptyInputError, SchemaContractError
from rayline.connectors.quarantine import QuarantinedFile, quarantine_file, reason_of
from rayline.connectors.schema import SchemaContract, hive_partitions
from rayline.errors import DefinitionError

if TYPE_CHECKING:
    from rayline.connectors.shards import Piece

PARQUET_EXTENSIONS = (".parquet", ".parq", ".pq")


@dataclass(frozen=True, slots=True)
class ParquetFile:
    """One input file as its footer describes it (no data read)."""

    path: str
    size: int
    mtime: float | str | None
    etag: str | None
    num_rows: int
    row_groups: tuple[int, ...]  # rows in each row group
    partition: tuple[tuple[str, str | None], ...] = ()  # hive key=value pairs from its folder

    @property
    def key(self) -> dict[str, Any]:
        """What the incremental watermark remembers about this file."""
        return {"path": self.path, "size": self.size, "mtime": self.mtime}


@dataclass(frozen=True, eq=False)
class ParquetSource:
    """Validated Parquet input: which files, row groups, columns and filter; no data.

    Picklable and small, so it travels between tasks; every worker reads its part straight
    from storage. ``pieces`` is set on shards (row ranges); ``None`` means every row.

    Example::

        src.to_table()                         # small data, one Arrow table
        for b in src.iter_batches(65_536): ...  # streaming
        src.shards(2)[0].num_rows               # half of the rows (before the filter)
        src.to_ray_dataset()                    # Ray Data over exactly these files
    """

    url: str
    root: str
    protocol: str
    files: tuple[ParquetFile, ...]
    schema: pa.Schema
    columns: tuple[str, ...] | None = None
    filter: pc.Expression | None = None
    partitioning: tuple[str, ...] = ()
    quarantined: tuple[QuarantinedFile, ...] = ()
    pieces: tuple[Piece, ...] | None = None
    storage_options: tuple[tuple[str, Any], ...] = ()
    rows: int | None = None  # rows after the filter; None until counted (a filtered shard)
    note: str = ""  # why the source is empty, when it is
    seen: tuple[dict[str, Any], ...] = field(default=(), repr=False)  # incremental snapshot

    # ------------------------------------------------------------------ facts
    @property
    def num_rows(self) -> int:
        """Rows this source yields (after the filter). Counted once, lazily, for shards."""
        if self.rows is None:
            from rayline.connectors.shards import count_rows

            object.__setattr__(self, "rows", count_rows(self))
        return int(self.rows)  # type: ignore[arg-type]

    @property
    def empty(self) -> bool:
        return self.num_rows == 0

    @property
    def paths(self) -> list[str]:
        """The files as URLs (``file:///…`` for local ones)."""
        return [self.url_of(f.path) for f in self.files]

    @property
    def read_schema(self) -> pa.Schema:
        """The schema of what comes back (after the projection)."""
        if self.columns is None:
            return self.schema
        return pa.schema([self.schema.field(c) for c in self.columns])

    def url_of(self, path: str) -> str:
        return f"{self.protocol}://{path}" if self.protocol not in ("file", "local") else path

    def filesystems(self) -> tuple[Any, Any]:
        """(fsspec filesystem, pyarrow filesystem) for this source, cached per process."""
        return filesystems(self.protocol, self.storage_options)

    # ------------------------------------------------------------------ reading
    def iter_batches(self, batch_size: int = 65_536, *, batch_format: str = "pyarrow", **tuning: Any) -> Iterator[Any]:
        """Stream batches of at most ``batch_size`` rows with bounded memory (pyarrow reads a
        few row groups ahead; see ``shards.iter_batches`` for ``tuning``). ``batch_format``:
        ``"pyarrow"`` (``RecordBatch``), ``"pandas"`` or ``"numpy"`` (dict of arrays), as in
        Ray Data."""
        from rayline.connectors.shards import formatted, iter_batches

        return formatted(iter_batches(self, batch_size, **tuning), batch_format)

    def to_table(self) -> pa.Table:
        """Everything in one Arrow table (for data that fits in memory)."""
        from rayline.connectors.shards import to_table

        return to_table(self)

    def to_pandas(self) -> Any:
        return self.to_table().to_pandas()

    def shards(self, n: int) -> list[ParquetSource]:
        """``n`` shards with equal row counts (±1 before the filter), each a contiguous range
        over the files' row groups; together they cover every row exactly once."""
        from rayline.connectors.shards import split

        return split(self, n)

    def to_ray_dataset(self, rows_per_block: int = 262_144, **map_args: Any) -> Any:
        """A ``ray.data.Dataset`` over exactly these row groups, with the projection and filter
        pushed into each block's pyarrow scan (``map_args`` go to ``map_batches``)."""
        from rayline.connectors.shards import to_ray_dataset

        return to_ray_dataset(self, rows_per_block=rows_per_block, **map_args)

    def to_arrow_dataset(self) -> Any:
        """A ``pyarrow.dataset.Dataset`` over this source's row groups (no projection applied)."""
        from rayline.connectors.shards import arrow_dataset

        return arrow_dataset(self)

    def __repr__(self) -> str:
        part = f", shard of {len(self.pieces)} pieces" if self.pieces is not None else ""
        rows = "?" if self.rows is None else f"{self.rows:,}"
        q = f", {len(self.quarantined)} quarantined" if self.quarantined else ""
        return f"<ParquetSource {self.url} {len(self.files)} files, {rows} rows{part}{q}>"


# ---------------------------------------------------------------------- filesystems
def filesystems(protocol: str, storage_options: tuple[tuple[str, Any], ...] = ()) -> tuple[Any, Any]:
    """(fsspec, pyarrow) filesystems for a protocol; local files use Arrow's native one."""
    try:
        return _filesystems(protocol, storage_options)
    except TypeError:  # unhashable options (nested dicts): build without the cache
        return _filesystems.__wrapped__(protocol, storage_options)


@functools.lru_cache(maxsize=32)
def _filesystems(protocol: str, storage_options: tuple[tuple[str, Any], ...]) -> tuple[Any, Any]:
    import fsspec
    from pyarrow import fs as pafs

    fs = fsspec.filesystem(protocol, **dict(storage_options))
    if protocol in ("file", "local"):
        return fs, pafs.LocalFileSystem()
    return fs, pafs.PyFileSystem(pafs.FSSpecHandler(fs))


# ---------------------------------------------------------------------- open
def open(  # noqa: A001 - the connector protocol's verb
    location: str,
    *,
    columns: Sequence[str] | None = None,
    filter: Any = None,  # noqa: A002 - the documented keyword
    schema: pa.Schema | Mapping[str, Any] | None = None,
    schema_evolution: str = "additive",
    on_bad_file: str = "fail",
    on_empty: str = "fail",
    exclude: Collection[tuple[str, int, Any]] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    file_extensions: Sequence[str] | None = PARQUET_EXTENSIONS,
    context: str = "",
) -> ParquetSource:
    """Validate Parquet input at ``location`` and describe it as a ``ParquetSource``.

    ``exclude`` holds ``(path, size, mtime)`` of files already read (incremental reads).
    ``context`` names the run/task in quarantine reason files.

    Example::

        src = open("s3://bucket/events/", on_bad_file="quarantine", schema={"id": "int64"})
    """
    _check_choice("on_bad_file", on_bad_file, ("fail", "quarantine"))
    _check_choice("on_empty", on_empty, ("fail", "skip"))
    contract = SchemaContract.of(schema, schema_evolution)
    options = tuple(sorted((storage_options or {}).items()))
    fs, root, listed = _list(location, options, file_extensions)
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
    _, arrow_fs = filesystems(protocol, options)

    seen: tuple[dict[str, Any], ...] = ()
    if exclude is not None:
        done = {(str(p), int(s), m) for p, s, m in exclude}
        seen = tuple({"path": p, "size": s, "mtime": m} for p, s, m, _ in listed)
        listed = [x for x in listed if (x[0], x[1], x[2]) not in done]

    good, bad = _read_footers(listed, arrow_fs)
    quarantined: list[QuarantinedFile] = []
    if bad and on_bad_file == "fail":
        lines = [f"{_rel(p, root)} ({p}): {why}" for p, why in bad]
        raise CorruptFileError(
            f"{len(bad)} unreadable Parquet file{'s' if len(bad) != 1 else ''} in {location}:\n  - "
            + "\n  - ".join(lines)
            + "\n  fix: repair or remove them, or pass on_bad_file='quarantine' to move them to "
            f"{posixpath.join(root, '_quarantine')}/ and read the rest"
        )
    for p, why in bad:
        try:
            quarantined.append(quarantine_file(fs, p, root, why, context=context))
        except OSError as exc:  # read-only data, no permission: still a data error, with both reasons
            raise CorruptFileError(
                f"{_rel(p, root)} ({p}): {why}; it could not be moved to "
                f"{posixpath.join(root, '_quarantine')}/: {exc}. fix: give this job write access "
                "next to the data, or repair/remove the file"
            ) from exc
    if quarantined and seen:
        moved = {q.path for q in quarantined}
        seen = tuple(s for s in seen if s["path"] not in moved)

    keys, part_fields = _hive(good, root, contract)
    declared_parts = set(keys)
    if contract.schema is not None and declared_parts:
        kept = [f for f in contract.schema if f.name not in declared_parts]
        contract = SchemaContract(pa.schema(kept), contract.evolution)
    unified = contract.unify([(_rel(f.path, root), s) for f, s in good])
    full = pa.schema(list(unified) + [f for f in part_fields if f.name not in unified.names])

    cols = _check_columns(columns, full, location)
    expr = as_expression(filter)
    src = ParquetSource(
        url=location, root=root, protocol=protocol, files=tuple(f for f, _ in good), schema=full,
        columns=cols, filter=expr, partitioning=keys, quarantined=tuple(quarantined),
        storage_options=options, seen=seen,
    )  # fmt: skip
    rows, note = _count(src, location, exclude is not None)
    src = replace(src, rows=rows, note=note)
    if rows == 0 and on_empty == "fail":
        raise EmptyInputError(f"{note}; nothing to train on. fix: point at data with rows, "
                              "loosen the filter, or pass on_empty='skip' to go on with an empty source")
    return src


def as_expression(filter: Any) -> pc.Expression | None:  # noqa: A002
    """A pyarrow expression from an expression or a DNF list like ``[("age", ">", 30)]``."""
    if filter is None or isinstance(filter, pc.Expression):
        return filter
    if isinstance(filter, list | tuple):
        import pyarrow.parquet as pq

        try:
            return pq.filters_to_expression(list(filter))
        except (TypeError, ValueError) as exc:
            raise DefinitionError(
                f"filter={filter!r} is not a valid DNF filter ({exc}); use [('col', '>', 3)] or "
                "[[('a', '=', 1)], [('b', '<', 2)]] (OR of ANDs) or a pyarrow.compute expression"
            ) from None
    raise DefinitionError(
        f"filter must be a pyarrow.compute.Expression or a list like [('age', '>', 30)], got {type(filter).__name__}"
    )


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise DefinitionError(f"{name}={value!r}: use one of {', '.join(repr(a) for a in allowed)}")


def _rel(path: str, root: str) -> str:
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else posixpath.basename(path)


def _list(location: str, options: tuple[tuple[str, Any], ...], extensions: Sequence[str] | None):
    """(fs, root, [(path, size, mtime, etag)]) sorted by path; hidden and ``_`` entries skipped."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(location, **dict(options))
    if fs.isfile(path):
        info = fs.info(path)
        return fs, posixpath.dirname(path.rstrip("/")) or "/", [_entry(info)]
    if not fs.exists(path):
        return fs, path.rstrip("/") or "/", []
    root = path.rstrip("/") or "/"
    out = []
    for p, info in sorted(fs.find(root, withdirs=False, detail=True).items()):
        parts = _rel(p, root).split("/")
        if any(x.startswith(("_", ".")) for x in parts):
            continue  # _quarantine/, _SUCCESS, _metadata, .crc, hidden files
        if extensions and not p.lower().endswith(tuple(extensions)):
            continue
        out.append(_entry({**info, "name": p}))
    return fs, root, out


def _entry(info: Mapping[str, Any]) -> tuple[str, int, Any, str | None]:
    mtime = next((info[k] for k in ("mtime", "LastModified", "last_modified", "updated", "created")
                  if info.get(k) is not None), None)  # fmt: skip
    if mtime is not None and not isinstance(mtime, int | float | str):
        mtime = mtime.isoformat() if hasattr(mtime, "isoformat") else str(mtime)
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    return str(info["name"]), int(info.get("size") or 0), mtime, (str(etag).strip('"') if etag else None)


def _read_footers(listed: list, arrow_fs: Any) -> tuple[list[tuple[ParquetFile, pa.Schema]], list[tuple[str, str]]]:
    """Every footer, in threads. Returns (readable files with schemas, [(path, reason)])."""
    import pyarrow.parquet as pq

    def one(entry: tuple[str, int, Any, str | None]) -> tuple[ParquetFile, pa.Schema] | tuple[str, str]:
        path, size, mtime, etag = entry
        try:
            md = pq.read_metadata(path, filesystem=arrow_fs)
            rgs = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
            schema = md.schema.to_arrow_schema()
        except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
            return path, reason_of(exc)
        return ParquetFile(path, size, mtime, etag, int(md.num_rows), rgs), schema

    if not listed:
        return [], []
    with ThreadPoolExecutor(max_workers=min(16, len(listed))) as pool:
        results = list(pool.map(one, listed))
    good = [r for r in results if isinstance(r[0], ParquetFile)]
    bad = [r for r in results if not isinstance(r[0], ParquetFile)]
    return good, bad  # type: ignore[return-value]


def _hive(good: list, root: str, contract: SchemaContract) -> tuple[tuple[str, ...], list[pa.Field]]:
    """Detect ``key=value`` folders shared by every file; fill each file's ``partition``."""
    keys, fields, values = hive_partitions([_rel(f.path, root) for f, _ in good], contract.schema)
    for j, (f, s) in enumerate(good):
        good[j] = (replace(f, partition=values[j]), s)
    return keys, fields


def _check_columns(columns: Sequence[str] | None, schema: pa.Schema, location: str) -> tuple[str, ...] | None:
    if columns is None:
        return None
    if isinstance(columns, str):
        columns = [columns]
    missing = [c for c in columns if c not in schema.names]
    if missing and len(schema):
        raise SchemaContractError(
            [f"{location}: column '{c}' was asked for but no file has it" for c in missing],
            hint=f"the columns are: {', '.join(schema.names)}",
        )
    return tuple(columns)


def _count(src: ParquetSource, location: str, incremental: bool) -> tuple[int, str]:
    if not src.files:
        if incremental:
            return 0, f"no new Parquet files in {location} since the last successful run"
        if src.quarantined:
            return 0, f"every Parquet file in {location} was quarantined ({len(src.quarantined)})"
        return 0, f"no Parquet files found at {location}"
    total = sum(f.num_rows for f in src.files)
    if total == 0:
        return 0, f"the {len(src.files)} Parquet file(s) at {location} have zero rows"
    if src.filter is None:
        return total, ""
    from rayline.connectors.shards import count_rows

    rows = count_rows(src)
    note = f"no rows to read from {location} after filter {src.filter} ({total:,} rows before it)"
    return rows, (note if rows == 0 else "")


__all__ = ["PARQUET_EXTENSIONS", "ParquetFile", "ParquetSource", "as_expression", "filesystems", "open"]
