"""How values become stored bytes and back: Parquet for tables, cloudpickle otherwise.

``to_bytes`` picks the format from the value's type (pyarrow and pandas are imported only for
their own types); ``from_bytes`` decodes what the artifact store has already verified (sha256 and
HMAC) — it is never called on unchecked bytes.

Example::

    data, fmt, kind = to_bytes({"auc": 0.91})      # (b'\\x80\\x05…', 'pickle', 'builtins.dict')
    from_bytes(data, fmt, kind) == {"auc": 0.91}
"""

from __future__ import annotations

import pickle
from typing import Any

__all__ = ["from_bytes", "to_bytes"]


def to_bytes(value: Any) -> tuple[bytes, str, str]:
    """(bytes, format, type). Tables become Parquet; pyarrow/pandas load only for their types."""
    module = type(value).__module__
    if module.startswith(("pyarrow", "pandas")):
        import pyarrow as pa

        table, kind = None, "arrow"
        if isinstance(value, pa.Table):
            table = value
        elif module.startswith("pandas"):
            import pandas as pd

            if isinstance(value, pd.DataFrame):
                try:
                    table, kind = pa.Table.from_pandas(value), "pandas"
                except (pa.ArrowException, TypeError, ValueError):
                    table = None  # mixed-type object columns and the like: pickle instead
        if table is not None:
            import pyarrow.parquet as pq

            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            return sink.getvalue().to_pybytes(), "parquet", kind
    import cloudpickle

    kind = f"{module}.{type(value).__qualname__}"
    return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), "pickle", kind


def from_bytes(data: bytes, fmt: str, kind: str) -> Any:
    """The value ``to_bytes`` encoded; the caller has checked the bytes first."""
    if fmt == "pickle":
        # Safe only because the caller checked the sha256 and the HMAC first.
        return pickle.loads(data)  # noqa: S301
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(pa.BufferReader(data))
        return table.to_pandas() if kind == "pandas" else table
    return data
