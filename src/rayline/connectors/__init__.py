"""Connectors: data in and out of flows. One small protocol, a lazy registry, the data errors.

A connector turns a location (a path or URL) into a *source*: a small, picklable value that
describes the data (files, schema, row counts) without loading it, and reads it on demand —
whole, as bounded-memory batches, as per-worker shards, or as a Ray Dataset. Sources travel
between tasks as ordinary values; each worker reads its part straight from storage.

Nothing is imported on ``import rayline.connectors``: the registry names modules, which load
on first use::

    from rayline.connectors import connector

    parquet = connector("parquet")              # imports rayline.connectors.parquet now
    source = parquet.open("data/events/")       # a ParquetSource
    for batch in source.iter_batches(65_536):
        ...

Errors about the *data* (not the code) share one base, ``DataError``; retrying cannot fix
them, so they carry ``retryable = False``::

    RaylineError
    └── DataError                 the input data broke a rule; not worth retrying
        ├── CorruptFileError      a file is not readable Parquet (names file and reason)
        ├── SchemaContractError   files disagree with the schema contract (every problem)
        └── EmptyInputError       no rows: nothing to read, or a task given empty data
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from rayline.errors import RaylineError


class DataError(RaylineError):
    """The input data broke a rule (corrupt file, schema drift, no rows). Not retried."""

    retryable = False


class CorruptFileError(DataError):
    """One or more files are not readable Parquet."""


class SchemaContractError(DataError):
    """Files disagree with the declared (or reference) schema. ``problems`` lists each one."""

    def __init__(self, problems: list[str] | tuple[str, ...], hint: str = ""):
        self.problems = tuple(problems)
        n = len(self.problems)
        lines = [f"schema contract violated ({n} problem{'s' if n != 1 else ''}):"]
        lines += [f"  - {p}" for p in self.problems]
        if hint:
            lines.append(f"  fix: {hint}")
        super().__init__("\n".join(lines))


class EmptyInputError(DataError, ValueError):
    """There are no rows to read (no files, zero-row files, or everything filtered out), or a task
    was given data with no rows: nothing is trained or scored on zero rows."""


@runtime_checkable
class Source(Protocol):
    """What every connector's source offers. Sources are small, frozen and picklable."""

    @property
    def num_rows(self) -> int: ...

    @property
    def empty(self) -> bool: ...

    def to_table(self) -> Any: ...

    def iter_batches(self, batch_size: int = 65_536) -> Iterator[Any]: ...

    def shards(self, n: int) -> list[Any]: ...

    def to_ray_dataset(self) -> Any: ...


class Connector(Protocol):
    """A connector module exposes ``open(location, **options) -> Source``."""

    def open(self, location: str, **options: Any) -> Source: ...


# Lazy plugin table: name -> module that defines ``open``. Imported on first use only.
CONNECTORS: tuple[tuple[str, str], ...] = (
    ("parquet", "rayline.connectors.parquet"),
    ("petastorm", "rayline.connectors.petastorm"),
)


def connector(name: str) -> Connector:
    """The connector registered as ``name`` (its module, imported now).

    Example::

        source = connector("parquet").open("s3://bucket/events/", columns=["id", "label"])
    """
    table = dict(CONNECTORS)
    if name not in table:
        from rayline.errors import DefinitionError

        raise DefinitionError(
            f"no connector named '{name}'; known connectors: {', '.join(sorted(table))}"
        )
    return importlib.import_module(table[name])  # type: ignore[return-value]


__all__ = [
    "CONNECTORS",
    "Connector",
    "CorruptFileError",
    "DataError",
    "EmptyInputError",
    "SchemaContractError",
    "Source",
    "connector",
]
