"""Dask-on-Ray: a Dask DataFrame over a ``ParquetSource`` (or a path), computed by Ray.

``read_dask`` builds one Dask partition per file (or per shard piece run) that reads with the
same pyarrow path as ``ParquetSource.iter_batches`` — same schema contract, projection and
filter, same fsspec filesystems. ``compute_on_ray`` and ``on_ray()`` run Dask graphs as Ray
tasks (``ray.util.dask.ray_dask_get``), so Dask work shares the cluster with the rest of the
flow; dask-ml preprocessors work unchanged inside ``on_ray()``.

Ray tests Dask-on-Ray against older Dask releases; with dask 2026.8 groupby, arrays and
delayed give correct results here (research/ecosystem.md 2.8).

Example::

    from rayline.connectors.dask import read_dask, compute_on_ray, on_ray

    df = read_dask("data/events/", columns=["plan", "spend"])
    totals = compute_on_ray(df.groupby("plan").spend.sum())
    with on_ray():
        scaler = dask_ml.preprocessing.StandardScaler().fit(df[["spend"]])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from rayline.connectors.parquet import ParquetSource
from rayline.connectors.parquet import open as open_parquet


def read_dask(
    source_or_path: ParquetSource | str,
    columns: Sequence[str] | None = None,
    **open_options: Any,
) -> Any:
    """A ``dask.dataframe.DataFrame`` over the same files (one partition per file).

    ``source_or_path`` is a ``ParquetSource`` (from ``read_parquet``) or anything
    ``rayline.connectors.parquet.open`` accepts, with ``open_options`` passed to it.

    Example::

        df = read_dask(source, columns=["age"])
        compute_on_ray(df.age.mean())
    """
    import dask.dataframe as dd

    src = source_or_path if isinstance(source_or_path, ParquetSource) else open_parquet(
        source_or_path, **open_options
    )
    if columns is not None:
        missing = [c for c in columns if c not in src.schema.names]
        if missing:
            from rayline.connectors import SchemaContractError

            raise SchemaContractError(
                [f"{src.url}: column '{c}' was asked for but no file has it" for c in missing],
                hint=f"the columns are: {', '.join(src.schema.names)}",
            )
        src = replace(src, columns=tuple(columns))
    meta = src.read_schema.empty_table().to_pandas()
    parts = _partitions(src)
    if not parts:
        return dd.from_pandas(meta, npartitions=1)
    return dd.from_map(_read_partition, parts, meta=meta, enforce_metadata=False)


def _partitions(src: ParquetSource) -> list[ParquetSource]:
    from rayline.connectors.shards import _subset, pieces_of

    by_file: dict[int, list[Any]] = {}
    for p in pieces_of(src):
        by_file.setdefault(p.file, []).append(p)
    return [_subset(src, ps) for _, ps in sorted(by_file.items())]


def _read_partition(part: ParquetSource) -> Any:
    return part.to_table().to_pandas()


def compute_on_ray(*objs: Any, **kwargs: Any) -> Any:
    """Compute Dask collections with Ray as the scheduler; one object in, one result out.

    Example::

        mean, n = compute_on_ray(df.x.mean(), df.x.count())
    """
    import dask
    from ray.util.dask import ray_dask_get

    results = dask.compute(*objs, scheduler=ray_dask_get, **kwargs)
    return results[0] if len(objs) == 1 else results


@contextlib.contextmanager
def on_ray() -> Iterator[None]:
    """Within the block, every Dask ``compute`` (including dask-ml's) runs on Ray.

    Example::

        with on_ray():
            StandardScaler().fit(df[["x"]])
    """
    import dask
    from ray.util.dask import ray_dask_get

    with dask.config.set(scheduler=ray_dask_get, shuffle_method="tasks"):
        yield


__all__ = ["compute_on_ray", "on_ray", "read_dask"]
