"""The fast, bounded-memory reader behind ``ParquetSource``: pyarrow scans over row groups.

On 2 cores Ray Data's Parquet path reads at about a fifth of plain pyarrow's speed (perf.md B3),
so rayline reads with pyarrow's own scanner wherever the data is consumed: in the task itself,
or in each training worker over its shard. Nothing passes through Ray's object store; memory is
bounded by pyarrow's read-ahead (a few row groups), not by the dataset.

A *shard* is a ``ParquetSource`` whose ``pieces`` list row ranges ``(file, row group, start,
stop)``. ``split`` cuts the rows into ``n`` contiguous ranges of equal size, so shards are
balanced to one row and cover every row exactly once; only the (at most two) boundary row
groups of a shard are read whole and sliced.

Example::

    shard = source.shards(world_size)[rank]       # inside a Ray Train worker
    for batch in shard.iter_batches(65_536):       # pyarrow, use_threads, pre_buffer
        x = torch.from_numpy(batch.column("f0").to_numpy())
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as ds

from rayline.errors import DefinitionError

if TYPE_CHECKING:
    from rayline.connectors.parquet import ParquetSource

# Read-ahead of the default scan (measured in benchmarks/ingest.py: as fast as pyarrow's
# defaults of 16/4 on this machine, with a lower peak).
BATCH_READAHEAD = 4
FRAGMENT_READAHEAD = 2


@dataclass(frozen=True, slots=True)
class Piece:
    """Rows ``[start, stop)`` of row group ``row_group`` in ``source.files[file]``."""

    file: int
    row_group: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def pieces_of(src: ParquetSource) -> list[Piece]:
    """Every piece the source covers, in file and row-group order."""
    if src.pieces is not None:
        return list(src.pieces)
    return [Piece(i, g, 0, n) for i, f in enumerate(src.files) for g, n in enumerate(f.row_groups) if n]


def _whole(src: ParquetSource, p: Piece) -> bool:
    return p.start == 0 and p.stop == src.files[p.file].row_groups[p.row_group]


# ---------------------------------------------------------------------------- fragments
@functools.lru_cache(maxsize=1)
def _format() -> ds.ParquetFileFormat:
    return ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=True))


def _partition_expression(src: ParquetSource, file_index: int) -> Any:
    import pyarrow.compute as pc

    expr = None
    for key, value in src.files[file_index].partition:
        typ = src.schema.field(key).type
        term = pc.field(key).is_null() if value is None else pc.field(key) == pa.array([value]).cast(typ)[0]
        expr = term if expr is None else expr & term
    return expr


def _fragment(src: ParquetSource, file_index: int, row_groups: list[int] | None) -> ds.Fragment:
    f = src.files[file_index]
    return _format().make_fragment(
        f.path, src.filesystems()[1], partition_expression=_partition_expression(src, file_index),
        row_groups=row_groups, file_size=f.size,
    )  # fmt: skip


def _segments(src: ParquetSource) -> list[tuple[str, Any]]:
    """The reading plan, in order: ("scan", [fragments]) runs of whole row groups and
    ("slice", Piece) boundary pieces."""
    if src.pieces is None:
        return [("scan", [_fragment(src, i, None) for i in range(len(src.files))])] if src.files else []
    out: list[tuple[str, Any]] = []
    run: list[Piece] = []

    def flush() -> None:
        if run:
            by_file: dict[int, list[int]] = {}
            for p in run:
                by_file.setdefault(p.file, []).append(p.row_group)
            out.append(("scan", [_fragment(src, i, rgs) for i, rgs in by_file.items()]))
            run.clear()

    for p in src.pieces:
        if _whole(src, p):
            run.append(p)
        else:
            flush()
            out.append(("slice", p))
    flush()
    return out


def arrow_dataset(src: ParquetSource) -> ds.FileSystemDataset:
    """A pyarrow dataset over the source's row groups with its unified schema (no projection
    or filter applied). A shard cut inside a row group has no such dataset: read it with
    ``iter_batches`` or ``to_table``."""
    segments = _segments(src)
    if any(kind == "slice" for kind, _ in segments):
        raise DefinitionError(
            f"{src!r} starts or ends inside a row group, so it is not a pyarrow dataset; "
            "read it with iter_batches() or to_table()"
        )
    frags = [f for _, part in segments for f in part]
    return ds.FileSystemDataset(frags, src.schema, _format(), src.filesystems()[1])


def _read_slice(src: ParquetSource, p: Piece) -> pa.Table:
    # Row positions are physical: slice first, then filter, then project.
    table = _fragment(src, p.file, [p.row_group]).to_table(schema=src.schema)
    table = table.slice(p.start, p.rows)
    if src.filter is not None:
        table = table.filter(src.filter)
    return table.select(list(src.columns)) if src.columns is not None else table


# ---------------------------------------------------------------------------- reading
def iter_batches(
    src: ParquetSource,
    batch_size: int = 65_536,
    *,
    batch_readahead: int = BATCH_READAHEAD,
    fragment_readahead: int = FRAGMENT_READAHEAD,
    use_threads: bool = True,
) -> Iterator[pa.RecordBatch]:
    """Stream batches of at most ``batch_size`` rows. Memory stays near
    ``batch_readahead × fragment_readahead`` row-group chunks, whatever the dataset's size."""
    if batch_size <= 0:
        raise DefinitionError(f"batch_size must be a positive number of rows, got {batch_size}")
    cols = list(src.columns) if src.columns is not None else None
    for kind, part in _segments(src):
        if kind == "slice":
            for batch in _read_slice(src, part).to_batches(max_chunksize=batch_size):
                yield batch  # not ``yield from``: Ray's streaming generators call ``send``
            continue
        dataset = ds.FileSystemDataset(part, src.schema, _format(), src.filesystems()[1])
        for batch in dataset.to_batches(
            columns=cols, filter=src.filter, batch_size=batch_size, use_threads=use_threads,
            batch_readahead=batch_readahead, fragment_readahead=fragment_readahead,
        ):  # fmt: skip
            if batch.num_rows:
                yield batch


