"""The data the feature, training and evaluation tasks accept, turned into what each needs.

Every one of them takes, as ``data``:

* a ``pyarrow.Table`` or a pandas ``DataFrame`` (in memory),
* a ``ray.data.Dataset`` (streamed; sharded across Ray Train workers),
* any object with ``to_ray_dataset()`` (and optionally ``to_table()``, ``iter_batches()``,
  ``num_rows``, ``empty``), such as the ``ParquetSource`` that ``read_parquet`` returns,
* a ``Split`` (from the ``split`` task): training uses ``.train``, evaluation ``.test``.

Empty data is refused with :class:`rayline.connectors.EmptyInputError` naming the task: a model is never trained or
scored on zero rows.

Example::

    table = to_table(df, task="train_sklearn")     # refuses 0 rows
    for batch in iter_tables(source, 4096): ...    # bounded memory
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rayline.connectors import EmptyInputError

__all__ = [
    "Split",
    "is_in_memory",
    "is_ray_dataset",
    "iter_tables",
    "known_rows",
    "require_rows",
    "table_from_batch",
    "held_out_part",
    "to_dataset",
    "to_table",
    "training_part",
]


@dataclass(frozen=True)
class Split:
    """A train/test split (the output of the ``split`` task).

    Training tasks given a ``Split`` use ``train``; ``evaluate`` uses ``test``.
    """

    train: Any
    test: Any

    def __repr__(self) -> str:
        return f"Split(train={_describe(self.train)}, test={_describe(self.test)})"


def training_part(data: Any) -> Any:
    """``data.train`` for a ``Split``, else ``data``."""
    return data.train if isinstance(data, Split) else data


def held_out_part(data: Any) -> Any:
    """``data.test`` for a ``Split``, else ``data``."""
    return data.test if isinstance(data, Split) else data


def is_ray_dataset(data: Any) -> bool:
    """Whether ``data`` is a ``ray.data.Dataset`` (checked without importing Ray)."""
    return type(data).__module__.startswith("ray.data") and hasattr(data, "iter_batches")


def is_in_memory(data: Any) -> bool:
    """Whether ``data`` is an Arrow table/batch or a pandas DataFrame."""
    return _is_arrow_table(data) or _is_pandas(data)


def _is_pandas(data: Any) -> bool:
    return type(data).__module__.startswith("pandas") and hasattr(data, "columns")


def _is_arrow_table(data: Any) -> bool:
    import pyarrow as pa

    return isinstance(data, pa.Table | pa.RecordBatch)


def _describe(data: Any) -> str:
    n = known_rows(data)
    return f"{type(data).__name__}({n if n is not None else '?'} rows)"


def known_rows(data: Any) -> int | None:
    """The row count when it is known without reading the data, else None."""
    if _is_arrow_table(data):
        return data.num_rows
    if _is_pandas(data):
        return len(data)
    if isinstance(data, list):
        return len(data)
    if is_ray_dataset(data):
        return None  # counting could execute the whole pipeline; the train loop checks instead
    if getattr(data, "empty", None) is True:
        return 0
    n = getattr(data, "num_rows", None)
    return n if isinstance(n, int) else None


def require_rows(data: Any, task: str) -> None:
    """Raise :class:`rayline.connectors.EmptyInputError` if ``data`` is known to have no rows."""
    if data is None:
        raise EmptyInputError(f"task '{task}': got no data (None); pass a table, a Dataset or a source")
    if known_rows(data) == 0:
        raise EmptyInputError(
            f"task '{task}': the input data has 0 rows, so there is nothing to train or score on; "
            "check the upstream read (path, filter, incremental watermark) or skip this run"
        )


def _unsupported(data: Any, task: str) -> TypeError:
    return TypeError(
        f"task '{task}': cannot use {type(data).__module__}.{type(data).__qualname__} as data; "
        "pass a pyarrow Table, a pandas DataFrame, a ray.data.Dataset, or an object with "
        "to_ray_dataset() (e.g. read_parquet's output)"
    )


def table_from_batch(batch: Any) -> Any:
    """A pyarrow Table from a pandas DataFrame, Arrow table/batch, a list of record dicts or a
    dict of columns (what serving receives)."""
    import pyarrow as pa

    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    if _is_pandas(batch):
        return pa.Table.from_pandas(batch, preserve_index=False)
    if isinstance(batch, Mapping):
        return pa.table({k: list(v) if not hasattr(v, "__array__") else v for k, v in batch.items()})
    if isinstance(batch, Sequence) and not isinstance(batch, str | bytes):
        if not batch:
            return pa.table({})
        if not all(isinstance(r, Mapping) for r in batch):
            raise TypeError("a list of records must hold one dict per row, e.g. [{'age': 31}]")
        return pa.Table.from_pylist([dict(r) for r in batch])
    raise TypeError(
        f"cannot read a batch from {type(batch).__name__}; pass a pandas DataFrame, a pyarrow "
        "Table or a list of record dicts"
    )


def to_table(data: Any, task: str) -> Any:
    """The whole of ``data`` as one ``pyarrow.Table`` (materialised), refusing 0 rows.

    Use for in-memory estimators (scikit-learn), evaluation and tuning trials.
    """
    import pyarrow as pa

    require_rows(data, task)
    if _is_arrow_table(data) or _is_pandas(data) or isinstance(data, list | Mapping):
        table = table_from_batch(data)
    elif is_ray_dataset(data):
        table = _dataset_to_table(data)
    elif callable(getattr(data, "to_table", None)):
        table = data.to_table()
    elif callable(getattr(data, "to_ray_dataset", None)):
        table = _dataset_to_table(data.to_ray_dataset())
    else:
        raise _unsupported(data, task)
    if not isinstance(table, pa.Table):
        table = table_from_batch(table)
    if table.num_rows == 0:
        require_rows(table, task)
    return table


def _dataset_to_table(ds: Any) -> Any:
    import pyarrow as pa

    tables = [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
              for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="default")


def to_dataset(data: Any, task: str) -> Any:
    """``data`` as a ``ray.data.Dataset`` (what Ray Train shards across workers)."""
    require_rows(data, task)
    if is_ray_dataset(data):
        return data
    import ray.data

    if _is_arrow_table(data):
        return ray.data.from_arrow(table_from_batch(data))
    if _is_pandas(data):
        return ray.data.from_pandas(data)
    if callable(getattr(data, "to_ray_dataset", None)):
        return data.to_ray_dataset()
    if isinstance(data, list | Mapping):
        return ray.data.from_arrow(table_from_batch(data))
    raise _unsupported(data, task)


def iter_tables(data: Any, batch_size: int = 65536, *, task: str = "task") -> Iterator[Any]:
    """Arrow tables of at most about ``batch_size`` rows over ``data``, in bounded memory."""
    import pyarrow as pa

    require_rows(data, task)
    if _is_arrow_table(data) or _is_pandas(data) or isinstance(data, list | Mapping):
        table = table_from_batch(data)
        for offset in range(0, table.num_rows, batch_size):
            yield table.slice(offset, batch_size)
        return
    if is_ray_dataset(data):
        batches: Any = data.iter_batches(batch_size=batch_size, batch_format="pyarrow")
    elif callable(getattr(data, "iter_batches", None)):
        batches = data.iter_batches()
    elif callable(getattr(data, "to_ray_dataset", None)):
        batches = data.to_ray_dataset().iter_batches(batch_size=batch_size, batch_format="pyarrow")
    else:
        raise _unsupported(data, task)
    for b in batches:
        t = b if isinstance(b, pa.Table) else table_from_batch(b)
        if t.num_rows:
            yield t
