"""`make bench`: run every benchmark (each against its baseline in the same run) one after
another, each in its own process, and write benchmarks/RESULTS.md.

    python benchmarks/run_all.py [--only overhead,startup] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (script, full args, quick args); scripts that are not there yet are skipped.
BENCHMARKS = {
    "overhead": ("overhead.py", ["--tasks", "1000", "--reps", "5"], ["--tasks", "200", "--reps", "2"]),
    "startup": ("startup.py", [], ["--nodes", "2000", "--reps", "2"]),
    "ingest": ("ingest.py", [], ["--small"]),
    "train": ("train.py", [], ["--quick"]),
    "serve": ("serve.py", [], ["--duration", "2", "--warmup", "1"]),
    "trigger": ("trigger.py", [], ["--quick"]),
}


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated benchmark names")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not for RESULTS.md)")
    args = ap.parse_args()
    names = [n for n in BENCHMARKS if not args.only or n in args.only.split(",")]
    sections = []
    failed = 0
    for name in names:
        script, full, quick = BENCHMARKS[name]
        path = os.path.join(HERE, script)
        if not os.path.exists(path):
            continue
        cmd = [sys.executable, path, *(quick if args.quick else full), "--json"]
        shown = "python benchmarks/" + " ".join([script, *cmd[2:]])
        print(f"== {shown}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            failed += 1
            sections.append(f"## {name}\n\n`{shown}` failed (exit {proc.returncode}):\n\n```\n{proc.stderr[-2000:]}\n```\n")
            continue
        result = json.loads(lines[-1])
        print(json.dumps(result), flush=True)
        sections.append(f"## {name}\n\nCommand: `{shown}`\n\n```json\n{json.dumps(result, indent=2)}\n```\n")
    if not args.quick:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        head = (
            "# Benchmark results\n\n"
            f"Written by `make bench` ({stamp}). Machine: {machine()}.\n"
            "Each benchmark runs in its own process and compares rayline against a baseline "
            "measured in the same run; `ratio` is rayline / baseline.\n\n"
        )
        notes_path = os.path.join(HERE, "NOTES.md")
        notes = open(notes_path).read() if os.path.exists(notes_path) else ""
        with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
            f.write(head + notes + "\n" + "\n".join(sections))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
