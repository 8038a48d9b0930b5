"""train_torch on the shared 2-CPU Ray: it learns, checkpoints every epoch, survives a killed
worker (F20) and continues from its checkpoint when the node runs again (F21)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rayline
from rayline import flow, task
from rayline.connectors import EmptyInputError
from rayline.models.trained import TrainedModel
from rayline.store.states import RunStatus, TaskStatus
from rayline.tasks.checkpoints import latest_checkpoint
from rayline.tasks.evaluation import evaluate
from rayline.tasks.ingest import read_parquet
from rayline.tasks.train import train_torch

pytestmark = pytest.mark.usefixtures("ray_session")


def toy_table(n: int = 2000, seed: int = 0) -> pa.Table:
    """Two informative features, two noise features; the label is linearly separable."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "d": x[:, 3], "y": y})


def make_mlp(n_features: int, hidden: int = 16):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))


@task
def toy_data(n: int, seed: int = 0) -> pa.Table:
    return toy_table(n, seed)


@task
def empty_data() -> pa.Table:
    return toy_table(10).slice(0, 0)


class KillAtEpoch:
    """``on_epoch_end`` hook: writes ``<pid> <epoch>`` to ``progress`` after each epoch; at epoch
    ``k`` (first time only) it waits for the test to SIGKILL this worker."""

    def __init__(self, folder: str, k: int):
        self.folder, self.k = folder, k

    def __call__(self, rank: int, epoch: int, metrics: dict) -> None:
        folder = Path(self.folder)
        tmp = folder / f".progress.{os.getpid()}"
        tmp.write_text(f"{os.getpid()} {epoch}")
        os.replace(tmp, folder / "progress")
        if epoch == self.k and not (folder / "killed").exists():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (folder / "killed").exists():
                time.sleep(0.05)  # the test kills this process while it waits here


