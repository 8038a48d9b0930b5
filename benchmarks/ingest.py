"""Parquet ingestion into training batches: rayline's readers vs plain pyarrow and Ray Data.

Every option streams the same dataset in batches of 65,536 rows (all columns) and is measured
in its own fresh process, so that peak memory is its own: the summed PSS of that process and
all its children (Ray's GCS, raylet, object store and workers included), sampled every 0.1 s.
Each option makes ``--passes`` passes per process, in ``--rounds`` rounds run interleaved (so
background load hits every option alike); the best pass counts, the first pass of a process is
reported too. Each option's ``ratio`` is its best rows/s over plain ``pyarrow.dataset``'s best.
The headline ``ratio`` is sturdier on a shared machine: ``--pairs`` alternating passes of
pyarrow and rayline in one process (ab, ba, …), the median of the per-pair ratios.

Options:
  pyarrow_dataset          baseline: ``pyarrow.dataset.dataset(folder).to_batches()``
  ray_data_default         ``ray.data.read_parquet(folder).iter_batches(batch_format="pyarrow")``
  rayline_iter_batches     ``rayline.connectors.parquet.open(folder).iter_batches()`` (default
                           read-ahead); footers are read inside the timed pass
  rayline_readahead_16_4   the same with pyarrow's default read-ahead (16 batches, 4 files)
  rayline_shards_2_tasks   ``source.shards(2)``, each shard read by its own Ray task (what two
                           training workers do); rows/s is the sum over both
  rayline_stream_2_tasks   ``shards.stream_batches(source, 2)``: two reader tasks stream
                           batches through the object store to one consumer
  rayline_to_ray_dataset   ``source.to_ray_dataset().iter_batches()`` (pyarrow reads inside
                           Ray Data tasks)

The dataset (generated once under benchmarks/.data/, gitignored): 32 files x 500k rows, 5 row
groups each, 18 columns as in research/perf.md B3 (~1.9 GB). ``--small``: 8 files x 100k rows.

    python benchmarks/ingest.py --json [--small] [--passes 2] [--rounds 2] [--only a,b]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")
BATCH = 65_536
OPTIONS = [
    "pyarrow_dataset", "rayline_iter_batches", "rayline_readahead_16_4", "rayline_shards_2_tasks",
    "ray_data_default", "rayline_stream_2_tasks", "rayline_to_ray_dataset",
]  # fmt: skip
RAY_OPTIONS = {"ray_data_default", "rayline_shards_2_tasks", "rayline_stream_2_tasks", "rayline_to_ray_dataset"}


# ----------------------------------------------------------------------------- dataset
def ensure_dataset(folder: str, files: int, rows: int, row_group: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    marker = os.path.join(folder, "_COMPLETE")
    if os.path.exists(marker):
        return
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(files):
        ids = np.arange(i * rows, (i + 1) * rows, dtype=np.int64)
        cols: dict[str, object] = {"id": ids}
        for j in range(8):
            cols[f"f32_{j}"] = rng.standard_normal(rows, dtype=np.float32)
        for j in range(4):
            cols[f"f64_{j}"] = rng.standard_normal(rows)
        cols["i32_0"] = rng.integers(0, 1000, rows, dtype=np.int32)
        cols["i32_1"] = rng.integers(-(2**31), 2**31 - 1, rows, dtype=np.int32)
        id_str = pc.cast(pa.array(ids), pa.string())
        cols["user"] = pc.binary_join_element_wise("user-", id_str, "")
        cols["city"] = pc.binary_join_element_wise("city-", pc.cast(pa.array(ids % 9973), pa.string()), "")
        cols["label"] = (rng.random(rows) < 0.3).astype(np.float32)
        pq.write_table(pa.table(cols), os.path.join(folder, f"part-{i:04d}.parquet"), row_group_size=row_group)
    open(marker, "w").close()


def describe(folder: str) -> dict:
    import pyarrow.dataset as ds

    d = ds.dataset(folder, format="parquet")
    frags = list(d.get_fragments())
    rgs = sum(f.num_row_groups for f in frags)
    rows = sum(f.metadata.num_rows for f in frags)
    arrow = sum(f.metadata.row_group(i).total_byte_size for f in frags for i in range(f.num_row_groups))
    disk = sum(os.path.getsize(f.path) for f in frags)
    return {"path": os.path.relpath(folder, os.path.join(HERE, "..")), "files": len(frags), "row_groups": rgs,
            "rows": rows, "columns": len(d.schema), "mb_on_disk": round(disk / 2**20),
            "mb_uncompressed": round(arrow / 2**20)}  # fmt: skip


# ----------------------------------------------------------------------------- one option
def consume(batches) -> int:
    return sum(b.num_rows for b in batches)


def _shard_rows(shard) -> int:
    return consume(shard.iter_batches(BATCH))


def run_option(option: str, folder: str, passes: int) -> None:
    """In a fresh process: set up, signal ready, time ``passes`` passes, print JSON."""
    sys.path.insert(0, SRC)
    import pyarrow.dataset  # noqa: F401 - imports are not part of a pass

    from rayline.connectors import parquet, shards  # noqa: F401

    if option in RAY_OPTIONS:
        import ray
        import ray.data  # noqa: F401

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": SRC}})  # fmt: skip
        ray.get(ray.remote(lambda: None).remote())  # a worker is up before timing
    print(json.dumps({"event": "ready"}), flush=True)
    if "+" in option:  # "a+b": alternate a and b (ab, ba, ab…) so each pair sees the same load
        a, b = option.split("+")
        paired: dict[str, list[float]] = {a: [], b: []}
        for i in range(passes):
            for o in (a, b) if i % 2 == 0 else (b, a):
                t0 = time.perf_counter()
                one_pass(o, folder)
                paired[o].append(time.perf_counter() - t0)
        print(json.dumps({"event": "done", "rows": 0, "passes_s": [], "paired": paired}), flush=True)
        return
    times, rows = [], 0
    for _ in range(passes):
        t0 = time.perf_counter()
        rows = one_pass(option, folder)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"event": "done", "rows": rows, "passes_s": times}), flush=True)


def one_pass(option: str, folder: str) -> int:
    import pyarrow.dataset as ds

    from rayline.connectors import parquet as pqc
    from rayline.connectors import shards

    if option == "pyarrow_dataset":
        return consume(ds.dataset(folder, format="parquet").to_batches(batch_size=BATCH))
    if option == "rayline_iter_batches":
        return consume(pqc.open(folder).iter_batches(BATCH))
    if option == "rayline_readahead_16_4":
        return consume(pqc.open(folder).iter_batches(BATCH, batch_readahead=16, fragment_readahead=4))
    if option == "rayline_shards_2_tasks":
        return sum(shards.run_on_shards(pqc.open(folder), 2, _shard_rows))
    if option == "rayline_stream_2_tasks":
        return consume(shards.stream_batches(pqc.open(folder), 2, BATCH))
    if option == "rayline_to_ray_dataset":
        return consume(pqc.open(folder).to_ray_dataset().iter_batches(batch_size=BATCH, batch_format="pyarrow"))
    if option == "ray_data_default":
        import ray.data

        return consume(ray.data.read_parquet(folder).iter_batches(batch_size=BATCH, batch_format="pyarrow"))
    raise SystemExit(f"unknown option {option}")


# ----------------------------------------------------------------------------- parent
def tree_pss(proc) -> int:
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


def measure(option: str, folder: str, passes: int) -> dict:
    import psutil

    cmd = [sys.executable, os.path.abspath(__file__), "--worker", option, "--data", folder, "--passes", str(passes)]
    log = tempfile.TemporaryFile(mode="w+")  # Ray's logs stay out of the way unless it fails
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONPATH": SRC})
    proc = psutil.Process(child.pid)
    state = {"peak": 0, "idle": 0, "ready": False, "stop": False}

    def sample() -> None:
        while not state["stop"]:
            pss = tree_pss(proc)
            if state["ready"]:
                state["peak"] = max(state["peak"], pss)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result: dict = {}
    for line in child.stdout:  # type: ignore[union-attr]
        if not line.startswith("{"):
            continue
        msg = json.loads(line)
        if msg["event"] == "ready":
            state["idle"] = tree_pss(proc)
            state["ready"] = True
        elif msg["event"] == "done":
            result = msg
            state["stop"] = True  # stop before Ray shuts down
    child.wait()
    state["stop"] = True
    sampler.join()
    if child.returncode != 0 or not result:
        log.seek(0)
        raise RuntimeError(f"{option} failed (exit {child.returncode}):\n{log.read()[-3000:]}")
    log.close()
    return {**result, "peak_mb": round(state["peak"] / 2**20), "idle_mb": round(state["idle"] / 2**20)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object (default: a table too)")
    ap.add_argument("--small", action="store_true", help="a quick run on a ~60 MB dataset")
    ap.add_argument("--passes", type=int, default=2, help="passes per process")
    ap.add_argument("--rounds", type=int, default=None, help="processes per option (default 2; 1 with --small)")
    ap.add_argument("--pairs", type=int, default=None,
                    help="alternating pyarrow/rayline pairs in one process for a paired ratio (default 4; 2 with --small)")
    ap.add_argument("--only", default="", help="comma-separated options (the baseline always runs)")
    ap.add_argument("--data", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    files, rows, rg = (8, 100_000, 50_000) if args.small else (32, 500_000, 100_000)
    folder = args.data or os.path.join(HERE, ".data", "ingest-small" if args.small else "ingest")
    if args.worker:
        run_option(args.worker, folder, args.passes)
        return 0
    ensure_dataset(folder, files, rows, rg)
    options = [o for o in OPTIONS if not args.only or o in args.only.split(",") or o == "pyarrow_dataset"]
    rounds = args.rounds or (1 if args.small else 2)
    args.pairs = args.pairs if args.pairs is not None else (2 if args.small else 4)
    runs: dict[str, list[dict]] = {o: [] for o in options}
    for k in range(rounds):
        for o in options:
            print(f"ingest: round {k + 1}/{rounds}: {o}", file=sys.stderr, flush=True)
            runs[o].append(measure(o, folder, args.passes))
    results = {}
    for o, rs in runs.items():
        passes = [t for r in rs for t in r["passes_s"]]
        best = min(passes)
        results[o] = {"rows_per_s": round(rs[0]["rows"] / best), "s_per_pass": round(best, 3),
                      "first_pass_s": round(min(r["passes_s"][0] for r in rs), 3),
                      "passes_s": [round(t, 3) for t in passes], "rows": rs[0]["rows"],
                      "peak_mb": max(r["peak_mb"] for r in rs), "idle_mb": min(r["idle_mb"] for r in rs)}  # fmt: skip
    base = results["pyarrow_dataset"]["rows_per_s"]
    for r in results.values():
        r["ratio"] = round(r["rows_per_s"] / base, 3)
    default = results.get("rayline_iter_batches", {})
    out = {
        "benchmark": "ingest", "dataset": describe(folder), "batch_size": BATCH, "cpus": os.cpu_count(),
        "passes": args.passes, "rounds": rounds,
        "baseline": "pyarrow_dataset", "rayline": "rayline_iter_batches",
        "ratio": default.get("ratio"), "peak_mb": default.get("peak_mb"), "results": results,
    }  # fmt: skip
    if "rayline_iter_batches" in options and args.pairs:
        print(f"ingest: {args.pairs} alternating pairs pyarrow/rayline", file=sys.stderr, flush=True)
        paired = measure("pyarrow_dataset+rayline_iter_batches", folder, args.pairs)["paired"]
        ratios = sorted(p / r for p, r in zip(paired["pyarrow_dataset"], paired["rayline_iter_batches"], strict=True))
        out["paired"] = {"pairs": len(ratios), "ratios": [round(x, 3) for x in ratios],
                         "ratio_median": round(statistics.median(ratios), 3)}  # fmt: skip
        out["ratio"] = out["paired"]["ratio_median"]  # the noise-robust figure is the headline
    if not args.json:
        for o, r in results.items():
            print(f"{o:26s} {r['rows_per_s'] / 1e6:6.2f} M rows/s  ratio {r['ratio']:.2f}  peak {r['peak_mb']} MB",
                  file=sys.stderr)  # fmt: skip
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
