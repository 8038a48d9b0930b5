"""The petastorm bridge process: runs in the side env (pyarrow 14, numpy < 2, petastorm 0.13.1),
reads with petastorm's own reader and writes ONLY an Arrow IPC stream to its stdout.

Started by ``rayline.connectors.petastorm_bridge.stream_bridge`` as
``.petastorm-venv/bin/python -s scripts/petastorm_bridge_main.py`` with a JSON request on stdin::

    {"url": ..., "columns": [...] | null, "predicate": {"op": ..., "args": [...]} | null,
     "reader_options": {...}, "cur_shard": int | null, "shard_count": int | null,
     "batch_rows": int, "codecs_path": ".../rayline/connectors/petastorm_codecs.py"}

Stdout carries only the stream: before anything is imported, fd 1 is duplicated for the stream
and then pointed at stderr, so stray prints from petastorm or its dependencies go to stderr
instead of corrupting the stream (shared/research/ecosystem.md §1.4). Errors: a traceback on
stderr and exit status 1. It leaves with os._exit, skipping interpreter teardown.

The stored Unischema is unpickled with rayline's restricted unpickler (``petastorm_codecs``,
loaded by path: rayline itself is not installed here) instead of petastorm's, which allows any
global of whole packages such as ``builtins``. Allowed names resolve to petastorm's real
classes; pyspark type names to inert stand-ins when pyspark is not installed (reading never
uses them), so ``make_reader`` works without pyspark.
"""

from __future__ import annotations

import os
import sys

STREAM = os.fdopen(os.dup(1), "wb")  # the only writer of the real stdout
os.dup2(2, 1)
sys.stdout = sys.stderr

import base64  # noqa: E402 - after the stdout redirection, on purpose
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402


def load_codecs(path: str) -> ModuleType:
    """rayline's ``petastorm_codecs`` module, loaded from its file (stdlib, numpy, pyarrow)."""
    spec = importlib.util.spec_from_file_location("rayline_petastorm_codecs", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def real_class(codecs: ModuleType) -> Any:
    """Resolver for ``RestrictedUnpickler``: petastorm's own classes for the allowed names."""

    def resolve(module: str, name: str) -> Any:
        if module.startswith("petastorm."):
            return getattr(importlib.import_module(module), name)
        if module == "pyspark.sql.types":
            try:
                return getattr(importlib.import_module(module), name)
            except ImportError:
                return codecs.stand_in(module, name)
        return codecs.ALLOWED[(module, name)](module, name)

    return resolve


def build_predicate(spec: dict | None) -> Any:
    """A ``petastorm.predicates`` object from its JSON form (``Predicate.to_json``)."""
    if spec is None:
        return None
    from petastorm import predicates as p

    op, args = spec["op"], spec["args"]
    if op in ("in_set", "in_intersection"):
        return getattr(p, op)(args[0], args[1])
    if op == "in_negate":
        return p.in_negate(build_predicate(args[0]))
    if op == "in_reduce":
        return p.in_reduce([build_predicate(a) for a in args[0]], {"all": all, "any": any}[args[1]])
    if op == "in_pseudorandom_split":
        return p.in_pseudorandom_split(args[0], args[1], args[2])
    if op == "in_lambda":
        import cloudpickle  # the caller's own function, shipped by value

        func, state = cloudpickle.loads(base64.b64decode(args[1]))
        return p.in_lambda(args[0], func, state) if state is not None else p.in_lambda(args[0], func)
    raise ValueError(f"unknown predicate op {op!r}")


def has_unischema(url: str) -> bool:
    from petastorm.etl.dataset_metadata import PetastormMetadataError, get_schema_from_dataset_url

    try:
        get_schema_from_dataset_url(url)
    except PetastormMetadataError:
        return False
    return True


def main() -> int:
    request = json.load(sys.stdin)
    codecs = load_codecs(request["codecs_path"])

    import pyarrow as pa
    from petastorm import make_batch_reader, make_reader
    from petastorm.etl import legacy

    legacy.restricted_loads = lambda data: codecs.load_unischema(data, real_class(codecs))
    url = request["url"]
    if "://" not in url:
        url = "file://" + os.path.abspath(url)
    options = {"reader_pool_type": "dummy", "shuffle_row_groups": False, "num_epochs": 1,
               **request["reader_options"]}  # fmt: skip
    if request["shard_count"] is not None:
        options.update(cur_shard=request["cur_shard"], shard_count=request["shard_count"])
    batched = not has_unischema(url)
    make = make_batch_reader if batched else make_reader
    with make(url, schema_fields=request["columns"], predicate=build_predicate(request["predicate"]),
              **options) as reader:  # fmt: skip
        names = request["columns"] or list(reader.schema.fields)
        fields = [reader.schema.fields[n] for n in names]
        schema = codecs.arrow_schema(fields)
        with pa.ipc.new_stream(STREAM, schema) as writer:
            for rows in _chunks(reader, request["batch_rows"], batched):
                # petastorm's make_reader goes through pandas, which turns null floats into NaN
                columns = [codecs.column_from_arrays(f, [getattr(r, f.name) for r in rows],
                                                     nan_is_null=bool(f.nullable)) for f in fields]  # fmt: skip
                writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
    STREAM.flush()
    return 0


def _chunks(reader: Any, size: int, batched: bool) -> Any:
    """Lists of at most ``size`` rows (namedtuples), from row or column-batch readers."""
    rows: list[Any] = []
    for item in reader:
        if batched:  # make_batch_reader yields a namedtuple of column arrays
            rows.extend(type(item)(*vals) for vals in zip(*item, strict=True))
        else:
            rows.append(item)
        while len(rows) >= size:
            yield rows[:size]
            rows = rows[size:]
    if rows:
        yield rows


if __name__ == "__main__":
    try:
        code = main()
    except BrokenPipeError:  # the consumer stopped reading; nothing to report
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    try:
        STREAM.close()
    except OSError:
        pass
    # Leave without interpreter teardown: the stream is complete and flushed, and tearing down
    # pyarrow 14's native thread pools at exit sometimes aborts ("terminate called without an
    # active exception", seen on a loaded CI machine), which would turn a finished read into a
    # failed one.
    sys.stderr.flush()
    os._exit(code)
