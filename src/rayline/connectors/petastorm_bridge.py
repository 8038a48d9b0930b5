"""The optional petastorm side environment and the bridge that streams Arrow from it.

Petastorm 0.13.1 only runs with pyarrow ≤ 14 and numpy < 2, so its own reader (``make_reader``
with predicates and row-group shards, ``make_batch_reader`` for plain Parquet) runs in a separate
virtualenv, ``.petastorm-venv/`` (``make petastorm-env`` → ``build_env``; no pyspark, no Java).
A *bridge process* there (``scripts/petastorm_bridge_main.py``) reads a JSON request on stdin and
writes only an Arrow IPC stream to stdout; this side reads the stream with its own pyarrow.
Bytes cross, never pickled pyarrow objects (they do not survive a pyarrow version change).

``PetastormBridgeSource`` is what ``read_petastorm(url, engine="bridge")`` returns: iterate it
locally (one bridge process), or ``to_ray_dataset()`` through ``PetastormBridgeDatasource``,
whose read tasks each run one bridge process over petastorm shard ``(cur_shard, shard_count)``.

Example::

    build_env()                                           # once: ~1-2 minutes, cached
    src = read_petastorm(url, engine="bridge", predicate=in_set([0, 1], "label"))
    ds = src.to_ray_dataset()                             # Ray Data over bridge processes
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from rayline.connectors.petastorm_predicates import Predicate
from rayline.errors import DefinitionError, RaylineError

REPO = Path(__file__).resolve().parents[3]
BRIDGE_SCRIPT = REPO / "scripts" / "petastorm_bridge_main.py"
CODECS_MODULE = Path(__file__).resolve().with_name("petastorm_codecs.py")
DEFAULT_ENV = REPO / ".petastorm-venv"
# The newest combination petastorm 0.13.1 runs with (shared/research/ecosystem.md §1.5), plus
# cloudpickle for in_lambda predicates. petastorm itself goes in with --no-deps: it would pull
# pyspark (345 MB), which reading does not need.
REQUIREMENTS = ("pyarrow==14.0.2", "numpy<2", "pandas<2.3", "setuptools<70", "dill", "diskcache",
                "fsspec", "future", "packaging", "psutil", "pyzmq", "six", "cloudpickle")  # fmt: skip
PETASTORM = "petastorm==0.13.1"
STAMP = ".rayline-petastorm.json"


class PetastormBridgeError(RaylineError):
    """The side environment is missing or broken, or the bridge process failed (its stderr)."""


# ---------------------------------------------------------------------------- environment
def env_path(env: str | os.PathLike[str] | None = None) -> Path:
    """The side environment's folder: ``env``, ``$RAYLINE_PETASTORM_ENV`` or ``.petastorm-venv``."""
    return Path(env or os.environ.get("RAYLINE_PETASTORM_ENV") or DEFAULT_ENV).resolve()


def _wanted(python: str) -> dict[str, Any]:
    return {"requirements": [*REQUIREMENTS, PETASTORM], "python": python}


def _base_python() -> str:
    explicit = os.environ.get("PETASTORM_PYTHON")
    if explicit:
        return explicit
    if sys.version_info[:2] not in ((3, 11), (3, 12)):
        raise PetastormBridgeError(
            f"the petastorm side env needs Python 3.11 or 3.12 (pyarrow 14 has no wheels for "
            f"{sys.version_info.major}.{sys.version_info.minor}). fix: PETASTORM_PYTHON=/path/to/python3.11"
        )
    return getattr(sys, "_base_executable", sys.executable)


def build_env(env: str | os.PathLike[str] | None = None, *, python: str | None = None) -> Path:
    """Build the side environment (once; a no-op when its stamp matches) and return its folder.

    Builds into a temporary folder next to it and renames it into place, under a file lock, so
    concurrent callers never see half an environment. Uses ``uv`` (with ``--compile-bytecode``)
    when it is on PATH, else ``venv`` + pip. Raises ``PetastormBridgeError`` with pip's output.
    """
    target = env_path(env)
    python = python or _base_python()
    wanted = _wanted(python)
    target.parent.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(str(target).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"rayline-petastorm-env-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _stamp(target) == wanted:
            return target
        for stale in target.parent.glob(f"{target.name}.build-*"):  # a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f"{target.name}.build-", dir=target.parent))
        try:
            _install(work, python)
            (work / STAMP).write_text(json.dumps(wanted))
            if target.exists():
                shutil.rmtree(target)
            work.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _stamp(target: Path) -> dict[str, Any] | None:
    try:
        return json.loads((target / STAMP).read_text())
    except (OSError, ValueError):
        return None


def _install(work: Path, python: str) -> None:
    uv = shutil.which("uv")
    if uv:
        steps = [[uv, "venv", "-q", "--python", python, str(work)],
                 [uv, "pip", "install", "-q", "--compile-bytecode", "--python", str(work / "bin" / "python"), *REQUIREMENTS],
                 [uv, "pip", "install", "-q", "--compile-bytecode", "--no-deps", "--python", str(work / "bin" / "python"), PETASTORM]]  # fmt: skip
    else:
        pip = [str(work / "bin" / "python"), "-m", "pip", "install", "-q", "--no-input", "--disable-pip-version-check"]
        steps = [[python, "-m", "venv", str(work)], [*pip, *REQUIREMENTS], [*pip, "--no-deps", PETASTORM]]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env())
        if done.returncode != 0:
            raise PetastormBridgeError(
                f"building the petastorm side env failed at `{' '.join(cmd)}` (exit {done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-4000:]}"
            )


