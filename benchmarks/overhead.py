"""Orchestration overhead: rayline vs hand-written raw Ray, same process, same Ray session.

Shapes: fan-out/fan-in of N no-op tasks (src -> N x noop(src) -> sink) and a 200-deep chain.
Reports the median wall time of each over --reps repetitions (after one warm-up of each) and
the ratio rayline/ray per shape.

    python benchmarks/overhead.py --tasks 1000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import rayline  # noqa: E402
from rayline import flow, task  # noqa: E402


@task
def noop(x):
    return x


@task
def sink(xs):
    return len(xs)


def fanout_flow(n: int):
    @flow(name=f"fanout_{n}")
    def fanout():
        src = noop(0)
        return sink([noop(src) for _ in range(n)])

    return fanout


def chain_flow(depth: int):
    @flow(name=f"chain_{depth}")
    def chain():
        x = noop(0)
        for _ in range(depth):
            x = noop(x)
        return x

    return chain


def raw_ray(ray):
    @ray.remote
    def r_noop(x):
        return x

    @ray.remote
    def r_sink(*xs):
        return len(xs)

    def fanout(n: int):
        src = r_noop.remote(0)
        return ray.get(r_sink.remote(*[r_noop.remote(src) for _ in range(n)]), timeout=600)

    def chain(depth: int):
        x = r_noop.remote(0)
        for _ in range(depth):
            x = r_noop.remote(x)
        return ray.get(x, timeout=600)

    return fanout, chain


def timed(fn, reps: int) -> tuple[float, list[float]]:
    fn()  # warm-up: worker processes started, functions exported
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000, help="fan-out width N")
    ap.add_argument("--depth", type=int, default=200, help="chain depth")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    import ray

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    home = tempfile.mkdtemp(prefix="rayline-bench-")
    from rayline.config import Settings

    settings = Settings(home=home)
    r_fanout, r_chain = raw_ray(ray)
    f_fan, f_chain = fanout_flow(args.tasks), chain_flow(args.depth)

    def rl(flow_obj, expect):
        def go():
            run = rayline.run(flow_obj, settings=settings)
            assert run.status == "SUCCEEDED", run.error
            assert run.result() == expect
        return go

    shapes = {}
    for name, ours, raw in (
        ("fanout", rl(f_fan, args.tasks), lambda: r_fanout(args.tasks)),
        ("chain", rl(f_chain, 0), lambda: r_chain(args.depth)),
    ):
        ray_s, ray_all = timed(raw, args.reps)
        rl_s, rl_all = timed(ours, args.reps)
        shapes[name] = {
            "tasks": args.tasks + 2 if name == "fanout" else args.depth + 1,
            "rayline_s": round(rl_s, 4),
            "ray_s": round(ray_s, 4),
            "ratio": round(rl_s / ray_s, 3),
            "rayline_reps": [round(t, 4) for t in rl_all],
            "ray_reps": [round(t, 4) for t in ray_all],
        }
    ray.shutdown()
    result = {
        "benchmark": "overhead",
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, ray {ray.__version__}",
        "reps": args.reps,
        **shapes,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for name in ("fanout", "chain"):
            s = shapes[name]
            print(f"{name:7s} {s['tasks']:5d} tasks  rayline {s['rayline_s']:.3f}s  ray {s['ray_s']:.3f}s  ratio {s['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
