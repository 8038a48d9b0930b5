"""Training tasks: ``train_torch`` (Ray Train, data-parallel) and ``train_sklearn``.

``train_torch`` runs a ``TorchTrainer`` from inside its task. The task itself takes no CPU (it
only waits), each Train worker takes one CPU (or ``resources_per_worker``), so a one-worker
training fits on a 2-CPU machine beside Ray Data. Data is sharded across workers with
``get_dataset_shard``; every epoch ends in a checkpoint; ``FailureConfig(max_failures)``
restarts the workers from the latest checkpoint when one dies (spot interruption, F20).

Checkpoints live under the artifact URL at ``<root>/train/<run_id>/<node_id>`` (a bucket too:
``RunConfig(storage_path, storage_filesystem)``, so every node writes and reads them); a new attempt of
the same node (a task retry, or ``rayline resume`` after the driver died, F21) builds the
trainer with the same ``RunConfig(name, storage_path)`` and Ray Train v2 restores the latest
checkpoint, so training continues from it instead of from epoch 0.

Example::

    @flow
    def churn(path: str):
        data = read_parquet(path)
        model = train_torch(data, model_fn=make_mlp, label="churned", epochs=5)
        return evaluate(model, data, label="churned")
"""

from __future__ import annotations

import uuid
from typing import Any

from rayline import context
from rayline.connectors import EmptyInputError
from rayline.errors import RaylineError, TaskPreempted
from rayline.models.trained import (
    TrainedModel,
    feature_matrix,
    resolve_estimator,
    resolve_object,
    resolve_store,
)
from rayline.models.training_data import (  # fmt: skip
    is_in_memory,
    is_ray_dataset,
    require_rows,
    table_from_batch,
    to_dataset,
    to_table,
    training_part,
)
from rayline.sdk.task import task
from rayline.store.artifact_location import is_local, ray_storage
from rayline.tasks.checkpoints import checkpoint_dir, latest_checkpoint
from rayline.tasks.gangs import train_gang, worker_resources
from rayline.tasks.torch_loop import LoopConfig, read_checkpoint, worker_loop

__all__ = ["TrainingFailedError", "train_sklearn", "train_torch"]


class TrainingFailedError(RaylineError):
    """Ray Train gave up (worker failures beyond ``max_failures``); checkpoints are kept."""


def _check_args(epochs: int, batch_size: int, num_workers: int, checkpoint_every: int,
                mixed_precision: str | None, use_gpu: bool, max_failures: int) -> None:
    problems = []
    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("num_workers", num_workers), ("checkpoint_every", checkpoint_every)):
        if not isinstance(value, int) or value < 1:
            problems.append(f"{name} must be an integer >= 1, got {value!r}")
    if mixed_precision not in (None, "bf16", "fp16"):
        problems.append(f"mixed_precision is None, 'bf16' or 'fp16', got {mixed_precision!r}")
    if mixed_precision == "fp16" and not use_gpu:
        problems.append("mixed_precision='fp16' needs CUDA (use_gpu=True); on CPU use 'bf16'")
    if not isinstance(max_failures, int) or max_failures < -1:
        problems.append(f"max_failures is an integer >= 0 (or -1 for unlimited), got {max_failures!r}")
    if problems:
        raise ValueError("train_torch: " + "; ".join(problems))


def _preflight(data: Any, label: str, features: Any, fitted: Any) -> None:
    """Catch bad columns before any worker starts (in-memory data only: cheap)."""
    if not is_in_memory(data):
        return
    sample = table_from_batch(data).slice(0, 16)
    if fitted is not None:
        sample = table_from_batch(fitted.transform(sample))
    if label not in sample.column_names:
        raise KeyError(f"train_torch: label column '{label}' is not in the data "
                       f"(columns: {', '.join(sample.column_names)})")
    cols = list(features) if features is not None else [c for c in sample.column_names if c != label]
    feature_matrix(sample, cols)


