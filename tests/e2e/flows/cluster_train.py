"""A flow that makes data, trains and registers a model on the worker node of
``tests/cluster_nodes.py`` (each asks for the custom resource ``worker_node``), then holds at a
gate: it writes ``gate/reached`` and waits for ``gate/release``, so that a test can kill the
driver after the model was registered and resume the run."""

from __future__ import annotations

import time
from pathlib import Path

from rayline import flow, task
from rayline.tasks import register_model, train_sklearn

ON_WORKER = {"cpus": 0, "resources": {"worker_node": 1}}


@task(**ON_WORKER)
def make_data(rows: int, seed: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows)})
    table["label"] = (table.a + 0.3 * table.b > 0).astype(int)
    return table


@task(cpus=0)
def hold(version, gate: str) -> str:
    folder = Path(gate)
    (folder / "reached").write_text(str(version))
    while not (folder / "release").exists():
        time.sleep(0.2)
    return f"{version.name}@{version.version}"


@flow
def cluster_train(gate: str, rows: int = 400, seed: int = 0):
    data = make_data(rows, seed)
    model = train_sklearn.with_options(**ON_WORKER)(data, estimator="sklearn.linear_model:LogisticRegression",
                                                    label="label")  # fmt: skip
    version = register_model.with_options(**ON_WORKER)(model, name="mn")
    return hold(version, gate)