def kill_worker_at(folder: Path, k: int, timeout: float = 240.0) -> threading.Thread:
    """Poll ``progress`` until a worker reports epoch ``k``, then SIGKILL it (once)."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid, epoch = map(int, (folder / "progress").read_text().split())
            except (FileNotFoundError, ValueError):
                pid, epoch = 0, -1
            if epoch == k:
                os.kill(pid, signal.SIGKILL)
                (folder / "killed").write_text(str(pid))
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


@task
def kill_hook(folder: str, k: int) -> KillAtEpoch:
    return KillAtEpoch(folder, k)


@flow
def learn(path: str, epochs: int = 4, workers: int = 2):
    return train_torch(read_parquet(path), model_fn=make_mlp, label="y", epochs=epochs, lr=0.02,
                       batch_size=128, keep_checkpoints=None, num_workers=workers)


@task
def model_builder() -> object:
    return make_mlp


@flow
def killed_midway(folder: str, max_failures: int = 1):
    # model_fn and the hook come from upstream tasks: on `resume` only train_torch (a rayline
    # task) runs again, and the engine ships this file's objects by value only for modules whose
    # own tasks run (reported); adopted upstream values avoid that
    return train_torch(toy_data(2000), model_fn=model_builder(), label="y", epochs=4, lr=0.02,
                       batch_size=128, max_failures=max_failures, on_epoch_end=kill_hook(folder, 2))


killed_midway.source = f"{__file__}:killed_midway"  # what `rayline run FILE:FLOW` records


def test_two_ddp_workers_learn_from_parquet_shards_with_a_checkpoint_per_epoch(settings, tmp_path):
    """Both workers hold one CPU each (the task itself none) and read their own shard of the
    Parquet source, so nothing else needs a CPU on the 2-CPU session."""
    for i in range(4):  # 4 files of 500 rows, 2 row groups each
        pq.write_table(toy_table(500, seed=10 + i), tmp_path / f"part-{i}.parquet", row_group_size=250)
    run = rayline.run(learn, settings=settings, path=str(tmp_path))
    assert run.status == RunStatus.SUCCEEDED, run.error
    model = run.result()
    assert isinstance(model, TrainedModel) and model.framework == "torch"
    assert model.epochs_completed == 4 and model.resumed_from == 0
    assert model.problem == "binary" and model.features == ("a", "b", "c", "d")
    test = toy_table(1000, seed=1)
    accuracy = float(np.mean(model.predict(test) == test.column("y").to_numpy()))
    assert accuracy > 0.8, accuracy
    assert model.metrics["accuracy"] > 0.8
    assert model.metrics["rows"] == 2000  # each worker saw its half; totals are all-reduced
    metrics = evaluate(model, test)
    assert metrics["accuracy"] == pytest.approx(accuracy) and metrics["auc"] > 0.9
    # one checkpoint per epoch, under the artifact store, named by run and node
    folder = Path(model.checkpoint_path)
    assert folder == settings.artifact_root / "train" / run.run_id / "train_torch"
    assert sorted(p.name for p in folder.glob("epoch_*")) == [f"epoch_{e:05d}" for e in range(1, 5)]
    # weights are a torch state_dict, loadable with weights_only=True
    from rayline.models.trained import load_state_dict

    assert set(load_state_dict(model.weights)) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_a_killed_worker_resumes_from_its_last_checkpoint(settings, tmp_path):
    """F20, first half: SIGKILL the worker at epoch 2 with max_failures=1."""
    watcher = kill_worker_at(tmp_path, k=2)
    run = rayline.run(killed_midway, settings=settings, folder=str(tmp_path), max_failures=1)
    watcher.join(timeout=5)
    assert (tmp_path / "killed").exists(), "the worker was never killed"
    assert run.status == RunStatus.SUCCEEDED, run.error
    model = run.result()
    assert model.resumed_from >= 1  # >= k-1, not epoch 0
    assert model.epochs_completed == 4
    assert model.metrics["accuracy"] > 0.8


def test_without_restarts_the_task_fails_keeps_the_checkpoint_and_resume_continues(settings, tmp_path):
    """F20, second half, and F21: max_failures=0 fails the node; `resume` continues from the
    kept checkpoint (same RunConfig name and storage path), not from epoch 0."""
    watcher = kill_worker_at(tmp_path, k=2)
    run = rayline.run(killed_midway, settings=settings, folder=str(tmp_path), max_failures=0)
    watcher.join(timeout=5)
    assert run.status == RunStatus.FAILED
    t = run.task("train_torch")
    assert t.status == TaskStatus.FAILED and "TrainingFailedError" in t.error_type
    assert "rayline resume" in t.error_message and "checkpoint" in t.error_message
    folder = settings.artifact_root / "train" / run.run_id / "train_torch"
    kept = latest_checkpoint(folder)
    assert kept is not None and kept[0] >= 1

    resumed = rayline.resume(run.run_id, settings=settings)
    assert resumed.status == RunStatus.SUCCEEDED, resumed.error
    model = resumed.result()
    assert model.resumed_from >= 1 and model.epochs_completed == 4


def test_empty_data_is_refused_naming_the_task(settings):
    @flow
    def nothing():
        return train_torch(empty_data(), model_fn=make_mlp, label="y")

    run = rayline.run(nothing, settings=settings)
    assert run.status == RunStatus.FAILED
    t = run.task("train_torch")
    assert "EmptyInputError" in t.error_type and "train_torch" in t.error_message
    with pytest.raises(EmptyInputError, match="0 rows"):
        train_torch(toy_table(10).slice(0, 0), model_fn=make_mlp, label="y")


def test_bf16_autocast_trains_on_cpu_and_fp16_asks_for_a_gpu():
    """The loop every worker runs, in-process: bf16 autocast works on CPU; fp16 needs CUDA."""
    from rayline.tasks.torch_loop import EpochTrainer, LoopConfig

    table = toy_table(1000)
    trainer = EpochTrainer(LoopConfig(model_fn=make_mlp, label="y", mixed_precision="bf16", lr=0.02))
    for _ in range(4):
        sums = trainer.run_epoch(table.slice(i, 100) for i in range(0, 1000, 100))
    assert sums["rows"] == 1000 and sums["correct"] / sums["rows"] > 0.8
    with pytest.raises(ValueError, match="fp16.*needs CUDA"):
        train_torch(table, model_fn=make_mlp, label="y", mixed_precision="fp16")


def test_small_shards_are_kept_as_tensors_after_the_first_epoch_and_large_ones_stream():
    from rayline.tasks.torch_batches import TensorCache
    from rayline.tasks.torch_loop import EpochTrainer, LoopConfig

    table = toy_table(1000)
    batches = [table.slice(i, 100) for i in range(0, 1000, 100)]
    trainer = EpochTrainer(LoopConfig(model_fn=make_mlp, label="y", lr=0.02))
    kept, tiny = TensorCache(), TensorCache(limit=1000)
    first = trainer.run_epoch(batches, kept)
    trainer.run_epoch(batches, tiny)
    assert len(kept.items) == 10 and not kept.overflow
    assert tiny.overflow and tiny.items == []  # over its limit: nothing held, stream again
    before = [(x.clone(), y.clone()) for x, y, _ in kept.items]
    kept.seal()
    tiny.seal()
    assert kept.ready and not tiny.ready
    # sealed: the same batches, now views of one contiguous tensor per field
    assert len({x.untyped_storage().data_ptr() for x, _, _ in kept.items}) == 1
    assert all(x.equal(bx) and y.equal(by) for (x, y, _), (bx, by) in zip(kept.items, before, strict=True))
    again = trainer.run_tensors(kept.items)
    assert again["rows"] == first["rows"] == 1000 and again["loss_sum"] < first["loss_sum"]


def test_source_shards_are_cut_into_equal_exact_batches_for_ddp():
    from rayline.tasks.torch_batches import rebatch

    pieces = [toy_table(n) for n in (300, 50, 700, 10)]  # uneven reads, 1060 rows
    sizes = [t.num_rows for t in rebatch(pieces, 256, limit=1000)]
    assert sizes == [256, 256, 256, 232]
    assert [t.num_rows for t in rebatch(pieces, 256)] == [256, 256, 256, 256, 36]
