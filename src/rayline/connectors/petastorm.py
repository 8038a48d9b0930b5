"""Petastorm connector: ``read_petastorm(url)`` reads datasets written by Petastorm with plain
pyarrow (neither petastorm nor pyspark installed) into the same streaming source as Parquet.

Petastorm cannot live beside Ray 2.60 (it needs pyarrow ≤ 14 and numpy < 2, uber/petastorm#806),
but its *data* is Parquet plus a pickled ``Unischema`` in ``_common_metadata``. This connector
loads that schema with a restricted unpickler (``petastorm_codecs``), reads the stored columns
through a ``ParquetSource`` (row groups, projection, filter push-down, shards) and decodes each
batch's codec columns: scalars stay native, ndarrays become ``pa.FixedShapeTensorArray`` (or
nested lists for shapes with ``None``), images decode through Pillow when it is installed.

For petastorm's own reader API (predicates, its row-group sharding), ``engine="bridge"`` runs
``make_reader`` in an optional side environment (``make petastorm-env``) and streams Arrow IPC
bytes back; see ``rayline.connectors.petastorm_bridge``.

Example::

    from rayline.connectors.petastorm import in_set, read_petastorm

    src = read_petastorm("s3://bucket/mnist_petastorm", columns=["id", "image"])
    for batch in src.iter_batches(1024):         # pyarrow RecordBatches, decoded
        images = batch.column("image").to_numpy_ndarray()    # (rows, 28, 28)
    ds = src.to_ray_dataset()                     # Ray Data: iter_torch_batches, streaming_split
    bridged = read_petastorm(url, engine="bridge", predicate=in_set([1, 2], "label"))
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from rayline.connectors import SchemaContractError
from rayline.connectors.parquet import ParquetSource
from rayline.connectors.parquet import open as open_parquet
from rayline.connectors.petastorm_codecs import (
    UNISCHEMA_KEY,
    PetastormDataError,
    Unischema,
    UnischemaField,
    UnsafePickleError,
    arrow_schema,
    load_unischema,
)
from rayline.connectors.petastorm_decode import decode_column
from rayline.connectors.petastorm_predicates import (  # for engine="bridge"
    Predicate,
    in_intersection,
    in_lambda,
    in_negate,
    in_pseudorandom_split,
    in_reduce,
    in_set,
)
from rayline.errors import DefinitionError

ENGINES = ("pyarrow", "bridge")


@dataclass(frozen=True, eq=False)
class PetastormSource:
    """A petastorm dataset read with pyarrow: the stored columns as a ``ParquetSource`` plus the
    Unischema fields that decode them. Small and picklable, like every source.

    Example::

        src.num_rows                          # from the footers (after a filter: counted)
        next(src.iter_batches(256))           # a RecordBatch of decoded columns
        src.shards(2)[1].to_table()           # the second half of the rows, decoded
        src.to_ray_dataset().iter_torch_batches(batch_size=64)
    """

    url: str
    parquet: ParquetSource
    unischema: Unischema
    fields: tuple[UnischemaField, ...]

    @property
    def num_rows(self) -> int:
        return self.parquet.num_rows

    @property
    def empty(self) -> bool:
        return self.parquet.empty

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the decoded batches."""
        return arrow_schema(self.fields)

    def decode(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
        """Decode one batch (or table) of stored columns into the output schema."""
        columns = [decode_column(f, batch.column(f.name)) for f in self.fields]
        if isinstance(batch, pa.Table):
            return pa.Table.from_arrays(columns, schema=self.schema)
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def iter_batches(self, batch_size: int = 65_536, *, batch_format: str = "pyarrow", **tuning: Any) -> Iterator[Any]:
        """Stream decoded batches of at most ``batch_size`` rows with bounded memory.
        ``batch_format``: ``"pyarrow"`` (``RecordBatch``), ``"numpy"`` (dict of arrays; fixed
        tensors as ``(rows, *shape)`` arrays) or ``"pandas"``."""
        batches = (self.decode(b) for b in self.parquet.iter_batches(batch_size, **tuning))
        return format_batches(batches, batch_format)

    def to_table(self) -> pa.Table:
        """Everything decoded in one Arrow table (for data that fits in memory)."""
        return self.decode(self.parquet.to_table())

    def shards(self, n: int) -> list[PetastormSource]:
        """``n`` shards with equal row counts (±1), as ``ParquetSource.shards``."""
        return [replace(self, parquet=s) for s in self.parquet.shards(n)]

    def to_ray_dataset(self, rows_per_block: int = 262_144, **map_args: Any) -> Any:
        """A ``ray.data.Dataset`` of decoded blocks: each block is read by pyarrow in a Ray task
        and decoded in the same (fused) task; ``map_args`` go to ``map_batches``."""
        stored = self.parquet.to_ray_dataset(rows_per_block=rows_per_block)
        return stored.map_batches(self.decode, batch_size=None, batch_format="pyarrow", **map_args)

    def __repr__(self) -> str:
        return (f"<PetastormSource {self.url} {self.unischema.name}: "
                f"{', '.join(f.name for f in self.fields)}; {self.parquet!r}>")  # fmt: skip


def read_petastorm(
    url: str,
    *,
    columns: Sequence[str] | None = None,
    engine: str = "pyarrow",
    filter: Any = None,  # noqa: A002 - the Parquet connector's keyword
    predicate: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    on_empty: str = "fail",
    **bridge_options: Any,
) -> Any:
    """Open a dataset written by Petastorm (``materialize_dataset``) as a streaming source.

    Args:
        url: the dataset folder, local or any fsspec URL (``file://``, ``s3://``, ``gs://`` …).
        columns: Unischema field names to read (default: every field), in this order.
        engine: ``"pyarrow"`` (default; in-process, no petastorm) or ``"bridge"`` (petastorm's
            own ``make_reader`` in the side environment built by ``make petastorm-env``).
        filter: pyarrow filter on *stored scalar* columns (pyarrow engine), as in
            ``read_parquet``: ``[("label", "=", 3)]`` or a ``pyarrow.compute`` expression.
        predicate: a petastorm predicate (bridge engine), built with ``in_set``, ``in_lambda``,
            ``in_negate``, ``in_reduce``, ``in_intersection``, ``in_pseudorandom_split`` (here).
        storage_options: fsspec options for remote URLs.
        on_empty: ``"fail"`` (``EmptyInputError``) or ``"skip"`` when no row is left (pyarrow
            engine; the bridge streams whatever petastorm yields).
        bridge_options: for ``engine="bridge"``: ``reader_options`` (JSON-able keyword arguments
            of ``make_reader``), ``env`` (the side environment's folder), ``batch_rows``.

    Returns:
        A ``PetastormSource`` (pyarrow) or ``PetastormBridgeSource`` (bridge): ``iter_batches``,
        ``to_table``, ``shards``, ``to_ray_dataset``, ``num_rows``, ``schema``.

    Raises:
        UnsafePickleError: the stored Unischema names a global outside petastorm's classes.
        PetastormDataError: no Unischema, or a value that its codec cannot decode.
    """
    if engine not in ENGINES:
        raise DefinitionError(f"engine={engine!r}: use 'pyarrow' (default) or 'bridge'")
    if engine == "bridge":
        from rayline.connectors.petastorm_bridge import PetastormBridgeSource

        if filter is not None:
            raise DefinitionError("filter= is for engine='pyarrow'; with engine='bridge' use a "
                                  "petastorm predicate: predicate=in_set([...], 'field')")  # fmt: skip
        return PetastormBridgeSource.open(url, columns=columns, predicate=predicate,
                                          storage_options=storage_options, **bridge_options)  # fmt: skip
    if predicate is not None or bridge_options:
        extra = ", ".join(["predicate"] * (predicate is not None) + sorted(bridge_options))
        raise DefinitionError(f"{extra}: only with engine='bridge' (petastorm's own reader); "
                              "the pyarrow engine filters stored scalar columns with filter=")  # fmt: skip
    schema = read_unischema(url, storage_options)
    fields = select_fields(schema, columns, url)
    parquet = open_parquet(url, columns=[f.name for f in fields], filter=filter,
                           storage_options=storage_options, on_empty=on_empty)  # fmt: skip
    return PetastormSource(url=url, parquet=parquet, unischema=schema, fields=fields)


open = read_petastorm  # noqa: A001 - the connector protocol's verb (``connector("petastorm").open``)


def read_unischema(url: str, storage_options: Mapping[str, Any] | None = None) -> Unischema:
    """The Unischema stored in ``url``'s ``_common_metadata`` (restricted unpickling)."""
    import fsspec
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    path = posixpath.join(root.rstrip("/"), "_common_metadata")
    if not fs.exists(path):
        raise PetastormDataError(
            f"{url} is not a petastorm dataset: it has no _common_metadata file (petastorm's "
            "materialize_dataset writes it with the pickled Unischema). fix: read plain Parquet "
            "with the 'parquet' connector, or engine='bridge' (petastorm's make_batch_reader)"
        )
    with fs.open(path, "rb") as f:
        metadata = pq.read_metadata(f).metadata or {}
    if UNISCHEMA_KEY not in metadata:
        raise PetastormDataError(
            f"{url}/_common_metadata holds no Unischema (key {UNISCHEMA_KEY.decode()}); it was not "
            "written by petastorm's materialize_dataset. fix: read it with the 'parquet' connector"
        )
    try:
        return load_unischema(metadata[UNISCHEMA_KEY])
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{url}/_common_metadata: {exc}") from None


def select_fields(schema: Unischema, columns: Sequence[str] | None, url: str) -> tuple[UnischemaField, ...]:
    if columns is None:
        return tuple(schema.fields.values())
    names = [columns] if isinstance(columns, str) else list(columns)
    missing = [c for c in names if c not in schema.fields]
    if missing:
        raise SchemaContractError(
            [f"{url}: field '{c}' was asked for but the Unischema '{schema.name}' has no such field" for c in missing],
            hint=f"the fields are: {', '.join(schema.fields)}",
        )
    return tuple(schema.fields[c] for c in names)


def format_batches(batches: Iterator[pa.RecordBatch], batch_format: str) -> Iterator[Any]:
    """Batches as ``"pyarrow"`` RecordBatches, ``"numpy"`` dicts or ``"pandas"`` DataFrames."""
    if batch_format == "pyarrow":
        return batches
    if batch_format == "numpy":
        return ({n: to_numpy(c) for n, c in zip(b.schema.names, b.columns, strict=True)} for b in batches)
    if batch_format == "pandas":
        import pandas as pd

        return (pd.DataFrame({n: list(v) if getattr(v, "ndim", 1) > 1 else v
                              for n, v in d.items()}) for d in format_batches(batches, "numpy"))  # fmt: skip
    raise DefinitionError(f"batch_format={batch_format!r}: use 'pyarrow', 'pandas' or 'numpy'")


def to_numpy(column: pa.Array) -> np.ndarray:
    """A decoded column as numpy: fixed tensors as one ``(rows, *shape)`` array (object array
    of arrays when there are nulls), lists as an object array of arrays, scalars as is."""
    if isinstance(column.type, pa.FixedShapeTensorType):
        if not column.null_count:
            return column.to_numpy_ndarray()
        shape = tuple(column.type.shape)
        out = np.empty(len(column), dtype=object)
        for i, v in enumerate(column.storage):
            out[i] = None if not v.is_valid else v.values.to_numpy(zero_copy_only=False).reshape(shape)
        return out
    if pa.types.is_list(column.type):
        out = np.empty(len(column), dtype=object)
        out[:] = [None if v is None else np.asarray(v) for v in column.to_pylist()]
        return out
    return column.to_numpy(zero_copy_only=False)


__all__ = [
    "PetastormSource", "Predicate", "format_batches", "in_intersection", "in_lambda", "in_negate",
    "in_pseudorandom_split", "in_reduce", "in_set", "open", "read_petastorm", "read_unischema", "to_numpy",
]  # fmt: skip
