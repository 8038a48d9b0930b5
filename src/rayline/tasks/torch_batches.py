"""Where each Ray Train worker's batches come from, and the tensors it keeps between epochs.

A worker reads either its Ray Data shard (``get_dataset_shard``) or its own shard of a
``ParquetSource`` with pyarrow (no Ray Data tasks, so nothing competes with the workers for
CPUs); with several workers the source shards are cut into exact batches up to the same number
of rows, so that every DDP rank takes the same number of steps. After the first epoch a small
shard is kept as tensors (``TensorCache``) so that later epochs skip reading and conversion.

Example::

    for t in rebatch(source.iter_batches(1000), 1024, limit=5000): ...   # 1024-row tables
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rayline.models.training_data import table_from_batch

__all__ = ["CACHE_LIMIT_BYTES", "TensorCache", "cache_for", "epoch_batches", "rebatch"]


CACHE_LIMIT_BYTES = 512 * 2**20


class TensorCache:
    """A worker's batches as tensors, kept after the first epoch when they fit in ``limit``
    bytes, so that later epochs skip Ray Data and the Arrow-to-tensor conversion."""

    def __init__(self, limit: int | None = CACHE_LIMIT_BYTES):
        self.limit = limit
        self.items: list[tuple[Any, Any, Any]] = []
        self.nbytes = 0
        self.overflow = False
        self.ready = False

    def add(self, batch: tuple[Any, Any, Any]) -> None:
        if self.overflow or self.ready:
            return
        x, y, y_np = batch
        self.nbytes += x.element_size() * x.nelement() + y.element_size() * y.nelement() + y_np.nbytes
        if self.limit is not None and self.nbytes > self.limit:
            self.overflow, self.items = True, []
            return
        self.items.append(batch)

    def seal(self) -> None:
        """The first epoch is over: the cache is ``ready``. Unless it overflowed, its batches
        become views of one contiguous tensor (and array) per field, as in a plain loop that
        slices one big tensor — a thousand separate small tensors, allocated between the
        reader's buffers, made each later epoch measurably slower (benchmarks/train.py).
        Concatenating briefly holds two copies, so only caches within ``CACHE_LIMIT_BYTES``."""
        if self.overflow:
            return
        self.ready = True
        if len(self.items) < 2 or self.nbytes > CACHE_LIMIT_BYTES:
            return
        import numpy as np
        import torch

        xs, ys, y_nps = zip(*self.items, strict=True)
        ends = np.cumsum([len(y) for y in ys]).tolist()
        x, y, y_np = torch.cat(xs), torch.cat(ys), np.concatenate(y_nps)
        del xs, ys, y_nps
        self.items = [(x[a:b], y[a:b], y_np[a:b]) for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def epoch_batches(cfg: Any, shards: list[Any] | None, rows: int | None, rank: int) -> Callable[[], Iterable[Any]]:
    """A function giving one epoch's batches for this worker: its Ray Data shard, or its
    ``ParquetSource`` shard read here with pyarrow (cut to ``rows`` in exact batches so that
    every DDP rank takes the same number of steps)."""
    import ray.train

    if shards is None:
        it = ray.train.get_dataset_shard("train")
        return lambda: it.iter_batches(batch_size=cfg.batch_size, batch_format="pyarrow",
                                       local_shuffle_buffer_size=cfg.shuffle_buffer)
    source = shards[rank]
    if rows is None:
        return lambda: source.iter_batches(cfg.batch_size)
    return lambda: rebatch(source.iter_batches(cfg.batch_size), cfg.batch_size, rows)


def rebatch(batches: Iterable[Any], size: int, limit: int | None = None) -> Iterable[Any]:
    """Arrow tables of exactly ``size`` rows (the last one shorter), at most ``limit`` rows."""
    import pyarrow as pa

    buf: list[Any] = []
    held = taken = 0
    for b in batches:
        t = table_from_batch(b)
        if limit is not None:
            t = t.slice(0, max(0, limit - taken - held))
        if t.num_rows:
            buf.append(t)
            held += t.num_rows
        while held >= size:
            whole = pa.concat_tables(buf) if len(buf) > 1 else buf[0]
            yield whole.slice(0, size)
            rest = whole.slice(size)
            buf, held, taken = ([rest] if rest.num_rows else []), held - size, taken + size
        if limit is not None and taken + held >= limit:
            break
    if held:
        yield pa.concat_tables(buf) if len(buf) > 1 else buf[0]


def cache_for(cfg: Any) -> TensorCache | None:
    if cfg.cache_data is False or (cfg.cache_data is None and cfg.shuffle_buffer):
        return None  # a shuffle buffer asks for a new order every epoch: keep streaming
    return TensorCache(None if cfg.cache_data else CACHE_LIMIT_BYTES)
