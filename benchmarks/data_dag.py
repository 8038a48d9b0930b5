"""What durability costs on data-heavy DAGs: rayline (default durability, every output
persisted), rayline with ``RAYLINE_PERSIST=marked``, and hand-written raw Ray, in the same run.

Shapes:
- ``diamond``: make a 100 MB float64 array, transform it two ways, sum both (about 300 MB of
  task outputs a run);
- ``mapreduce``: 16 pandas DataFrame partitions made, transformed and reduced;
- ``fanout``: 200 no-op tasks between a source and a sink.

Each variant runs in its own process with its own local Ray (rayline's warm actors in a shared
session would slow raw Ray down and flatter rayline), and every repetition draws new random
data (identical outputs are deduplicated by the content-addressed store and would flatter it
too). Reported: the median wall time per shape and variant over ``--reps`` (after one warm-up),
and each rayline variant's ratio to raw Ray.

    python benchmarks/data_dag.py [--reps 3] [--mb 100] [--partitions 16] [--json]
    python benchmarks/data_dag.py --variant raw --shape diamond   # one variant, one process

``--artifacts-url`` is passed to rayline as ``RAYLINE_ARTIFACTS_URL`` (a local folder by default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

SHAPES = ("diamond", "mapreduce", "fanout")
VARIANTS = ("raw", "default", "marked")


# ------------------------------------------------------------------ the work (plain functions)
def make_array(seed: int, mb: int):
    import numpy as np

    return np.random.default_rng(seed).random(mb * 2**20 // 8)


def scale(a):
    return a * 2.0


def shift(a):
    return a + 1.0


def total(a, b) -> float:
    return float(a.sum() + b.sum())


def make_part(seed: int, i: int, rows: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed * 1000 + i)
    return pd.DataFrame({c: rng.random(rows) for c in ("a", "b", "c", "d")})


def transform(df):
    out = df * 2.0
    out["e"] = out["a"] + out["b"]
    return out


def reduce_parts(parts) -> float:
    return float(sum(p["e"].sum() for p in parts))


def noop(x):
    return x


def count(xs) -> int:
    return len(xs)


# ------------------------------------------------------------------ one variant in this process
def run_raw(shape: str, seed: int, args: argparse.Namespace):
    import ray

    r = {f.__name__: ray.remote(f) for f in (make_array, scale, shift, total, make_part, transform, noop)}
    if shape == "diamond":
        a = r["make_array"].remote(seed, args.mb)
        return ray.get(r["total"].remote(r["scale"].remote(a), r["shift"].remote(a)))
    if shape == "mapreduce":
        parts = [r["transform"].remote(r["make_part"].remote(seed, i, args.rows)) for i in range(args.partitions)]
        return reduce_parts(ray.get(parts))
    src = r["noop"].remote(seed)
    return len(ray.get([r["noop"].remote(src) for _ in range(args.tasks)]))


def rayline_flows(args: argparse.Namespace):
    from rayline import flow, task

    t_make, t_scale, t_shift, t_total = (task(f) for f in (make_array, scale, shift, total))
    t_part, t_transform, t_reduce = task(make_part), task(transform), task(reduce_parts)
    t_noop, t_count = task(noop), task(count)

    @flow(name="bench_diamond")
    def diamond(seed: int = 0):
        a = t_make(seed, args.mb)
        return t_total(t_scale(a), t_shift(a))

    @flow(name="bench_mapreduce")
    def mapreduce(seed: int = 0):
        return t_reduce([t_transform(t_part(seed, i, args.rows)) for i in range(args.partitions)])

    @flow(name="bench_fanout")
    def fanout(seed: int = 0):
        src = t_noop(seed)
        return t_count([t_noop(src) for _ in range(args.tasks)])

    return {"diamond": diamond, "mapreduce": mapreduce, "fanout": fanout}


def one_variant(args: argparse.Namespace) -> dict:
    """Run ``args.shape`` with ``args.variant`` ``args.reps`` times (after a warm-up) here."""
    import ray

    if args.variant != "raw":
        os.environ["RAYLINE_PERSIST"] = "all" if args.variant == "default" else "marked"
        if args.artifacts_url:
            os.environ["RAYLINE_ARTIFACTS_URL"] = args.artifacts_url
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    home = tempfile.mkdtemp(prefix="rayline-bench-dag-")
    go = None
    if args.variant != "raw":
        import rayline
        from rayline.config import Settings

        settings = Settings(home=home)
        flows = rayline_flows(args)

        def go(seed: int):
            run = rayline.run(flows[args.shape], settings=settings, seed=seed)
            assert run.status == "SUCCEEDED", run.error
            return run.result()

    seed0 = int(time.time() * 1000) % 10**6
    times = []
    for rep in range(args.reps + 1):  # rep 0 warms up (workers started, functions exported)
        seed = seed0 + rep
        t0 = time.perf_counter()
        go(seed) if go else run_raw(args.shape, seed, args)
        if rep:
            times.append(time.perf_counter() - t0)
    ray.shutdown()
    return {"shape": args.shape, "variant": args.variant, "median_s": statistics.median(times),
            "reps_s": [round(t, 4) for t in times]}


# ------------------------------------------------------------------ the comparison
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mb", type=int, default=100, help="size of the diamond's array in MB")
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--rows", type=int, default=250_000, help="rows per DataFrame partition")
    ap.add_argument("--tasks", type=int, default=200, help="fan-out width")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--artifacts-url", default="", help="RAYLINE_ARTIFACTS_URL for the rayline variants")
    ap.add_argument("--variant", choices=VARIANTS, help="run one variant here (used by the comparison)")
    ap.add_argument("--shape", choices=SHAPES)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(one_variant(args)))
        return 0

    shapes = {}
    for shape in args.shapes.split(","):
        got = {}
        # raw Ray first and last, rayline's variants between: drift on a busy machine shows up
        # as the two raw timings disagreeing (both are reported).
        for variant in ("raw", "default", "marked", "raw"):
            cmd = [sys.executable, os.path.abspath(__file__), "--variant", variant, "--shape", shape,
                   "--reps", str(args.reps), "--mb", str(args.mb), "--partitions", str(args.partitions),
                   "--rows", str(args.rows), "--tasks", str(args.tasks), "--artifacts-url", args.artifacts_url]
            for _ in range(5):  # a busy machine can make Ray's node start time out: try again
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
                if "timed out during startup" not in out.stderr[-4000:]:
                    break
                time.sleep(20)
            if out.returncode:
                raise SystemExit(f"{shape}/{variant} failed:\n{out.stderr[-4000:]}")
            print(f"{shape}/{variant}: {out.stdout.strip().splitlines()[-1]}", file=sys.stderr)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            got.setdefault(variant, []).append(res)
        raw = statistics.median(r["median_s"] for r in got["raw"])
        shapes[shape] = {
            "raw_s": round(raw, 4),
            "raw_runs_s": [round(r["median_s"], 4) for r in got["raw"]],
            "default_s": round(got["default"][0]["median_s"], 4),
            "marked_s": round(got["marked"][0]["median_s"], 4),
            "default_ratio": round(got["default"][0]["median_s"] / raw, 3),
            "marked_ratio": round(got["marked"][0]["median_s"] / raw, 3),
        }
    result = {
        "benchmark": "data_dag",
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "artifacts": args.artifacts_url or "local folder",
        "reps": args.reps, "mb": args.mb, "partitions": args.partitions, "rows": args.rows,
        **shapes,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for name, s in shapes.items():
            print(f"{name:10s} raw {s['raw_s']:.3f}s  default {s['default_s']:.3f}s ({s['default_ratio']:.2f}x)"
                  f"  marked {s['marked_s']:.3f}s ({s['marked_ratio']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