@task(cpus=0, name="train_torch", gang=train_gang)
def train_torch(
    data: Any,
    *,
    model_fn: Any,
    label: str,
    features: Any = None,
    validation: Any = None,
    num_workers: int = 1,
    use_gpu: bool = False,
    resources_per_worker: dict[str, float] | None = None,
    epochs: int = 3,
    batch_size: int = 1024,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    loss: Any = "auto",
    problem: str = "auto",
    model_params: dict[str, Any] | None = None,
    config: Any = None,
    mixed_precision: str | None = None,
    max_failures: int = 1,
    checkpoint_every: int = 1,
    keep_checkpoints: int | None = 2,
    seed: int = 0,
    shuffle_buffer: int | None = None,
    cache_data: bool | None = None,
    reader: str = "auto",
    run_name: str | None = None,
    storage_path: str | None = None,
    on_epoch_end: Any = None,
) -> TrainedModel:
    """Train a torch model with Ray Train (DDP: gloo on CPU, NCCL on GPU).

    Args:
        data: training data (table, DataFrame, ``ray.data.Dataset``, source, or ``Split``).
        model_fn: builds the ``nn.Module``: ``model_fn(n_features, **model_params)`` (or its
            ``"package.module:function"`` name). For classification it outputs logits (1 for
            binary, k for k classes).
        label: the label column (integer class ids, or floats for regression).
        features: ``None`` (every column but the label), a list of columns, or
            ``FittedFeatures`` applied to each batch on the workers (and kept with the model).
        validation: optional held-out data; rank 0 reports ``val_loss``/``val_accuracy``.
        num_workers, use_gpu, resources_per_worker: the Train worker group (default 1 CPU,
            plus 1 GPU with ``use_gpu``).
        config: hyper-parameters, e.g. a ``TuneResult`` (its ``best_config``) or a dict:
            ``lr``, ``batch_size``, ``epochs``, ``weight_decay``, ``optimizer`` override the
            arguments, every other key joins ``model_params``.
        mixed_precision: ``"bf16"`` (CPU or GPU autocast) or ``"fp16"`` (CUDA, with a
            ``GradScaler``).
        max_failures: worker-group restarts from the latest checkpoint before giving up.
        checkpoint_every: epochs between checkpoints (the last epoch always checkpoints).
        keep_checkpoints: how many to keep (None: all).
        shuffle_buffer: rows in each worker's local shuffle buffer (Ray Data inputs; None:
            data order).
        cache_data: keep each worker's batches as tensors after the first epoch, so later
            epochs skip Ray Data: ``None`` (default) when the shard fits in 512 MiB and no
            ``shuffle_buffer`` is set, ``True`` always, ``False`` never (re-stream every
            epoch, e.g. for random augmentation in the Dataset).
        reader: ``"auto"``: a source with ``shards()`` (``read_parquet``'s output) is split
            into one shard per worker, each read by its worker with pyarrow; anything else goes
            through Ray Data (``streaming_split``). ``"ray_data"`` always uses Ray Data.
        run_name / storage_path: override where checkpoints go (see ``checkpoint_dir``).
        on_epoch_end: ``fn(rank, epoch, metrics)`` called on every worker after each epoch.

    Returns:
        A ``TrainedModel`` with the final weights, metrics, ``epochs_completed`` and
        ``resumed_from`` (the checkpoint epoch the last attempt started from; 0 = fresh).

    Raises:
        EmptyInputError: the data has no rows.
        TrainingFailedError: the workers failed more than ``max_failures`` times.

    Example::

        model = train_torch(table, model_fn=lambda n: torch.nn.Linear(n, 1), label="y", epochs=5)
    """
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train import TrainingFailedError as RayTrainingFailed
    from ray.train.torch import TorchConfig, TorchTrainer

    from rayline.models.features import FittedFeatures

    if config is not None:
        best = dict(getattr(config, "best_config", config))
        epochs, batch_size = int(best.pop("epochs", epochs)), int(best.pop("batch_size", batch_size))
        lr, weight_decay = float(best.pop("lr", lr)), float(best.pop("weight_decay", weight_decay))
        optimizer = str(best.pop("optimizer", optimizer))
        model_params = {**best, **(model_params or {})}
    model_fn = resolve_object(model_fn, "train_torch: model_fn")
    _check_args(epochs, batch_size, num_workers, checkpoint_every, mixed_precision, use_gpu, max_failures)
    data = training_part(data)
    require_rows(data, "train_torch")
    fitted = features if isinstance(features, FittedFeatures) else None
    columns = None if fitted is not None or features is None else [str(c) for c in features]
    _preflight(data, label, columns, fitted)
    launch = uuid.uuid4().hex
    cfg = LoopConfig(
        model_fn=model_fn, label=label, features=columns, fitted_features=fitted,
        model_params=dict(model_params or {}), epochs=epochs, batch_size=batch_size, lr=lr,
        optimizer=optimizer, weight_decay=weight_decay, loss=loss, problem=problem, preempt_key=context.task_key(),
        mixed_precision=mixed_precision, checkpoint_every=checkpoint_every, seed=seed,
        shuffle_buffer=shuffle_buffer, cache_data=cache_data, on_epoch_end=on_epoch_end, launch=launch,
    )  # fmt: skip
    per_worker = worker_resources(use_gpu, resources_per_worker)
    loop_config: dict[str, Any] = {"loop": cfg, "has_validation": validation is not None}
    datasets: dict[str, Any] = {}
    if reader == "auto" and _has_shards(data):
        loop_config["source_shards"], loop_config["shard_rows"] = _source_shards(data, num_workers)
    else:
        if reader not in ("auto", "ray_data"):
            raise ValueError(f"train_torch: reader is 'auto' or 'ray_data', got {reader!r}")
        datasets["train"] = to_dataset(data, "train_torch")
        _check_room_for_ray_data(datasets["train"], num_workers, per_worker)
    if validation is not None:
        datasets["validation"] = to_dataset(validation, "train_torch")
    storage, name = checkpoint_dir(run_name, storage_path)
    ray_path, ray_fs = ray_storage(storage, resolve_store())
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=name, storage_path=ray_path, storage_filesystem=ray_fs,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
        ),  # fmt: skip
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    run_dir = f"{storage}/{name}"
    context.release_placement_group()  # admitted: Ray Train reserves the same workers itself
    try:
        result = trainer.fit()
    except RayTrainingFailed as exc:
        raise _training_failed(exc, run_dir, max_failures) from exc
    return _trained_model(result, cfg, run_dir)


