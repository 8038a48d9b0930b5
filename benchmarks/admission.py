"""Admission by queue: its cost per task, and how soon high-priority work starts.

1. Overhead: a fan-out of N no-op tasks run with admission off (no ``RAYLINE_QUEUES``) and on
   (one ``default`` queue without quota), same process, same Ray; median wall time of each over
   --reps (after a warm-up), the ratio and the added milliseconds per task. Admission submits
   only what fits the cluster, so every wave of tasks costs one database transaction and a
   driver round trip (the issue's goal: under 5 % at 1,000 tasks).
2. Time to first task: a low-priority run of 3 x CPUs one-CPU tasks (each sleeping --hold s)
   saturates the cluster; then a priority-10 run of one task starts. Reported: seconds from
   that run's start to its task running, with admission on and off.

    python benchmarks/admission.py --tasks 1000 --reps 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import rayline  # noqa: E402
from rayline import flow, task  # noqa: E402
from rayline.config import Settings  # noqa: E402


@task
def noop(x):
    return x


@task
def sink(xs):
    return len(xs)


@task(cpus=1)
def hold(seconds: float, ledger: str) -> float:
    with open(ledger, "a") as f:
        f.write(f"{time.time()}\n")
    time.sleep(seconds)
    return seconds


@task(cpus=1)
def first(stamp: str) -> float:
    now = time.time()
    Path(stamp).write_text(str(now))
    return now


def fanout_flow(n: int):
    @flow(name=f"admission_fanout_{n}")
    def fanout():
        src = noop(0)
        return sink([noop(src) for _ in range(n)])

    return fanout


def saturating_flow(count: int):
    @flow(name="admission_low", priority=0)
    def low(seconds: float, ledger: str):
        return [hold(seconds, ledger) for _ in range(count)]

    return low


@flow(name="admission_high", priority=10)
def high(stamp: str):
    return first(stamp)


def queues_env(on: bool, path: str) -> None:
    if on:
        os.environ["RAYLINE_QUEUES"] = path
    else:
        os.environ.pop("RAYLINE_QUEUES", None)


def overhead(settings: Settings, n: int, reps: int, queues: str) -> dict:
    f = fanout_flow(n)

    def go() -> float:
        t0 = time.perf_counter()
        run = rayline.run(f, settings=settings)
        assert run.status == "SUCCEEDED" and run.result() == n, run.error
        return time.perf_counter() - t0

    out = {}
    for label, on in (("direct", False), ("admission", True)):
        queues_env(on, queues)
        go()  # warm-up
        out[label] = [go() for _ in range(reps)]
    queues_env(False, queues)
    direct, admitted = statistics.median(out["direct"]), statistics.median(out["admission"])
    return {"tasks": n + 2, "direct_s": round(direct, 4), "admission_s": round(admitted, 4),
            "ratio": round(admitted / direct, 3), "added_ms_per_task": round((admitted - direct) / (n + 2) * 1000, 3),
            "direct_reps": [round(t, 4) for t in out["direct"]],
            "admission_reps": [round(t, 4) for t in out["admission"]]}  # fmt: skip


def first_task_latency(settings: Settings, cpus: int, hold_s: float, queues: str, on: bool) -> float:
    queues_env(on, queues)
    tmp = Path(tempfile.mkdtemp(prefix="rayline-admission-"))
    ledger, stamp = tmp / "ledger", tmp / "stamp"
    low = threading.Thread(target=rayline.run, args=(saturating_flow(3 * cpus), {"seconds": hold_s,
                           "ledger": str(ledger)}), kwargs={"settings": settings}, daemon=True)  # fmt: skip
    low.start()
    deadline = time.monotonic() + 120
    while not (ledger.exists() and len(ledger.read_text().split()) >= cpus):
        if time.monotonic() > deadline:
            raise RuntimeError("the low-priority run never saturated the cluster")
        time.sleep(0.02)
    submitted = time.time()
    run = rayline.run(high, {"stamp": str(stamp)}, settings=settings)
    assert run.status == "SUCCEEDED", run.error
    low.join(timeout=600)
    queues_env(False, queues)
    return round(float(stamp.read_text()) - submitted, 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000, help="fan-out width N")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=min(os.cpu_count() or 2, 8), help="Ray's CPUs")
    ap.add_argument("--hold", type=float, default=2.0, help="seconds each saturating task runs")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    import ray

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    home = tempfile.mkdtemp(prefix="rayline-bench-")
    queues = os.path.join(home, "queues.yaml")
    Path(queues).write_text("queues:\n  - name: default\n")
    settings = Settings(home=home, pool="off")
    result = {
        "benchmark": "admission",
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, ray {ray.__version__}",
        "cpus": args.cpus,
        "overhead": overhead(settings, args.tasks, args.reps, queues),
        "first_task_s": {
            "admission": first_task_latency(settings, args.cpus, args.hold, queues, on=True),
            "direct": first_task_latency(settings, args.cpus, args.hold, queues, on=False),
            "saturating_task_s": args.hold,
        },
    }
    ray.shutdown()
    if args.json:
        print(json.dumps(result))
    else:
        o, f = result["overhead"], result["first_task_s"]
        print(f"overhead  {o['tasks']} tasks  direct {o['direct_s']:.3f}s  admission {o['admission_s']:.3f}s  "
              f"ratio {o['ratio']:.2f}  (+{o['added_ms_per_task']:.2f} ms/task)")
        print(f"first high-priority task after {f['admission']:.2f}s with admission, {f['direct']:.2f}s without")
    return 0


if __name__ == "__main__":
    sys.exit(main())