def formatted(batches: Iterator[pa.RecordBatch], batch_format: str) -> Iterator[Any]:
    """Batches as ``"pyarrow"`` RecordBatches, ``"pandas"`` DataFrames or ``"numpy"`` dicts."""
    if batch_format == "pyarrow":
        return batches
    if batch_format == "pandas":
        return (b.to_pandas() for b in batches)
    if batch_format == "numpy":
        return ({n: c.to_numpy(zero_copy_only=False) for n, c in zip(b.schema.names, b.columns, strict=True)}
                for b in batches)  # fmt: skip
    raise DefinitionError(f"batch_format={batch_format!r}: use 'pyarrow', 'pandas' or 'numpy'")


def to_table(src: ParquetSource) -> pa.Table:
    """The whole source as one table, with the source's projection and filter."""
    tables = []
    cols = list(src.columns) if src.columns is not None else None
    for kind, part in _segments(src):
        if kind == "slice":
            tables.append(_read_slice(src, part))
        else:
            dataset = ds.FileSystemDataset(part, src.schema, _format(), src.filesystems()[1])
            tables.append(dataset.to_table(columns=cols, filter=src.filter))
    if not tables:
        return src.read_schema.empty_table()
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def count_rows(src: ParquetSource) -> int:
    """Rows after the filter; without a filter, from the footers alone."""
    if src.filter is None:
        return sum(p.rows for p in pieces_of(src))
    total = 0
    for kind, part in _segments(src):
        if kind == "slice":
            total += _read_slice(src, part).num_rows
        else:
            dataset = ds.FileSystemDataset(part, src.schema, _format(), src.filesystems()[1])
            try:
                total += dataset.count_rows(filter=src.filter)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                from rayline.connectors import SchemaContractError

                raise SchemaContractError(
                    [f"{src.url}: filter {src.filter} does not apply to the data: {exc}"],
                    hint=f"filter on existing columns with matching types; schema: {src.schema}",
                ) from None
    return total


