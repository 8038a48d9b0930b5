"""The torch training loop that runs on every Ray Train worker (and, unsharded, in Tune trials).

One ``EpochTrainer`` holds the model, optimiser, loss and optional mixed precision; it is built
lazily from the first batch (the number of input features comes from the data) or from a
checkpoint. Checkpoints are a directory with ``model.pt`` (``torch.save`` of the state_dict),
``optim.pt`` and ``meta.json`` (epoch, feature columns, problem, metrics); they are always read
back with ``torch.load(weights_only=True)``.

Example (what ``train_torch`` runs on each worker)::

    TorchTrainer(worker_loop, train_loop_config={"loop": LoopConfig(model_fn=..., label="y")}, ...)
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayline.connectors import EmptyInputError
from rayline.models.trained import build_module, feature_matrix, load_state_dict, state_dict_bytes
from rayline.models.training_data import table_from_batch
from rayline.tasks.torch_batches import TensorCache, cache_for, epoch_batches

__all__ = ["EpochTrainer", "LoopConfig", "read_checkpoint", "read_meta", "worker_loop"]

LOSSES = ("auto", "bce", "cross_entropy", "mse")


@dataclass
class LoopConfig:
    """Everything a worker needs; passed to Ray Train as ``train_loop_config``."""

    model_fn: Callable[..., Any]
    label: str
    features: list[str] | None = None
    fitted_features: Any = None
    model_params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 3
    batch_size: int = 1024
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    loss: Any = "auto"
    problem: str = "auto"
    mixed_precision: str | None = None
    checkpoint_every: int = 1
    seed: int = 0
    shuffle_buffer: int | None = None
    cache_data: bool | None = None
    on_epoch_end: Callable[[int, int, dict[str, Any]], None] | None = None
    task_name: str = "train_torch"
    launch: str = ""  # tells the driver whether the final metrics come from this fit()
    preempt_key: tuple[str, str] | None = None  # (run, node): stop at once when it is preempted


class EpochTrainer:
    """Model + optimiser + loss; ``train_batch`` does one step, ``state_files`` checkpoints."""

    def __init__(self, cfg: LoopConfig, device: Any = None, prepare: Callable[[Any], Any] | None = None):
        self.cfg = cfg
        self.device = device
        self.prepare = prepare  # ray.train.torch.prepare_model on workers (DDP when world > 1)
        self.model: Any = None
        self.features: list[str] = []
        self.problem = cfg.problem
        self.n_outputs = 0
        self.loss_fn: Any = None
        self.scaler: Any = None

    # ------------------------------------------------------------------------------ building
    def columns_for(self, table: Any) -> list[str]:
        if self.cfg.label not in table.column_names:
            raise KeyError(
                f"{self.cfg.task_name}: label column '{self.cfg.label}' is not in the data "
                f"(columns: {', '.join(table.column_names)})"
            )
        if self.cfg.features is not None:
            return list(self.cfg.features)
        return [c for c in table.column_names if c != self.cfg.label]

    def build(self, features: list[str], restored: dict[str, Any] | None = None) -> None:
        import torch

        torch.manual_seed(self.cfg.seed)
        self.features = list(features)
        module = build_module(self.cfg.model_fn, len(features), self.cfg.model_params)
        if restored is not None:
            module.load_state_dict(load_state_dict(restored["model"]))
        module = module.to(self.device) if self.device is not None else module
        self.model = self.prepare(module) if self.prepare else module
        params = self.model.parameters()
        opt = self.cfg.optimizer.lower()
        if opt == "adam":
            self.opt = torch.optim.Adam(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        elif opt == "adamw":
            self.opt = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        elif opt == "sgd":
            self.opt = torch.optim.SGD(params, lr=self.cfg.lr, momentum=0.9, weight_decay=self.cfg.weight_decay)
        else:
            raise ValueError(f"{self.cfg.task_name}: optimizer is 'adam', 'adamw' or 'sgd', got {self.cfg.optimizer!r}")
        if self.cfg.mixed_precision == "fp16":
            self.scaler = torch.amp.GradScaler("cuda")
        if restored is not None:
            self.opt.load_state_dict(restored["optim"])
            self.problem, self.n_outputs = restored["meta"]["problem"], restored["meta"]["n_outputs"]
            self.loss_fn = self._make_loss()

    def autocast(self) -> Any:
        import torch

        mp = self.cfg.mixed_precision
        if mp is None:
            return contextlib.nullcontext()
        dev = self.device.type if self.device is not None else "cpu"
        return torch.autocast(device_type=dev, dtype=torch.bfloat16 if mp == "bf16" else torch.float16)

    def _decide_problem(self, y: Any, out: Any) -> None:
        import numpy as np

        self.n_outputs = int(out.shape[1]) if out.ndim == 2 else 1
        integral = np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_
        if self.problem == "auto":
            if not integral or self.cfg.loss == "mse":
                self.problem = "regression"
            else:
                self.problem = "binary" if self.n_outputs <= 2 else "multiclass"
        self.loss_fn = self._make_loss()

    def _make_loss(self) -> Any:
        import torch.nn.functional as F

        loss = self.cfg.loss
        if callable(loss):
            return loss
        if loss not in LOSSES:
            raise ValueError(f"{self.cfg.task_name}: loss is one of {LOSSES} or a function, got {loss!r}")
        if loss == "auto":
            if self.problem == "regression":
                loss = "mse"
            else:
                loss = "bce" if self.n_outputs == 1 else "cross_entropy"
        if loss == "bce":
            return lambda out, y: F.binary_cross_entropy_with_logits(out.reshape(-1).float(), y.float())
        if loss == "cross_entropy":
            return lambda out, y: F.cross_entropy(out.float(), y.long())
        return lambda out, y: F.mse_loss(out.reshape(-1).float(), y.float())

    # ------------------------------------------------------------------------------ training
    def tensors(self, table: Any) -> tuple[Any, Any, Any]:
        import numpy as np
        import torch

        x = torch.from_numpy(feature_matrix(table, self.features))
        y_np = table.column(self.cfg.label).to_numpy(zero_copy_only=False)
        if y_np.dtype == object:
            raise TypeError(
                f"{self.cfg.task_name}: label '{self.cfg.label}' is {table.schema.field(self.cfg.label).type}; "
                "torch training needs numeric labels (class ids 0..k-1 or values)"
            )
        y = torch.from_numpy(y_np.astype("int64") if y_np.dtype == bool else np.array(y_np))
        if self.device is not None and self.device.type != "cpu":
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return x, y, y_np

    def train_batch(self, table: Any) -> tuple[Any, Any, int]:
        """One optimiser step on an Arrow table; see ``train_tensors``."""
        if self.model is not None:
            self.model.train()
        return self.train_tensors(*self.tensors(table))

    def train_tensors(self, x: Any, y: Any, y_np: Any) -> tuple[Any, Any, int]:
        """One optimiser step; returns (loss × rows, correct predictions, rows), the first two
        as tensors so that a GPU is not synchronised every step. The model must be in training
        mode (``run_tensors`` and ``train_batch`` set it once, not every step)."""
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            out = self.model(x)
            if self.loss_fn is None:
                self._decide_problem(y_np, out)
                self._check_labels(y_np)
            loss = self.loss_fn(out, y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        n = int(y.shape[0])
        return loss.detach().float() * n, self._correct(out.detach(), y), n

    def _check_labels(self, y: Any) -> None:
        if self.problem == "binary" and self.n_outputs == 1 and len(y) and (y.max() > 1 or y.min() < 0):
            raise ValueError(
                f"{self.cfg.task_name}: label '{self.cfg.label}' has values up to {y.max()} but the model "
                "has one output (binary); give model_fn as many outputs as classes"
            )

    def _correct(self, out: Any, y: Any) -> Any:
        if self.problem == "regression":
            return 0.0
        if out.ndim == 1 or out.shape[1] == 1:
            pred = (out.reshape(-1) > 0).long()
        else:
            pred = out.argmax(dim=1)
        return (pred == y.long()).sum()

    def evaluate(self, tables: Iterable[Any]) -> dict[str, float]:
        """Mean loss (and accuracy) over ``tables`` on the unwrapped module, no gradients."""
        import torch

        module = getattr(self.model, "module", self.model)
        module.eval()
        total = correct = n = 0.0
        with torch.no_grad(), self.autocast():
            for table in tables:
                x, y, _ = self.tensors(table)
                out = module(x)
                total += float(self.loss_fn(out, y)) * len(y)
                correct += float(self._correct(out, y))
                n += len(y)
        if not n:
            return {}
        m = {"val_loss": total / n}
        if self.problem != "regression":
            m["val_accuracy"] = correct / n
        return m

    def run_epoch(self, tables: Iterable[Any], cache: TensorCache | None = None) -> dict[str, float]:
        """Train over ``tables`` (Arrow), building the model from the first one if needed;
        the batches' tensors go into ``cache`` (if given) for the next epochs."""
        fitted = self.cfg.fitted_features

        def tensors() -> Iterable[tuple[Any, Any, Any]]:
            for raw in tables:
                table = table_from_batch(fitted.transform(raw) if fitted is not None else raw)
                if self.model is None:
                    self.build(self.columns_for(table))
                batch = self.tensors(table)
                if cache is not None:
                    cache.add(batch)
                yield batch

        return self.run_tensors(tensors())

    def run_tensors(self, batches: Iterable[tuple[Any, Any, Any]]) -> dict[str, float]:
        """Train over ``(x, y, y_numpy)`` batches; returns summed loss, correct and rows."""
        total: Any = 0.0
        correct: Any = 0.0
        n = 0
        for i, (x, y, y_np) in enumerate(batches):
            if i == 0:
                self.model.train()  # once per epoch (evaluate() leaves it in eval mode)
            t, c, k = self.train_tensors(x, y, y_np)
            total, correct, n = total + t, correct + c, n + k
        return {"loss_sum": float(total), "correct": float(correct), "rows": n}

    # ---------------------------------------------------------------------------- checkpoints
    def meta(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"epoch": epoch, "features": self.features, "problem": self.problem,
                "n_outputs": self.n_outputs, "metrics": metrics}

    def write_checkpoint(self, directory: str, epoch: int, metrics: dict[str, Any]) -> None:
        import torch

        d = Path(directory)
        (d / "model.pt").write_bytes(state_dict_bytes(self.model))
        torch.save(self.opt.state_dict(), d / "optim.pt")
        (d / "meta.json").write_text(json.dumps(self.meta(epoch, metrics)))


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads((Path(directory) / "meta.json").read_text())


