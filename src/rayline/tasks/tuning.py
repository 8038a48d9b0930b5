"""``tune``: Ray Tune over a torch model, a scikit-learn/dask-ml estimator or your own trainable.

The search space is Python (``ray.tune.choice`` …) or YAML-friendly data, converted by
``parse_search_space``::

    {"lr": {"loguniform": [1e-4, 1e-1]}, "hidden": {"choice": [16, 32]}, "epochs": 8}

For torch, the keys ``lr``, ``batch_size``, ``epochs``, ``weight_decay`` and ``optimizer`` set
training; every other key is passed to ``model_fn(n_features, **rest)``. For an estimator the
config goes to ``estimator.set_params``. Each trial trains in-process on one CPU (no DDP) over
the training part, reports validation metrics every epoch (``val_loss``, ``val_accuracy``), and
ASHA stops the weak ones early. The task waits without a CPU, so on 2 CPUs two trials run at
once. Re-running the same node (retry or ``rayline resume``) restores the Tune experiment.

Example::

    tuned = tune(parts, model_fn=make_mlp, label="churned", num_samples=8,
                 search_space={"lr": {"loguniform": [1e-3, 1e-1]}, "hidden": {"choice": [16, 64]}})
    model = train_torch(parts, model_fn=make_mlp, label="churned", config=tuned, num_workers=2)
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rayline.models.trained import (
    TrainedModel,
    feature_matrix,
    resolve_estimator,
    resolve_object,
    resolve_store,
)
from rayline.models.training_data import table_from_batch, to_table, training_part
from rayline.sdk.task import task
from rayline.tasks.gangs import trial_gang
from rayline.tasks.torch_batches import TensorCache
from rayline.tasks.torch_loop import EpochTrainer, LoopConfig, read_checkpoint

__all__ = ["TRAINING_KEYS", "TuneResult", "parse_search_space", "tune"]

TRAINING_KEYS = ("lr", "batch_size", "epochs", "weight_decay", "optimizer")
_DOMAINS = {
    "choice": lambda t, a: t.choice(list(a)),
    "grid_search": lambda t, a: t.grid_search(list(a)),
    "grid": lambda t, a: t.grid_search(list(a)),
    "uniform": lambda t, a: t.uniform(*a),
    "loguniform": lambda t, a: t.loguniform(*a),
    "quniform": lambda t, a: t.quniform(*a),
    "qloguniform": lambda t, a: t.qloguniform(*a),
    "randint": lambda t, a: t.randint(*a),
    "lograndint": lambda t, a: t.lograndint(*a),
    "qrandint": lambda t, a: t.qrandint(*a),
    "randn": lambda t, a: t.randn(*a),
}


@dataclass(frozen=True)
class TuneResult:
    """The best trial (``best_config``, ``best_metrics``, its ``model``) and every trial's last
    metrics. ``train_torch(config=result)`` and ``evaluate(result, …)`` accept it directly."""

    best_config: dict[str, Any]
    best_metrics: dict[str, Any]
    model: TrainedModel | None
    metric: str
    mode: str
    trials: tuple[dict[str, Any], ...] = field(default=(), repr=False)


def parse_search_space(space: Mapping[str, Any]) -> dict[str, Any]:
    """Ray Tune domains from YAML-friendly data (Python domains and constants pass through).

    Example::

        parse_search_space({"lr": {"loguniform": [1e-4, 1e-1]}, "hidden": {"choice": [16, 32]}})
    """
    from ray import tune as rt

    out: dict[str, Any] = {}
    for key, value in space.items():
        if isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in _DOMAINS:
            (kind, args), = value.items()
            if not isinstance(args, list | tuple):
                raise ValueError(f"search space '{key}': {kind} takes a list, e.g. {{'{kind}': [1, 2]}}; got {args!r}")
            try:
                out[key] = _DOMAINS[kind](rt, args)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"search space '{key}': bad {kind} arguments {list(args)}: {exc}") from None
        elif isinstance(value, Mapping) and not _is_domain(value):
            out[key] = parse_search_space(value)
        else:
            out[key] = value
    return out


def _is_domain(value: Any) -> bool:
    return hasattr(value, "sample") and hasattr(value, "domain_str")


@dataclass
class _TrialSpec:
    label: str
    model_fn: Callable[..., Any] | None
    estimator: Any
    trainable: Callable[..., Any] | None
    features: list[str] | None
    fitted: Any
    defaults: dict[str, Any]
    seed: int


def _split_validation(table: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    import numpy as np

    mask = np.random.default_rng(seed).random(table.num_rows) < fraction
    if mask.all() or not mask.any():
        raise ValueError(f"tune: cannot hold out {fraction:.0%} of {table.num_rows} rows for validation")
    return table.filter(~mask), table.filter(mask)


def _batches(table: Any, size: int) -> list[Any]:
    return [table.slice(i, size) for i in range(0, table.num_rows, size)]


def _torch_trial(config: dict[str, Any], train: Any, val: Any, spec: _TrialSpec) -> None:
    from ray import tune as rt

    knobs = {**spec.defaults, **{k: v for k, v in config.items() if k in TRAINING_KEYS}}
    cfg = LoopConfig(
        model_fn=spec.model_fn, label=spec.label, features=spec.features, fitted_features=spec.fitted,
        model_params={k: v for k, v in config.items() if k not in TRAINING_KEYS},
        epochs=int(knobs["epochs"]), batch_size=int(knobs["batch_size"]), lr=float(knobs["lr"]),
        weight_decay=float(knobs.get("weight_decay", 0.0)), optimizer=str(knobs.get("optimizer", "adam")),
        seed=spec.seed, task_name="tune",
    )  # fmt: skip
    import torch

    # a trial given a GPU (resources_per_trial={"gpu": …}) sees it through CUDA_VISIBLE_DEVICES
    trainer = EpochTrainer(cfg, device=torch.device("cuda") if torch.cuda.is_available() else None)
    start = 0
    checkpoint = rt.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            restored = read_checkpoint(d)
        start = int(restored["meta"]["epoch"])
        trainer.build(restored["meta"]["features"], restored)
    if spec.fitted is not None:  # transform once per trial, not once per epoch
        train, val = (table_from_batch(spec.fitted.transform(t)) for t in (train, val))
        cfg.fitted_features = None
    cache = TensorCache(None)  # the trial's data is in memory already: convert it once
    for epoch in range(start + 1, cfg.epochs + 1):
        if cache.ready:
            sums = trainer.run_tensors(cache.items)
        else:
            sums = trainer.run_epoch(_batches(train, cfg.batch_size), cache)
            cache.seal()
        metrics = {"epoch": epoch, "loss": sums["loss_sum"] / sums["rows"]}
        if trainer.problem != "regression":
            metrics["accuracy"] = sums["correct"] / sums["rows"]
        metrics.update(trainer.evaluate(_batches(val, 8192)))
        with tempfile.TemporaryDirectory(prefix="rayline-trial-") as tmp:
            trainer.write_checkpoint(tmp, epoch, metrics)
            rt.report(metrics, checkpoint=rt.Checkpoint.from_directory(tmp))


def _fit_estimator(spec: _TrialSpec, config: dict[str, Any], train: Any) -> tuple[Any, list[str]]:
    from sklearn.base import clone

    if spec.fitted is not None:
        train = table_from_batch(spec.fitted.transform(train))
    cols = spec.features or [c for c in train.column_names if c != spec.label]
    est = clone(spec.estimator).set_params(**config)
    est.fit(feature_matrix(train, cols), train.column(spec.label).to_numpy(zero_copy_only=False))
    return est, cols


def _sklearn_trial(config: dict[str, Any], train: Any, val: Any, spec: _TrialSpec) -> None:
    from ray import tune as rt

    from rayline.models.metrics import score

    est, cols = _fit_estimator(spec, config, train)
    model = _sklearn_model(spec, est, cols, train)
    if model.problem == "regression":
        names: tuple[str, ...] = ("rmse", "mae", "r2")
    else:
        names = ("accuracy", "auc", "logloss") if hasattr(est, "predict_proba") else ("accuracy",)
    metrics = score(model, val, metrics=names)
    rt.report({f"val_{k}": v for k, v in metrics.items() if k != "rows"})


def _sklearn_model(spec: _TrialSpec, est: Any, cols: list[str], train: Any) -> TrainedModel:
    import numpy as np
    from sklearn.base import is_classifier

    classifier = is_classifier(est) or hasattr(est, "predict_proba")
    y = train.column(spec.label).to_numpy(zero_copy_only=False)
    classes = getattr(est, "classes_", None)
    if classifier and classes is None:
        classes = np.unique(y)
    problem = ("binary" if len(classes) <= 2 else "multiclass") if classifier else "regression"
    model = TrainedModel(framework="sklearn", label=spec.label, features=tuple(cols), problem=problem,
                         fitted_features=spec.fitted,
                         classes=None if classes is None else tuple(np.asarray(classes).tolist()))
    object.__setattr__(model, "_loaded", est)
    return model


def _custom_trial(config: dict[str, Any], train: Any, val: Any, spec: _TrialSpec) -> None:
    spec.trainable(config, train, val)  # type: ignore[misc]


def _objective(metric: str | None, mode: str | None, model_fn: Any, estimator: Any) -> tuple[str, str]:
    if metric is None:
        if model_fn is not None:
            metric = "val_loss"
        elif estimator is not None:
            from sklearn.base import is_classifier

            classifier = is_classifier(estimator) or hasattr(estimator, "predict_proba")
            metric = "val_accuracy" if classifier else "val_rmse"
        else:
            raise ValueError("tune: with trainable=, say which reported metric to optimise (metric=, mode=)")
    if mode is None:
        lower_is_better = any(w in metric for w in ("loss", "rmse", "mae", "error"))
        mode = "min" if lower_is_better else "max"
    return metric, mode


def _scheduler(scheduler: Any, epochs: int, grace_period: int, reduction_factor: float) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if scheduler is None or scheduler == "fifo":
        return FIFOScheduler()
    if scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=max(epochs, 1),
                             grace_period=grace_period, reduction_factor=reduction_factor)
    if isinstance(scheduler, str):
        raise ValueError(f"tune: scheduler is 'asha', 'fifo' or a Ray Tune scheduler, got {scheduler!r}")
    return scheduler


def _resources(resources: Mapping[str, float] | None) -> dict[str, float]:
    res = {str(k).lower() if str(k).upper() in ("CPU", "GPU") else str(k): float(v)
           for k, v in (resources or {"cpu": 1}).items()}
    res.setdefault("cpu", 1.0)
    return res


@task(cpus=0, name="tune", gang=trial_gang)
def tune(
    data: Any,
    *,
    search_space: Mapping[str, Any],
    label: str | None = None,
    model_fn: Callable[..., Any] | None = None,
    estimator: Any = None,
    trainable: Callable[..., Any] | None = None,
    features: Any = None,
    validation: Any = None,
    metric: str | None = None,
    mode: str | None = None,
    num_samples: int = 8,
    scheduler: Any = "asha",
    max_concurrent: int = 2,
    resources_per_trial: Mapping[str, float] | None = None,
    epochs: int = 5,
    batch_size: int = 256,
    lr: float = 1e-3,
    validation_fraction: float = 0.2,
    grace_period: int = 1,
    reduction_factor: float = 2,
    seed: int = 0,
    run_name: str | None = None,
    storage_path: str | None = None,
) -> TuneResult:
    """Search hyper-parameters with Ray Tune; returns the best trial's config, metrics and model.

    Give exactly one of ``model_fn`` (torch), ``estimator`` (scikit-learn/dask-ml) or
    ``trainable`` (``fn(config, train_table, val_table)`` calling ``ray.tune.report``); each
    may also be named as in ``train_torch``/``train_sklearn`` (``"module:name"``, YAML flows).

    Args:
        data: training data (a ``Split`` uses ``.train``); read into memory once and shared
            with every trial through Ray's object store.
        search_space: Ray Tune domains or YAML-friendly data (see ``parse_search_space``).
        num_samples: configurations drawn; a grid is repeated ``num_samples`` times, so use
            ``num_samples=1`` for a pure grid.
        label, features: as for ``train_torch`` (``features`` may be ``FittedFeatures``).
        validation: held-out data for the metrics; default: ``validation_fraction`` of ``data``.
        metric, mode: what to optimise. Torch trials report ``val_loss``, ``val_accuracy``,
            ``loss``, ``accuracy`` (default ``val_loss``/min); estimators ``val_accuracy``,
            ``val_auc``, ``val_logloss`` (default ``val_accuracy``/max) or ``val_rmse``,
            ``val_mae``, ``val_r2`` (default ``val_rmse``/min). Required with ``trainable``.
        scheduler: ``"asha"`` (early stopping by epoch), ``"fifo"``, or a Tune scheduler.
        max_concurrent, resources_per_trial: trials at once, and each trial's resources
            (default ``{"cpu": 1}``).
        epochs, batch_size, lr: torch defaults when the search space does not set them.

    Example::

        tune(table, estimator=LogisticRegression(), label="y", metric="val_auc", mode="max",
             search_space={"C": {"loguniform": [0.01, 10]}}, num_samples=4)
    """
    from ray import tune as rt

    from rayline.models.features import FittedFeatures

    model_fn = resolve_object(model_fn, "tune: model_fn") if model_fn is not None else None
    estimator = resolve_estimator(estimator) if estimator is not None else None
    trainable = resolve_object(trainable, "tune: trainable") if trainable is not None else None
    given = [n for n, v in (("model_fn", model_fn), ("estimator", estimator), ("trainable", trainable)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"tune: give exactly one of model_fn, estimator or trainable (got {', '.join(given) or 'none'})")
    if trainable is None and not label:
        raise ValueError("tune: label= is required with model_fn or estimator")
    metric, mode = _objective(metric, mode, model_fn, estimator)
    if mode not in ("min", "max"):
        raise ValueError(f"tune: mode is 'min' or 'max', got {mode!r}")
    table = to_table(training_part(data), "tune")
    train, val = (table, to_table(validation, "tune")) if validation is not None else _split_validation(
        table, validation_fraction, seed)
    fitted = features if isinstance(features, FittedFeatures) else None
    spec = _TrialSpec(
        label=label or "", model_fn=model_fn, estimator=estimator, trainable=trainable,
        features=None if fitted is not None or features is None else [str(c) for c in features],
        fitted=fitted, defaults={"epochs": epochs, "batch_size": batch_size, "lr": lr}, seed=seed,
    )  # fmt: skip
    body = _torch_trial if model_fn is not None else _sklearn_trial if estimator is not None else _custom_trial
    fn = rt.with_resources(rt.with_parameters(body, train=train, val=val, spec=spec), _resources(resources_per_trial))
    space = parse_search_space(search_space)
    from rayline.store.artifact_location import ray_storage
    from rayline.tasks.checkpoints import checkpoint_dir

    storage, name = checkpoint_dir(run_name, storage_path, kind="tune")  # under the artifact URL
    storage, fs = ray_storage(storage, resolve_store())
    path = f"{storage}/{name}"
    if rt.Tuner.can_restore(path, storage_filesystem=fs):
        tuner = rt.Tuner.restore(path, trainable=fn, resume_errored=True, param_space=space, storage_filesystem=fs)
    else:
        tuner = rt.Tuner(
            fn, param_space=space,
            tune_config=rt.TuneConfig(metric=metric, mode=mode, num_samples=num_samples,
                                      max_concurrent_trials=max_concurrent, reuse_actors=True,
                                      scheduler=_scheduler(scheduler, epochs, grace_period, reduction_factor)),
            run_config=rt.RunConfig(name=name, storage_path=storage, storage_filesystem=fs, verbose=0),
        )  # fmt: skip
    grid = tuner.fit()
    return _result(grid, spec, metric, mode, train)


def _result(grid: Any, spec: _TrialSpec, metric: str, mode: str, train: Any) -> TuneResult:
    trials = tuple({"config": r.config, "metrics": dict(r.metrics or {}), "error": str(r.error) if r.error else None}
                   for r in grid)
    if all(t["error"] for t in trials):
        raise RuntimeError(f"tune: every trial failed; first error: {trials[0]['error'][:2000] if trials else 'no trials'}")
    best = grid.get_best_result(metric=metric, mode=mode, scope="last")
    if best.metrics is None or metric not in best.metrics:
        raise KeyError(f"tune: the trials never reported '{metric}'; they reported: "
                       f"{', '.join(sorted(best.metrics or {})) or 'nothing'}")
    config, metrics = dict(best.config), dict(best.metrics)
    return TuneResult(config, metrics, _best_model(spec, best, config, metrics, train), metric, mode, trials)


def _best_model(spec: _TrialSpec, best: Any, config: dict[str, Any], metrics: dict[str, Any], train: Any) -> TrainedModel | None:
    from dataclasses import replace

    if spec.model_fn is not None and best.checkpoint is not None:
        with best.checkpoint.as_directory() as d:
            restored = read_checkpoint(d)
        meta = restored["meta"]
        return TrainedModel(
            framework="torch", label=spec.label, features=tuple(meta["features"]), problem=meta["problem"],
            metrics=metrics, weights=restored["model"], model_fn=spec.model_fn,
            model_params={k: v for k, v in config.items() if k not in TRAINING_KEYS},
            n_outputs=int(meta["n_outputs"]), fitted_features=spec.fitted, epochs_completed=int(meta["epoch"]),
            classes=None if meta["problem"] == "regression" else tuple(range(max(2, int(meta["n_outputs"])))),
            checkpoint_path=str(best.path),
        )  # fmt: skip
    if spec.estimator is not None:  # refit the winner here and store it signed, as train_sklearn does
        est, cols = _fit_estimator(spec, config, train)
        model = _sklearn_model(spec, est, cols, train)
        stored = replace(model, metrics=metrics, artifact=resolve_store().put(est).digest)
        object.__setattr__(stored, "_loaded", est)
        return stored
    return None
