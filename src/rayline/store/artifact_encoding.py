"""How values become stored bytes and back: Parquet (or Arrow IPC) for tables, cloudpickle
otherwise.

``to_bytes`` picks the format from the value's type (pyarrow and pandas are imported only for
their own types). ``encode``, for large values, writes to a sink instead, without building the
bytes in memory first: a pickle's large buffers (protocol 5: numpy arrays) go straight from the
value to ``sink.write``, and a table becomes an Arrow IPC file whose column buffers go the same
way (Parquet would re-encode every value). ``from_bytes`` decodes what the artifact store has
already verified (sha256 and HMAC) — it is never called on unchecked bytes.

Parquet is written uncompressed, dictionary-encoded only for its non-numeric columns (snappy
and dictionaries cost ten times the write and save nothing on floats).

Example::

    data, fmt, kind = to_bytes({"auc": 0.91})      # (b'\\x80\\x05…', 'pickle', 'builtins.dict')
    from_bytes(data, fmt, kind) == {"auc": 0.91}
"""

from __future__ import annotations

import functools
import io
import pickle
from typing import Any, Protocol

__all__ = ["encode", "from_bytes", "size_hint", "to_bytes"]


class Sink(Protocol):
    def write(self, data: Any) -> int: ...


def to_bytes(value: Any) -> tuple[bytes, str, str]:
    """(bytes, format, type). Tables become Parquet; pyarrow/pandas load only for their types."""
    table, kind = _as_table(value)
    if table is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = pa.BufferOutputStream()
        numeric = {f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)}
        pq.write_table(table, out, compression="none",
                       use_dictionary=[c for c in table.column_names if c not in numeric])  # fmt: skip
        return out.getvalue().to_pybytes(), "parquet", kind
    buffer = io.BytesIO()
    _pickle(value, buffer)
    return buffer.getvalue(), "pickle", _kind(value)


def encode(value: Any, sink: Sink) -> tuple[str, str]:
    """Write a large ``value`` to ``sink`` without building its bytes first; (format, type).

    A table or frame becomes an Arrow IPC file (``arrow``): its column buffers go to ``sink``
    as they are; anything else is pickled as ``to_bytes`` pickles it, its large buffers passed
    to ``sink.write`` straight from the value's memory."""
    table, kind = _as_table(value)
    if table is not None:
        import pyarrow as pa

        with pa.ipc.new_file(pa.PythonFile(_Stream(sink), mode="w"), table.schema) as writer:
            writer.write_table(table)
        return "arrow", kind
    _pickle(value, sink)
    return "pickle", _kind(value)


def _kind(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _pickle(value: Any, sink: Sink) -> None:
    _pickler()(sink, protocol=pickle.HIGHEST_PROTOCOL).dump(value)


class _Stream:
    """``sink`` as the writable file pyarrow's ``PythonFile`` expects."""

    closed = False

    def __init__(self, sink: Sink) -> None:
        self.write = sink.write

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _as_table(value: Any) -> tuple[Any, str]:
    module = type(value).__module__
    if not module.startswith(("pyarrow", "pandas")):
        return None, ""
    import pyarrow as pa

    if isinstance(value, pa.Table):
        return value, "arrow"
    if module.startswith("pandas"):
        import pandas as pd

        if isinstance(value, pd.DataFrame):
            try:
                return pa.Table.from_pandas(value), "pandas"
            except (pa.ArrowException, TypeError, ValueError):
                pass  # mixed-type object columns and the like: pickle instead
    return None, ""


def size_hint(value: Any, depth: int = 0) -> int | None:
    """The bytes an array, table, frame or byte string (or a list, tuple or dict of them) holds
    in memory, read from the objects without serialising them; None for anything else."""
    t = type(value)
    if t is bytes or t is bytearray:
        return len(value)
    if t is memoryview:
        return value.nbytes
    module = t.__module__
    try:
        if module.startswith("pandas"):
            used = value.memory_usage(index=True, deep=False)
            return int(used if isinstance(used, int) else used.sum())
        if module.startswith(("numpy", "pyarrow")):
            return int(value.nbytes)
    except (AttributeError, TypeError, ValueError):
        return None
    if depth < 2 and (t is list or t is tuple or t is dict) and len(value) <= 10_000:
        sizes = [size_hint(v, depth + 1) for v in (value.values() if t is dict else value)]
        known = [s for s in sizes if s is not None]
        return sum(known) if known else None
    return None


@functools.cache
def _pickler() -> Any:
    """cloudpickle's pickler, except that a read-only numpy array (as Ray hands them out, backed
    by its object store) is stored so that it loads writable, as the task's own value was."""
    import cloudpickle

    class Pickler(cloudpickle.Pickler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._views: dict[int, Any] = {}

        def reducer_override(self, obj: Any) -> Any:
            t = type(obj)
            if t.__name__ == "ndarray" and t.__module__ == "numpy" and id(obj) not in self._views:
                if not obj.flags.writeable and not obj.dtype.hasobject:
                    import numpy

                    view = obj.view()  # pickled as numpy pickles it: no copy of the data
                    self._views[id(view)] = view
                    return numpy.array, (view,)  # copied once on load, so writable again
            return super().reducer_override(obj)

    return Pickler


def from_bytes(data: bytes, fmt: str, kind: str) -> Any:
    """The value ``to_bytes`` encoded; the caller has checked the bytes first."""
    if fmt == "pickle":
        # Safe only because the caller checked the sha256 and the HMAC first.
        return pickle.loads(data)  # noqa: S301
    if fmt in ("parquet", "arrow"):
        import pyarrow as pa

        if fmt == "arrow":
            table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(pa.BufferReader(data))
        return table.to_pandas() if kind == "pandas" else table
    return data
