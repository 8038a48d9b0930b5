"""Churn prediction end to end: what `make demo` runs.

Generates a synthetic customer dataset as Parquet (if none is there yet), ingests it against a
declared schema, splits it, fits features (scaling + one-hot), tunes a small MLP with ASHA,
trains it with Ray Train (data-parallel), evaluates it on the held-out split and registers it as
``churn@production``. Run the flow alone::

    rayline run flows/churn.py -p files=4 -p rows_per_file=5000

or the whole demo (the flow, then serving the model over HTTP and a few requests)::

    python flows/churn.py            # what `make demo` does
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from rayline import flow, task
from rayline.tasks.evaluation import evaluate, split
from rayline.tasks.features import fit_features
from rayline.tasks.ingest import read_parquet
from rayline.tasks.registry import register_model
from rayline.tasks.train import train_torch
from rayline.tasks.tuning import tune

#: The declared contract of the input: a file with another type for a column fails the ingest.
SCHEMA = {
    "customer_id": "int64",
    "tenure": "int64",
    "monthly_charges": "float64",
    "support_calls": "int64",
    "plan": "string",
    "region": "string",
    "age": "int64",
    "churned": "int64",
}
NUMERIC = ["tenure", "monthly_charges", "support_calls", "age"]
CATEGORICAL = ["plan", "region"]
FEATURES = [{"standard_scale": NUMERIC}, {"one_hot": CATEGORICAL}]
#: As YAML would give it; tune's keys lr/batch_size/epochs set training, the rest go to make_mlp.
SEARCH_SPACE = {"lr": {"loguniform": [3e-3, 3e-2]}, "hidden": {"choice": [8, 32]}}
PLANS = {"basic": 0.6, "standard": 0.0, "premium": -0.8}
REGIONS = {"north": 0.0, "south": 0.35, "east": -0.25, "west": 0.1}


def mlp_builder():
    """``make_mlp(n_features, hidden)``: a small MLP with one logit out (binary classification).

    Built inside a function so that it travels to Ray workers by value: they cannot import this
    file by name (a module-level function passed as an argument would be pickled by reference).
    """

    def make_mlp(n_features: int, hidden: int = 16):
        import torch

        return torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

    return make_mlp


make_mlp = mlp_builder()


def synthetic_customers(rows: int, seed: int = 0, start_id: int = 0):
    """``rows`` customers as an Arrow table; churn follows a noisy logistic rule (learnable)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 73, rows)
    charges = np.round(rng.uniform(20, 120, rows), 2)
    calls = rng.poisson(1.5, rows)
    plan = rng.choice(list(PLANS), rows, p=[0.45, 0.35, 0.2])
    region = rng.choice(list(REGIONS), rows)
    age = rng.integers(18, 81, rows)
    logit = (
        0.4 - 0.07 * (tenure - 36) + 0.035 * (charges - 70) + 0.9 * (calls - 1.5) - 0.02 * (age - 45)
        + np.vectorize(PLANS.get)(plan) + np.vectorize(REGIONS.get)(region)
    )
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pa.table({
        "customer_id": np.arange(start_id, start_id + rows, dtype=np.int64),
        "tenure": tenure.astype(np.int64), "monthly_charges": charges, "support_calls": calls.astype(np.int64),
        "plan": plan.astype(str), "region": region.astype(str), "age": age.astype(np.int64), "churned": churned,
    })  # fmt: skip


