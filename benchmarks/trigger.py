"""Trigger latency: seconds from a new file landing in a watched directory to its run starting
(RUNNING), with the default polling (1 s interval, 1 s debounce), through the real
``rayline scheduler`` (a child process per run, in-process executor so Ray start-up is not
counted). Goal: under 5 s.

Baselines in the same run: a hand-written ``os.scandir`` poll loop with the same 1 s interval
(how long merely noticing the file takes), and the polling interval itself. Files land at random
phases of the polling period, written to a temporary name and renamed, as a producer should.

    python benchmarks/trigger.py --json [--files 8] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

FLOW = '''
from rayline import flow, task

@task
def note(snapshot: str) -> str:
    return snapshot[:12]

@flow
def retrain(snapshot: str = ""):
    return note(snapshot)
'''


def land(inbox: Path, name: str) -> float:
    """Write a file atomically (temp name, then rename); return when it landed."""
    tmp = inbox / f".{name}.tmp"
    tmp.write_text("x,y\n1,2\n" * 100)
    os.replace(tmp, inbox / name)
    return time.time()


def summary(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 3), "mean": round(statistics.fmean(xs), 3),
            "min": round(min(xs), 3), "max": round(max(xs), 3)}  # fmt: skip


def wait_for(condition, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError("benchmark step timed out")


def rayline_latency(files: int, work: Path, rng: random.Random) -> dict[str, list[float]]:
    sys.path.insert(0, str(SRC))
    from rayline.engine.store.runs import RunStore
    from rayline.engine.store.trigger_states import TriggerStates

    inbox, home = work / "inbox", work / "home"
    inbox.mkdir()
    (work / "retrain_flow.py").write_text(FLOW)
    (work / "schedules.yaml").write_text("schedules:\n  - flow: retrain_flow.py:retrain\n    new_data: inbox\n")
    env = {**os.environ, "RAYLINE_HOME": str(home), "RAYLINE_EXECUTOR": "local", "RAYLINE_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "rayline.cli.main", "scheduler", str(work / "schedules.yaml")],
                            env=env, stdin=subprocess.DEVNULL)  # fmt: skip
    out: dict[str, list[float]] = {"start": [], "fire": [], "launch": []}
    try:
        home.mkdir(exist_ok=True)
        wait_for(lambda: (home / "runs.db").exists(), 60)
        with RunStore.open(home) as store:
            wait_for(lambda: TriggerStates(store).all(), 60)  # the scheduler has polled once
            for i in range(files):
                time.sleep(rng.uniform(0.0, 1.0))  # a random phase of the polling period
                landed = land(inbox, f"part-{i:03}.csv")

                def started(n=i + 1):  # type: ignore[no-untyped-def]
                    runs = [r for r in store.list_runs(limit=5) if r.trigger and r.trigger.get("files") == n]
                    return runs[0] if runs and runs[0].started_at else None

                run = wait_for(started, 60)
                fired = datetime.fromisoformat(run.trigger["fired_at"].replace("Z", "+00:00")).timestamp()
                out["start"].append(run.started_at.timestamp() - landed)
                out["fire"].append(fired - landed)
                out["launch"].append(run.started_at.timestamp() - fired)
                wait_for(lambda rid=run.run_id: store.get_run(rid).status.terminal, 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return out


def scandir_baseline(files: int, work: Path, rng: random.Random, interval: float) -> list[float]:
    """A plain poll loop: list the directory every ``interval`` s and note new names."""
    inbox = work / "inbox-baseline"
    inbox.mkdir()
    seen: dict[str, float] = {}
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            now = time.time()
            for e in os.scandir(inbox):
                if not e.name.startswith(".") and e.name not in seen:
                    seen[e.name] = now
            stop.wait(interval)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    out = []
    for i in range(files):
        time.sleep(rng.uniform(0.0, interval))
        name = f"part-{i:03}.csv"
        landed = land(inbox, name)
        wait_for(lambda n=name: n in seen, 30)
        out.append(max(seen[name] - landed, 0.0))
    stop.set()
    thread.join()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=8, help="files landing one after another")
    ap.add_argument("--quick", action="store_true", help="3 files (a smoke run)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    files = 3 if args.quick else args.files
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="rayline-bench-trigger-") as tmp:
        work = Path(tmp)
        ours = rayline_latency(files, work, rng)
        base = scandir_baseline(files, work, rng, interval=1.0)
    start, detect = summary(ours["start"]), summary(base)
    result = {
        "benchmark": "trigger",
        "what": "seconds from a file landing to its run RUNNING (rayline scheduler, default polling)",
        "files": files,
        "poll_interval_s": 1.0,
        "debounce_s": 1.0,
        "rayline_start_s": start,
        "rayline_fire_s": summary(ours["fire"]),
        "rayline_launch_s": summary(ours["launch"]),
        "baseline_scandir_detect_s": detect,
        "ratio_start_vs_scandir_median": round(start["median"] / max(detect["median"], 1e-3), 2),
        "ratio_start_vs_poll_interval": round(start["median"] / 1.0, 2),
        "goal_s": 5.0,
        "meets_goal": start["max"] < 5.0,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"file -> run RUNNING: median {start['median']:.2f} s, max {start['max']:.2f} s "
              f"(fire {result['rayline_fire_s']['median']:.2f} s + launch "
              f"{result['rayline_launch_s']['median']:.2f} s); scandir poll notices in "
              f"{detect['median']:.2f} s; ratio {result['ratio_start_vs_scandir_median']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