# ---------------------------------------------------------------------------- sharding
def split(src: ParquetSource, n: int) -> list[ParquetSource]:
    """``n`` shards of equal row counts (±1), contiguous, covering every row exactly once."""
    if not isinstance(n, int) or n < 1:
        raise DefinitionError(f"shards(n): n must be a whole number >= 1, got {n!r}")
    pieces = pieces_of(src)
    total = sum(p.rows for p in pieces)
    bounds = [total * i // n for i in range(n + 1)]
    shards: list[list[Piece]] = [[] for _ in range(n)]
    offset, k = 0, 0
    for p in pieces:
        lo, hi = offset, offset + p.rows
        while lo < hi:
            while bounds[k + 1] <= lo:
                k += 1
            cut = min(hi, bounds[k + 1])
            shards[k].append(Piece(p.file, p.row_group, p.start + lo - offset, p.start + cut - offset))
            lo = cut
        offset = hi
    return [_subset(src, ps) for ps in shards]


def _subset(src: ParquetSource, pieces: list[Piece]) -> ParquetSource:
    used = sorted({p.file for p in pieces})
    remap = {old: new for new, old in enumerate(used)}
    rows = sum(p.rows for p in pieces) if src.filter is None else None
    return replace(
        src, files=tuple(src.files[i] for i in used), rows=rows, seen=(), quarantined=(),
        pieces=tuple(Piece(remap[p.file], p.row_group, p.start, p.stop) for p in pieces),
    )  # fmt: skip


# ---------------------------------------------------------------------------- Ray
def to_ray_dataset(src: ParquetSource, *, rows_per_block: int = 262_144, **map_args: Any) -> Any:
    """Ray Data over exactly this source's row groups (or shard pieces): each block is read
    by pyarrow in a Ray Data task with the source's schema, projection and filter pushed into
    the scan. (Ray 2.60's own ``read_parquet`` no longer takes a pyarrow ``filter``, and on 2
    cores its datasource is the slow part; benchmarks/ingest.py measures both.)

    Example::

        ds = source.to_ray_dataset()          # then ds.iter_torch_batches(), streaming_split()
    """
    import ray.data

    units = _blocks(pieces_of(src), rows_per_block)
    if not units:
        return ray.data.from_arrow(src.read_schema.empty_table())

    def read(batch: pa.Table) -> pa.Table:
        ps = pieces_of(src)
        chosen = [ps[i] for u in batch.column("unit").to_pylist() for i in units[u]]
        return to_table(replace(src, pieces=tuple(chosen), rows=None))

    items = [{"unit": u} for u in range(len(units))]
    return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        read, batch_size=1, batch_format="pyarrow", **map_args
    )


def _blocks(pieces: list[Piece], rows_per_block: int) -> list[list[int]]:
    """Consecutive piece indices grouped into blocks of about ``rows_per_block`` rows."""
    out: list[list[int]] = []
    rows = 0
    for i, p in enumerate(pieces):
        if not out or rows >= rows_per_block:
            out.append([])
            rows = 0
        out[-1].append(i)
        rows += p.rows
    return out


def stream_batches(
    src: ParquetSource, n: int, batch_size: int = 65_536, *, max_pending: int = 4, **remote_options: Any
) -> Iterator[pa.RecordBatch]:
    """Read ``n`` shards in ``n`` Ray tasks and stream their batches to the caller as they
    arrive (through the object store, at most ``max_pending`` unread batches per task).

    For a consumer that is not one of the readers; training workers should instead read their
    own ``shards(n)[rank]`` locally, which copies nothing.
    """
    import ray

    reader = ray.remote(_read_shard).options(
        num_returns="streaming", _generator_backpressure_num_objects=max_pending, **remote_options
    )
    gens = [reader.remote(shard, batch_size) for shard in split(src, n)]
    while gens:
        ready, _ = ray.wait(gens, num_returns=1)
        gen = ready[0]
        try:
            ref = next(gen)
        except StopIteration:
            gens.remove(gen)
            continue
        yield ray.get(ref)


def _read_shard(shard: ParquetSource, batch_size: int) -> Iterator[pa.RecordBatch]:
    yield from iter_batches(shard, batch_size)  # a generator: it accepts Ray's ``send``


def run_on_shards(src: ParquetSource, n: int, fn: Callable[[ParquetSource], Any], **remote_options: Any) -> list[Any]:
    """Call ``fn(shard)`` for each of ``n`` shards in parallel Ray tasks; their results, in order."""
    import ray

    task = ray.remote(fn).options(**remote_options) if remote_options else ray.remote(fn)
    return ray.get([task.remote(shard) for shard in split(src, n)])


__all__ = [
    "Piece", "arrow_dataset", "count_rows", "iter_batches", "pieces_of", "run_on_shards", "split",
    "stream_batches", "to_ray_dataset", "to_table",
]  # fmt: skip