def read_checkpoint(directory: str | os.PathLike[str]) -> dict[str, Any]:
    import torch

    d = Path(directory)
    return {
        "meta": read_meta(d),
        "model": (d / "model.pt").read_bytes(),
        "optim": torch.load(d / "optim.pt", map_location="cpu", weights_only=True),
    }


def _all_reduce(values: list[float]) -> list[float]:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def worker_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` for ``TorchTrainer``: resume, train, report every epoch."""
    import ray.train
    import ray.train.torch as rtt

    cfg: LoopConfig = config["loop"]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    trainer = EpochTrainer(cfg, device=rtt.get_device(), prepare=rtt.prepare_model)
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            restored = read_checkpoint(d)
        start = int(restored["meta"]["epoch"])
        if start < cfg.epochs:
            trainer.build(restored["meta"]["features"], restored)
    next_epoch = epoch_batches(cfg, config.get("source_shards"), config.get("shard_rows"), rank)
    validation = ray.train.get_dataset_shard("validation") if rank == 0 and config.get("has_validation") else None
    cache = cache_for(cfg)
    for epoch in range(start + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        if cache is not None and cache.ready:
            sums = trainer.run_tensors(cache.items)
        else:
            sums = trainer.run_epoch(next_epoch(), cache)
            if cache is not None:  # every rank must agree, or one would wait on the stream
                overflow = _all_reduce([float(cache.overflow)])[0] > 0
                cache = None if overflow else cache
                if cache is not None:
                    cache.seal()
        loss_sum, correct, rows = _all_reduce([sums["loss_sum"], sums["correct"], sums["rows"]])
        if rows == 0 or trainer.model is None:
            raise EmptyInputError(
                f"{cfg.task_name}: the training data has 0 rows (epoch {epoch}, worker rank {rank}); "
                "nothing is trained on zero rows. Check the upstream read or filter"
            )
        metrics: dict[str, Any] = {"epoch": epoch, "loss": loss_sum / rows, "rows": int(rows),
                                   "epoch_time_s": time.perf_counter() - t0, "resumed_from": start,
                                   "launch": cfg.launch}
        if trainer.problem != "regression":
            metrics["accuracy"] = correct / rows
        if validation is not None:
            metrics.update(trainer.evaluate(validation.iter_batches(batch_size=cfg.batch_size, batch_format="pyarrow")))
        stop = _preempted(cfg, epoch)
        save = stop or epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs
        with tempfile.TemporaryDirectory(prefix="rayline-ckpt-") as tmp:
            ckpt = None
            if save and rank == 0:
                trainer.write_checkpoint(tmp, epoch, metrics)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=f"epoch_{epoch:05d}" if save else None)
        if cfg.on_epoch_end is not None:
            cfg.on_epoch_end(rank, epoch, metrics)
        if stop:  # the task raises TaskPreempted; its next attempt resumes from this checkpoint
            return


def _preempted(cfg: LoopConfig, epoch: int) -> bool:
    """Whether rayline asked the training to give way, or some worker's node is draining (every
    rank agrees)."""
    if cfg.preempt_key is None or epoch >= cfg.epochs:
        return False
    import ray.train

    from rayline.context import node_draining, preemption_requested

    asked = ray.train.get_context().get_world_rank() == 0 and preemption_requested(*cfg.preempt_key)
    return _all_reduce([float(asked or node_draining())])[0] > 0
