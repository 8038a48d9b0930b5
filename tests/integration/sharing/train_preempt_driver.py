"""A driver for the training-preemption test: ``train_torch`` (one worker, 30 epochs) in the
preemptible queue ``spot`` on the cluster at ``RAY_ADDRESS``. Each epoch appends ``epoch <n>``
to the ledger ``argv[2]``; from epoch 3 on, until the gate file ``argv[3]`` exists, it lingers
0.2 s per epoch so that a higher-priority run can preempt it. Prints the model's
``resumed_from`` and ``epochs_completed``, then ``finished RUN STATUS``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

import rayline
from rayline import flow, task
from rayline.config import Settings
from rayline.tasks import train_torch


def linear(n_features: int):
    import torch

    return torch.nn.Linear(n_features, 1)


class Ledger:
    """``on_epoch_end``: write the epoch; linger while the gate is closed."""

    def __init__(self, ledger: str, gate: str):
        self.ledger, self.gate = ledger, gate

    def __call__(self, rank: int, epoch: int, metrics: dict) -> None:
        with open(self.ledger, "a") as f:
            f.write(f"epoch {epoch}\n")
        if epoch >= 3 and not os.path.exists(self.gate):
            time.sleep(0.2)


@task
def rows() -> pa.Table:
    x = np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32)
    return pa.table({"a": x[:, 0], "b": x[:, 1], "y": (x[:, 0] > 0).astype(np.int64)})


def spot_training(ledger: str, gate: str):
    hook = Ledger(ledger, gate)  # a constant of the flow (a flow parameter is a placeholder here)

    @flow(queue="spot")
    def spot_training():
        return train_torch(rows(), model_fn=linear, label="y", epochs=30, batch_size=64, on_epoch_end=hook)

    return spot_training


if __name__ == "__main__":
    home, ledger, gate = sys.argv[1:4]

    def events(kind: str, data: dict) -> None:
        if kind in ("queued", "preempting", "preempted"):
            print(kind, data.get("message"), flush=True)

    settings = Settings(home=Path(home), heartbeat_interval=0.3, lease_ttl=3.0, pool="off")
    run = rayline.run(spot_training(ledger, gate), settings=settings, on_event=events)
    if run.status.value == "SUCCEEDED":
        model = run.result()
        print("resumed_from", model.resumed_from, "epochs", model.epochs_completed, flush=True)
    print("finished", run.run_id, run.status.value, flush=True)