def _has_shards(data: Any) -> bool:
    return not is_ray_dataset(data) and callable(getattr(data, "shards", None)) and callable(
        getattr(data, "iter_batches", None))


def _source_shards(data: Any, n: int) -> tuple[list[Any], int | None]:
    """One shard of a source (e.g. ``ParquetSource``) per worker, read by the worker itself
    with pyarrow: no Ray Data tasks, so no CPU needed beside the workers'."""
    shards = list(data.shards(n)) if n > 1 else [data]
    if n == 1:
        return shards, None
    rows = [int(s.num_rows) for s in shards]
    if min(rows) == 0:
        raise EmptyInputError(
            f"train_torch: with {n} workers some shards have no rows (rows per shard: {rows}); "
            "use fewer workers or more data"
        )
    return shards, min(rows)  # every rank takes the same number of steps


def _check_room_for_ray_data(ds: Any, num_workers: int, per_worker: dict[str, float]) -> None:
    """A lazy Dataset needs CPUs for its read/map tasks beside the Train workers; if the
    workers take every CPU the reads never run and training waits forever."""
    import ray

    if type(ds).__name__ == "MaterializedDataset" or not ray.is_initialized():
        return
    total = float(ray.cluster_resources().get("CPU", 0))
    wanted = num_workers * float(per_worker.get("CPU", 0))
    if total and wanted >= total:
        raise ValueError(
            f"train_torch: {num_workers} worker(s) × {per_worker.get('CPU', 0)} CPU take all {total:g} "
            "CPUs of the cluster, leaving none for Ray Data to read the input Dataset (training "
            "would wait forever); use fewer workers or CPUs per worker, ds.materialize() the data "
            "first, or pass a read_parquet source (its shards are read by the workers themselves)"
        )


def _training_failed(exc: Exception, run_dir: str, max_failures: int) -> Exception:
    failures = getattr(exc, "worker_failures", None) or {}
    for failure in failures.values():
        cause = getattr(failure, "cause", None) or failure
        if isinstance(cause, EmptyInputError | KeyError | TypeError | ValueError):
            return cause  # the user's data or code: say so directly, not as a Train failure
    first = next(iter(failures.values()), exc)
    text = str(first).strip().splitlines()
    latest = latest_checkpoint(run_dir) if is_local(run_dir) else None
    kept = (f"The last checkpoint (epoch {latest[0]}) is kept at {latest[1]}" if latest
            else f"No checkpoint was written under {run_dir}" if is_local(run_dir)
            else f"Its checkpoints are kept under {run_dir}")  # fmt: skip
    ctx = context.current()
    how = f"`rayline resume {ctx.run_id}`" if ctx is not None else "running it again with the same run_name"
    return TrainingFailedError(
        f"train_torch: training failed after {max_failures} allowed restart(s) "
        f"({type(first).__name__}: {text[0][:300] if text else ''}). {kept}; {how} continues from it."
    )


