"""Start-up costs: `import rayline` (must not import Ray) and compiling a 10,000-node graph.

Baselines in the same run: `import ray`, and building the same 10,000-node DAG with Ray's own
lazy `.bind()` API (no execution) — the cheapest way Ray itself has to describe such a graph.

    python benchmarks/startup.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")


def import_time(module: str, reps: int) -> float:
    """Best wall time of a fresh interpreter importing ``module``, minus an empty interpreter."""
    def best(code: str) -> float:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": SRC})
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(f"import {module}") - best("pass")


def compile_10k(n: int) -> float:
    sys.path.insert(0, SRC)
    from rayline import flow, task
    from rayline.engine.compiler import compile_plan

    @task
    def noop(x):
        return x

    @flow
    def big():
        s = noop(0)
        return noop([noop(s) for _ in range(n)])

    t0 = time.perf_counter()
    plan = compile_plan(big.graph(), {})
    dt = time.perf_counter() - t0
    assert len(plan.nodes) == n + 2
    return dt


def ray_bind_10k(n: int) -> float:
    import ray

    @ray.remote
    def noop(x):
        return x

    t0 = time.perf_counter()
    s = noop.bind(0)
    noop.bind([noop.bind(s) for _ in range(n)])
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rl_import, ray_import = import_time("rayline", args.reps), import_time("ray", args.reps)
    rl_compile = min(compile_10k(args.nodes) for _ in range(3))
    ray_bind = min(ray_bind_10k(args.nodes) for _ in range(3))
    out = {
        "benchmark": "startup",
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "import": {"rayline_s": round(rl_import, 4), "ray_s": round(ray_import, 4), "ratio": round(rl_import / ray_import, 3)},
        "compile": {
            "nodes": args.nodes + 2,
            "rayline_s": round(rl_compile, 4),
            "ray_bind_s": round(ray_bind, 4),
            "ratio": round(rl_compile / ray_bind, 3),
        },
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
