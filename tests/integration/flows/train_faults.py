"""A training flow for the driver-fault test of F21 (tests/e2e/test_driver_faults.py): train_torch
on a toy table, with an ``on_epoch_end`` hook that reports ``<pid> <epoch>`` to ``progress`` in a
folder and, at epoch 2, waits (up to 120 s) for the test's ``go`` marker — the test kills the
driver while the Train worker waits there.

A driver started as ``rayline run .../train_faults.py:FLOW`` imports this file under a made-up
module name, so every function a Ray worker needs is made inside a task body (pickled by value).
"""

from __future__ import annotations

from rayline import flow, task
from rayline.tasks.train import train_torch


@task
def toy_table(n: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "d": x[:, 3], "y": y})


@task
def mlp_factory():
    def make_mlp(n_features: int):
        import torch

        return torch.nn.Sequential(torch.nn.Linear(n_features, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))

    return make_mlp


@task
def epoch_gate(folder: str, wait_at: int):
    def at_epoch_end(rank: int, epoch: int, metrics: dict) -> None:
        import os
        import time
        from pathlib import Path

        where = Path(folder)
        tmp = where / f".progress.{os.getpid()}"
        tmp.write_text(f"{os.getpid()} {epoch}")
        os.replace(tmp, where / "progress")
        deadline = time.monotonic() + 120
        while epoch == wait_at and not (where / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    return at_epoch_end


@flow
def train_gated(folder: str, epochs: int = 4):
    return train_torch(toy_table(2000), model_fn=mlp_factory(), label="y", epochs=epochs, lr=0.02,
                       batch_size=128, on_epoch_end=epoch_gate(folder, 2))
