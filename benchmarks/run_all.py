"""`make bench`: run every benchmark (each against its baseline in the same run) one after
another, each in its own process, and write benchmarks/RESULTS.md.

Each result is kept as benchmarks/results/<name>.json (with when it was measured), and
RESULTS.md is rebuilt from all of them, so ``--only trigger`` re-runs one benchmark and leaves
the others' last results in place.

    python benchmarks/run_all.py [--only overhead,startup] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
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
    "data_dag": ("data_dag.py", [], ["--reps", "1", "--mb", "10", "--rows", "20000", "--tasks", "50"]),
    "admission": ("admission.py", ["--tasks", "1000", "--reps", "3"], ["--tasks", "100", "--reps", "1", "--cpus", "2", "--hold", "1"]),
}


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _last_json(stdout: str) -> dict | None:
    """The benchmark's JSON object: the whole output, or its last line that parses."""
    try:
        return json.loads(stdout)
    except ValueError:
        pass
    for line in reversed(stdout.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _sections() -> list[str]:
    """One section per stored result (benchmarks/results/<name>.json), in BENCHMARKS order."""
    out = []
    for name in BENCHMARKS:
        path = os.path.join(HERE, "results", f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                stored = json.load(f)
            when = f" (measured {stored['measured_at']})" if stored.get("measured_at") else ""
            out.append(f"## {name}\n\nCommand: `{stored['command']}`{when}\n\n```json\n{json.dumps(stored['result'], indent=2)}\n```\n")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated benchmark names")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not for RESULTS.md)")
    args = ap.parse_args()
    names = [n for n in BENCHMARKS if not args.only or n in args.only.split(",")]
    sections = []
    failed = 0
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    for name in names:
        script, full, quick = BENCHMARKS[name]
        path = os.path.join(HERE, script)
        if not os.path.exists(path):
            continue
        cmd = [sys.executable, path, *(quick if args.quick else full), "--json"]
        shown = "python benchmarks/" + " ".join([script, *cmd[2:]])
        print(f"== {shown}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        result = _last_json(proc.stdout)
        if proc.returncode != 0 or result is None:
            failed += 1
            sections.append(f"## {name}\n\n`{shown}` failed (exit {proc.returncode}):\n\n```\n{proc.stderr[-2000:]}\n```\n")
            continue
        print(json.dumps(result), flush=True)
        if not args.quick:
            os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
            with open(os.path.join(HERE, "results", f"{name}.json"), "w") as f:
                json.dump({"command": shown, "measured_at": stamp, "result": result}, f, indent=2)
    sections = [s for s in sections if "failed (exit" in s] + _sections()
    if not args.quick:
        written = f"Written by `make bench` ({stamp})"
        if args.only:  # keep the last full run's date; say what was re-run since
            old = os.path.join(HERE, "RESULTS.md")
            found = re.search(r"Written by `make bench` \(([^)]*)\)", open(old).read()) if os.path.exists(old) else None
            written = (f"Written by `make bench` ({found.group(1) if found else 'date unknown'}); "
                       f"re-run since with `run_all.py --only`: {', '.join(names)} ({stamp})")  # fmt: skip
        head = (
            "# Benchmark results\n\n"
            f"{written}. Machine: {machine()}.\n"
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