@task(cpus=1)
def make_dataset(data_dir: str, files: int = 8, rows_per_file: int = 20_000, seed: int = 0) -> str:
    """Write ``files`` Parquet files of synthetic customers under ``data_dir`` unless it already
    holds Parquet files; returns the folder as an absolute path."""
    import pyarrow.parquet as pq

    from rayline import context

    root = Path(data_dir).expanduser().resolve()
    if root.is_dir() and any(root.glob("*.parquet")):
        context.count("generated_files", 0)
        return str(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        table = synthetic_customers(rows_per_file, seed=seed + i, start_id=i * rows_per_file)
        tmp = root / f".part-{i:03d}.parquet.tmp"
        pq.write_table(table, tmp, row_group_size=max(1, rows_per_file // 2))
        tmp.rename(root / f"part-{i:03d}.parquet")  # readers never see a half-written file
    context.count("generated_files", files)
    return str(root)


@flow
def churn(
    data_dir: str = "data/churn",
    files: int = 8,
    rows_per_file: int = 20_000,
    tune_samples: int = 2,
    epochs: int = 2,
    num_workers: int = 1,
    model_name: str = "churn",
):
    path = make_dataset(data_dir, files, rows_per_file)
    source = read_parquet(path, schema=SCHEMA, columns=[*NUMERIC, *CATEGORICAL, "churned"])
    parts = split(source, test_fraction=0.2, seed=0)
    fitted = fit_features(parts, FEATURES)  # fitted on parts.train; kept with the model
    tuned = tune(parts, model_fn=make_mlp, label="churned", features=fitted, search_space=SEARCH_SPACE,
                 num_samples=tune_samples, epochs=epochs, batch_size=512, scheduler="asha")  # fmt: skip
    model = train_torch(parts, model_fn=make_mlp, label="churned", features=fitted, config=tuned,
                        num_workers=num_workers, epochs=epochs, batch_size=512)  # fmt: skip
    metrics = evaluate(model, parts, metrics=["accuracy", "auc", "f1"])  # on parts.test
    return register_model(model, name=model_name, metrics=metrics, alias="production")


# ------------------------------------------------------------------------------ the demo
EXAMPLES = [
    {"tenure": 2, "monthly_charges": 105.0, "support_calls": 5, "plan": "basic", "region": "south", "age": 24},
    {"tenure": 70, "monthly_charges": 25.0, "support_calls": 0, "plan": "premium", "region": "east", "age": 61},
    {"tenure": 30, "monthly_charges": 70.0, "support_calls": 2, "plan": "standard", "region": "west", "age": 40},
]


def free_port(preferred: int = 8000) -> int:
    """``preferred`` if nothing listens there on 127.0.0.1, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port on 127.0.0.1")


def demo(keep_serving: bool = False, **params) -> int:
    """Run the flow, serve ``churn@production`` on 127.0.0.1, send it a few requests, stop it."""
    import httpx

    import rayline
    from rayline.serving import serve_model, stop_serving
    from rayline.serving.serve_control import connect_ray

    params.setdefault("data_dir", str(Path(params.get("data_dir", "data/churn")).resolve()))
    t0 = time.monotonic()
    # $RAY_ADDRESS, else rayline's own local Ray (loopback, token); workers' logs stay in
    # Ray's session folder, not here
    connect_ray()
    run = rayline.run(Path(__file__), params)
    print(f"\nrun {run.run_id}: {run.status} in {time.monotonic() - t0:.0f}s")
    if not run.status.ok:
        print(run.error, file=sys.stderr)
        return 1
    mv = run.result()
    print(f"registered {mv.name} v{mv.version} (aliases: {', '.join(mv.aliases) or '-'}), "
          f"held-out metrics: { {k: round(v, 3) for k, v in run.output('evaluate').items()} }")  # fmt: skip
    d = serve_model(mv.name, alias="production", port=free_port(int(os.environ.get("RAYLINE_DEMO_PORT", 8000))))
    try:
        r = httpx.post(f"{d.url}/predict", json={"records": EXAMPLES}, timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"POST {d.url}/predict: HTTP {r.status_code}: {r.text}")
        reply = r.json()
        print(f"\nserving {mv.name}@production at {d.url}; POST /predict (model version {reply['version']}):")
        for record, churned in zip(EXAMPLES, reply["predictions"], strict=True):
            print(f"  {record} -> {'churns' if churned else 'stays'}")
    finally:
        if not keep_serving:
            stop_serving(mv.name)
    steps = [
        (f"rayline runs show {run.run_id}", "every task, attempt and counter of this run"),
        ("rayline models list", "the registry; rayline models show churn"),
        (f"rayline serve {mv.name}@production", "serve it again over HTTP (rayline serve stop)"),
        *([(f"curl -X POST {d.url}/predict", "still serving")] if keep_serving else []),
        ("make notebook", "JupyterLab on notebooks/quickstart.ipynb: the same flow, step by step"),
        ("configs/churn.yaml", "the same pipeline as YAML: rayline run configs/churn.yaml"),
    ]
    width = max(len(cmd) for cmd, _ in steps) + 2
    print("\nWhere to look next:")
    for cmd, what in steps:
        print(f"  {cmd.ljust(width)} # {what}")
    home = os.environ.get("RAYLINE_HOME", "./.rayline")
    print(f"  (demo took {time.monotonic() - t0:.0f}s; RAYLINE_HOME={home})")
    return 0


if __name__ == "__main__":
    sys.exit(demo())