def _clean_env() -> dict[str, str]:
    """This process's environment without what would leak the main env into the side env."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONSAFEPATH")
    return {k: v for k, v in os.environ.items() if k not in drop}


def check_env(env: str | os.PathLike[str] | None = None) -> Path:
    """The side environment's python, or ``PetastormBridgeError`` saying how to build it."""
    target = env_path(env)
    python = target / "bin" / "python"
    if not python.exists() or _stamp(target) is None:
        raise PetastormBridgeError(
            f"the petastorm side environment {target} is missing. fix: run `make petastorm-env` "
            "(or rayline.connectors.petastorm_bridge.build_env()), or pass env= / set "
            "RAYLINE_PETASTORM_ENV to where it is built"
        )
    return python


# ---------------------------------------------------------------------------- streaming
def stream_bridge(request: Mapping[str, Any], env: str | os.PathLike[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Run one bridge process for ``request`` and yield the record batches it streams."""
    python = check_env(env)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([str(python), "-s", str(BRIDGE_SCRIPT)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, env=_clean_env())  # fmt: skip
        try:
            try:
                proc.stdin.write(json.dumps({**request, "codecs_path": str(CODECS_MODULE)}).encode())  # type: ignore[union-attr]
                proc.stdin.close()  # type: ignore[union-attr]
                yield from pa.ipc.open_stream(proc.stdout)
            except (pa.ArrowInvalid, BrokenPipeError, OSError) as exc:
                proc.wait()
                raise _failure(proc, err, f"the stream broke ({exc})") from None
            if proc.wait() != 0:
                raise _failure(proc, err, "the stream ended")
        finally:
            if proc.poll() is None:  # the consumer stopped early
                proc.kill()
                proc.wait()


def _failure(proc: subprocess.Popen, err: Any, what: str) -> PetastormBridgeError:
    err.seek(0)
    tail = err.read().decode(errors="replace")[-4000:]
    return PetastormBridgeError(f"petastorm bridge process exited with {proc.returncode}; {what}. Its stderr:\n{tail}")


@dataclass(frozen=True, eq=False)
class PetastormBridgeSource:
    """A dataset read by petastorm's own reader in the side env; ``shard`` is petastorm's
    ``(cur_shard, shard_count)`` over row groups. Picklable; opens no process until read."""

    url: str
    env: str
    columns: tuple[str, ...] | None = None
    predicate: Predicate | None = None
    reader_options: tuple[tuple[str, Any], ...] = ()
    shard: tuple[int, int] | None = None
    batch_rows: int = 4096
    row_groups: tuple[int, ...] = ()  # rows in each row group, in petastorm's (path) order
    schema: pa.Schema | None = None  # decoded schema when the dataset has a Unischema
    rows: int | None = field(default=None, repr=False)

    @classmethod
    def open(cls, url: str, *, columns: Sequence[str] | None = None, predicate: Predicate | None = None,
             storage_options: Mapping[str, Any] | None = None, reader_options: Mapping[str, Any] | None = None,
             env: str | os.PathLike[str] | None = None, batch_rows: int = 4096) -> PetastormBridgeSource:  # fmt: skip
        """Check the side env and the dataset (footers; Unischema when there is one)."""
        from rayline.connectors.parquet import open as open_parquet
        from rayline.connectors.petastorm import read_unischema, select_fields
        from rayline.connectors.petastorm_codecs import PetastormDataError, arrow_schema

        if predicate is not None and not isinstance(predicate, Predicate):
            raise DefinitionError("predicate= takes a rayline.connectors.petastorm_predicates predicate "
                                  "(in_set, in_lambda, …), not a petastorm object")  # fmt: skip
        check_env(env)
        stored = open_parquet(url, storage_options=storage_options, on_empty="skip")
        try:
            unischema = read_unischema(url, storage_options)
            schema = arrow_schema(select_fields(unischema, columns, url))
        except PetastormDataError as exc:
            if "no _common_metadata" not in str(exc) and "holds no Unischema" not in str(exc):
                raise
            schema = None  # plain Parquet: petastorm's make_batch_reader infers the schema
        rgs = tuple(n for f in stored.files for n in f.row_groups)
        rows = None if predicate is not None else sum(rgs)
        return cls(url=url, env=str(env_path(env)), columns=tuple(columns) if columns else None,
                   predicate=predicate, reader_options=tuple(sorted((reader_options or {}).items())),
                   batch_rows=batch_rows, row_groups=rgs, schema=schema, rows=rows)  # fmt: skip

    # ------------------------------------------------------------------ facts
    @property
    def shard_row_groups(self) -> list[int]:
        """Indices of the row groups this source reads (petastorm: ``index % count == cur``)."""
        cur, count = self.shard or (0, 1)
        return [i for i in range(len(self.row_groups)) if i % count == cur]

    @property
    def num_rows(self) -> int:
        """Rows from the footers; with a predicate, counted by streaming once."""
        if self.rows is None:
            rows = (sum(b.num_rows for b in self.iter_batches()) if self.predicate is not None
                    else sum(self.row_groups[i] for i in self.shard_row_groups))  # fmt: skip
            object.__setattr__(self, "rows", rows)
        return int(self.rows)  # type: ignore[arg-type]

    @property
    def empty(self) -> bool:
        return self.num_rows == 0

    def request(self) -> dict[str, Any]:
        """The JSON request the bridge process reads."""
        cur, count = self.shard or (None, None)
        return {"url": self.url, "columns": list(self.columns) if self.columns else None,
                "predicate": self.predicate.to_json() if self.predicate else None,
                "reader_options": dict(self.reader_options), "cur_shard": cur,
                "shard_count": count, "batch_rows": self.batch_rows}  # fmt: skip

    # ------------------------------------------------------------------ reading
    def iter_batches(self, batch_size: int | None = None, *, batch_format: str = "pyarrow") -> Iterator[Any]:
        """Stream decoded batches from one bridge process (``batch_size`` rows each, default
        ``batch_rows``)."""
        from rayline.connectors.petastorm import format_batches

        src = self if batch_size is None else replace(self, batch_rows=batch_size)
        if not src.shard_row_groups:
            return iter(())
        return format_batches(stream_bridge(src.request(), src.env), batch_format)

    def to_table(self) -> pa.Table:
        batches = list(self.iter_batches())
        if batches:
            return pa.Table.from_batches(batches)
        return (self.schema or pa.schema([])).empty_table()

    def shards(self, n: int) -> list[PetastormBridgeSource]:
        """``n`` petastorm shards of this source's row groups (round robin, as petastorm does)."""
        if not isinstance(n, int) or n < 1:
            raise DefinitionError(f"shards(n): n must be a whole number >= 1, got {n!r}")
        cur, count = self.shard or (0, 1)
        return [replace(self, shard=(cur + count * j, count * n), rows=None) for j in range(n)]

    def to_ray_dataset(self, **read_args: Any) -> Any:
        """A ``ray.data.Dataset`` read by bridge processes (``read_args`` go to
        ``ray.data.read_datasource``, e.g. ``override_num_blocks``)."""
        import ray.data

        from rayline.connectors.petastorm_bridge import PetastormBridgeDatasource

        return ray.data.read_datasource(PetastormBridgeDatasource(self), **read_args)


def _read_blocks(source: PetastormBridgeSource) -> Iterator[pa.Table]:
    for batch in source.iter_batches():
        yield pa.Table.from_batches([batch])


def _datasource_class() -> type:
    """``PetastormBridgeDatasource``, defined on first use so that importing this module does
    not import Ray Data; module ``__getattr__`` keeps it picklable by name."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class PetastormBridgeDatasource(Datasource):
        """Ray Data datasource: one read task per petastorm shard, each streaming from its own
        bridge process in the side env. The side env must exist on every node (same path)."""

        def __init__(self, source: PetastormBridgeSource):
            super().__init__()
            self._source = source

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[ReadTask]:  # fmt: skip
            groups = len(self._source.shard_row_groups)
            n = max(1, min(parallelism if parallelism > 0 else groups, groups))
            tasks = []
            for shard in self._source.shards(n) if groups else []:
                rows = None if shard.predicate is not None else shard.num_rows
                meta = BlockMetadata(num_rows=rows, size_bytes=None, input_files=None, exec_stats=None)
                tasks.append(ReadTask(lambda s=shard: _read_blocks(s), meta, schema=shard.schema,
                                      per_task_row_limit=per_task_row_limit))  # fmt: skip
            return tasks

        def get_name(self) -> str:
            return "PetastormBridge"

    PetastormBridgeDatasource.__module__ = __name__
    PetastormBridgeDatasource.__qualname__ = "PetastormBridgeDatasource"
    return PetastormBridgeDatasource


def __getattr__(name: str) -> Any:
    if name == "PetastormBridgeDatasource":  # built once, then an ordinary module attribute
        cls = globals()[name] = _datasource_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rayline.connectors.petastorm_bridge build-env [PATH]`` (``make petastorm-env``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "build-env":
        print("usage: python -m rayline.connectors.petastorm_bridge build-env [PATH]", file=sys.stderr)
        return 2
    print(f"petastorm side env ready: {build_env(args[1] if len(args) > 1 else None)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