def _trained_model(result: Any, cfg: LoopConfig, run_dir: str) -> TrainedModel:
    if result.checkpoint is None:
        raise TrainingFailedError(f"train_torch: training ended without a checkpoint under {run_dir}")
    with result.checkpoint.as_directory() as d:
        restored = read_checkpoint(d)
    meta = restored["meta"]
    metrics = dict(result.metrics or meta.get("metrics") or {})
    ran_now = metrics.pop("launch", None) == cfg.launch
    epoch = int(meta["epoch"])
    if epoch < cfg.epochs and context.preempted():  # worker_loop saved a checkpoint and stopped
        raise TaskPreempted(f"train_torch: preempted after epoch {epoch}; resumes from {run_dir}")
    history = tuple(m for _, m in (getattr(result, "best_checkpoints", None) or []))
    return TrainedModel(
        framework="torch", label=cfg.label, features=tuple(meta["features"]),
        problem=meta["problem"], metrics=metrics, weights=restored["model"],
        model_fn=cfg.model_fn, model_params=cfg.model_params, n_outputs=int(meta["n_outputs"]),
        fitted_features=cfg.fitted_features,
        classes=None if meta["problem"] == "regression" else tuple(range(max(2, int(meta["n_outputs"])))),
        epochs_completed=epoch, resumed_from=int(metrics.get("resumed_from", 0)) if ran_now else epoch,
        checkpoint_path=str(run_dir), history=history,
    )  # fmt: skip


@task(cpus=1, name="train_sklearn")
def train_sklearn(
    data: Any,
    *,
    estimator: Any,
    label: str,
    features: Any = None,
    problem: str = "auto",
    fit_params: dict[str, Any] | None = None,
) -> TrainedModel:
    """Fit a scikit-learn (or dask-ml) estimator on the data in memory.

    The fitted estimator is stored as a signed pickle in the artifact store; the returned
    ``TrainedModel`` holds its digest and reads it back (checked) on ``predict``.

    Args:
        estimator: an unfitted estimator (cloned, never mutated), its ``"module:Class"``
            name, or ``{"class": "module:Class", "params": {...}}`` (YAML flows).
        features: ``None`` (every column but the label), a list of columns, or ``FittedFeatures``.
        problem: ``auto`` (a classifier if it has ``predict_proba``), or ``binary``,
            ``multiclass``, ``regression``.

    Example::

        model = train_sklearn(table, estimator=LogisticRegression(), label="churned")
    """
    import numpy as np
    from sklearn.base import clone, is_classifier

    from rayline.models.features import FittedFeatures

    table = to_table(training_part(data), "train_sklearn")
    fitted = features if isinstance(features, FittedFeatures) else None
    if fitted is not None:
        table = table_from_batch(fitted.transform(table))
    if label not in table.column_names:
        raise KeyError(f"train_sklearn: label column '{label}' is not in the data "
                       f"(columns: {', '.join(table.column_names)})")
    cols = [str(c) for c in features] if features is not None and fitted is None else [
        c for c in table.column_names if c != label]
    x = feature_matrix(table, cols)
    y = table.column(label).to_numpy(zero_copy_only=False)
    est = clone(resolve_estimator(estimator))
    est.fit(x, y, **(fit_params or {}))
    classifier = is_classifier(est) or hasattr(est, "predict_proba")
    if problem == "auto":
        problem = ("binary" if len(np.unique(y)) <= 2 else "multiclass") if classifier else "regression"
    classes = getattr(est, "classes_", None)
    if classes is None and problem != "regression":
        classes = np.unique(y)
    pred = np.asarray(est.predict(x))
    metrics: dict[str, Any] = {"rows": int(len(y))}
    if problem == "regression":
        metrics["train_rmse"] = float(np.sqrt(np.mean((pred.astype(float) - y.astype(float)) ** 2)))
    else:
        metrics["train_accuracy"] = float(np.mean(pred == y))
    info = resolve_store().put(est)
    model = TrainedModel(
        framework="sklearn", label=label, features=tuple(cols), problem=problem, metrics=metrics,
        artifact=info.digest, fitted_features=fitted,
        classes=None if classes is None else tuple(np.asarray(classes).tolist()),
    )  # fmt: skip
    object.__setattr__(model, "_loaded", est)
    return model
