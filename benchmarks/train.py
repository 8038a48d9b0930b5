"""Epoch time of ``train_torch`` (Ray Train, 1 worker) vs the same plain torch loop, same process.

Both train the same MLP (same seed) on the same synthetic table with the same batch size,
learning rate and number of epochs, with the same number of torch threads (the Train worker
gets ``--cpus`` CPUs, which Ray turns into its thread count; the plain loop sets
``torch.set_num_threads(--cpus)``). The plain loop is the strongest simple baseline: the whole
table converted to tensors once, then sliced into batches.

Epochs are **paired and alternate in time**, so that background load hits both sides alike:
after each rayline epoch an ``on_epoch_end`` hook on the Train worker pauses it while this
process runs one plain epoch, then lets it go on. A rayline epoch is timed on the worker from
its release to the end of its next epoch, so it includes the data pass (Ray Data on the first
epoch, the worker's tensor cache after it), the checkpoint (``torch.save`` + copy into the
artifact store) and ``ray.train.report``. The first epoch of each side (model build, Ray Data
start) is reported apart and left out of the medians. ``ratio`` = rayline / plain (median
epoch); the goal is <= 1.15. ``ratio_paired`` is the median of the per-pair ratios. Ray runs
its workers at niceness 15, so this process takes niceness 15 too.

Ray Train's controller polls its workers every 2 s and a worker's result queue holds one
report, so an epoch shorter than that can wait up to 2 s in ``ray.train.report``; with epochs
of several seconds (the default size) the wait disappears.

    python benchmarks/train.py --json [--quick] [--rows 1000000] [--epochs 6] [--cpus 2]
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

WORKER_NICENESS = int(os.environ.get("RAY_worker_niceness", "15"))


def make_table(rows: int, features: int, seed: int = 0):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    w = rng.normal(size=features).astype(np.float32)
    y = (x @ w + 0.5 * rng.normal(size=rows) > 0).astype(np.int64)
    return pa.table({**{f"f{i}": x[:, i] for i in range(features)}, "y": y})


def make_mlp(n_features: int, hidden: int = 256):
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(n_features, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, 1),
    )  # fmt: skip


class PacedClock:
    """``on_epoch_end`` hook: logs ``end <epoch> <t> <threads> <niceness>``, writes ``done-<epoch>``, waits
    for ``go-<epoch>`` (the plain epoch in the driver), then logs ``go <epoch> <t>``."""

    def __init__(self, folder: str):
        self.folder = Path(folder)

    def log(self, line: str) -> None:
        with open(self.folder / "clock.txt", "a") as f:
            f.write(line + "\n")

    def __call__(self, rank: int, epoch: int, metrics: dict) -> None:
        import torch

        self.log(f"end {epoch} {time.perf_counter()} {torch.get_num_threads()} {os.nice(0)}")
        (self.folder / f"done-{epoch}").touch()
        deadline = time.monotonic() + 600
        while not (self.folder / f"go-{epoch}").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.log(f"go {epoch} {time.perf_counter()} 0")


@task
def bench_data(rows: int, features: int):
    return make_table(rows, features)




class PlainLoop:
    """The plain torch loop, one epoch per ``epoch()`` call."""

    def __init__(self, table, batch_size: int, lr: float, threads: int):
        import torch

        from rayline.models.trained import feature_matrix

        torch.set_num_threads(threads)
        cols = [c for c in table.column_names if c != "y"]
        self.x = torch.from_numpy(feature_matrix(table, cols))
        self.y = torch.from_numpy(table.column("y").to_numpy().astype("float32"))
        self.model = make_mlp(len(cols))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.batch_size = batch_size

    def epoch(self) -> float:
        import torch.nn.functional as F

        t0, bs = time.perf_counter(), self.batch_size
        self.model.train()
        for i in range(0, len(self.y), bs):
            self.opt.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(self.model(self.x[i:i + bs]).reshape(-1), self.y[i:i + bs])
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t0

    def accuracy(self) -> float:
        import torch

        with torch.no_grad():
            return float(((self.model(self.x).reshape(-1) > 0).float() == self.y).float().mean())


def run_paired(args: argparse.Namespace, folder: Path) -> dict:
    from rayline.config import Settings
    from rayline.tasks.train import train_torch

    rows, features, epochs, cpus = args.rows, args.features, args.epochs, args.cpus

    @flow(name="bench_train")
    def bench():
        return train_torch(bench_data(rows, features), model_fn=make_mlp, label="y", epochs=epochs,
                           batch_size=args.batch_size, lr=args.lr, resources_per_worker={"CPU": cpus},
                           keep_checkpoints=None, on_epoch_end=PacedClock(str(folder)))

    outcome: dict = {}

    def drive() -> None:
        t0 = time.perf_counter()
        outcome["run"] = rayline.run(bench, settings=Settings(home=folder / "home"))
        outcome["wall_s"] = time.perf_counter() - t0

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    plain = PlainLoop(make_table(rows, features), args.batch_size, args.lr, cpus)
    plain_s = []
    for epoch in range(1, epochs + 1):
        while not (folder / f"done-{epoch}").exists():
            if not driver.is_alive():
                raise SystemExit(f"rayline run ended early: {outcome['run'].error}")
            time.sleep(0.01)
        plain_s.append(plain.epoch())
        (folder / f"go-{epoch}").touch()
    driver.join()
    run = outcome["run"]
    if not run.status.ok:
        raise SystemExit(f"rayline run failed: {run.error}")
    log = [line.split() for line in (folder / "clock.txt").read_text().splitlines()]
    ends = {int(e): float(t) for kind, e, t, *_ in log if kind == "end"}
    gos = {int(e): float(t) for kind, e, t, *_ in log if kind == "go"}
    threads, worker_nice = (int(v) for v in next(rest for kind, _, _, *rest in log if kind == "end"))
    model = run.result()
    first = next(m["epoch_time_s"] for m in model.history if m["epoch"] == 1) if any(
        m["epoch"] == 1 for m in model.history) else float("nan")
    ours = [first] + [ends[e] - gos[e - 1] for e in range(2, epochs + 1)]
    passes = {m["epoch"]: m["epoch_time_s"] for m in model.history}
    return {"rayline_s": ours, "plain_s": plain_s, "pass_s": [passes.get(e) for e in range(1, epochs + 1)], "wall_s": outcome["wall_s"], "threads": threads,
            "worker_niceness": worker_nice,
            "rayline_accuracy": model.metrics.get("accuracy"), "plain_accuracy": plain.accuracy()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs (torch threads) for both")
    ap.add_argument("--quick", action="store_true", help="200k rows, 3 epochs")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.epochs = 200_000, 3

    import ray

    # Ray runs its workers at niceness +15 (RAY_worker_niceness) relative to the raylet; this
    # process takes the same niceness so that on a shared, loaded machine background load hits
    # both sides alike (on an idle machine it changes nothing). It does so *after* ray.init:
    # Ray's processes inherit the driver's niceness, so renicing first would push the Train
    # worker to 19 while this loop runs at 15.
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    os.nice(max(0, WORKER_NICENESS - os.nice(0)))
    with tempfile.TemporaryDirectory(prefix="rayline-bench-train-") as tmp:
        r = run_paired(args, Path(tmp))
    ray.shutdown()
    ours, plain = r["rayline_s"][1:], r["plain_s"][1:]
    result = {
        "benchmark": "train",
        "rows": args.rows, "features": args.features, "epochs": args.epochs,
        "batch_size": args.batch_size, "cpus": args.cpus, "worker_torch_threads": r["threads"],
        "rayline_epoch_s": round(statistics.median(ours), 4),
        "plain_epoch_s": round(statistics.median(plain), 4),
        "ratio": round(statistics.median(ours) / statistics.median(plain), 3),
        "ratio_paired": round(statistics.median(a / b for a, b in zip(ours, plain, strict=True)), 3),
        "rayline_first_epoch_s": round(r["rayline_s"][0], 3),
        "plain_first_epoch_s": round(r["plain_s"][0], 3),
        "rayline_epochs_s": [round(t, 3) for t in r["rayline_s"]],
        "plain_epochs_s": [round(t, 3) for t in r["plain_s"]],
        "rayline_train_pass_s": [round(t, 3) if t else None for t in r["pass_s"]],
        "rayline_wall_s": round(r["wall_s"], 2),
        "train_accuracy": {"rayline": r["rayline_accuracy"], "plain": round(r["plain_accuracy"], 4)},
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "niceness": os.nice(0), "worker_niceness": r["worker_niceness"],
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>24}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
