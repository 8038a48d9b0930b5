"""The evaluation gate: promote a challenger only if it beats the champion; then roll it out.

``gate_and_promote`` scores the challenger and the champion (the version the alias points at)
on the *same* held-out data with one declared metric. The challenger is registered (so the
history keeps every candidate) and the alias moves to it only if it wins by ``margin``
(``mode="max"``: challenger >= champion + margin, ``"min"``: challenger <= champion - margin). The
decision, with both scores and the reason, is recorded in the registry's history (``promote``
with the reason, or ``gate_rejected``) and returned as a ``GateDecision``.

``rollout_if_promoted`` (a task too, so a retraining flow can end with it) moves serving to the
promoted version with ``serve_model`` (an in-place update: zero failed requests; a version whose
constructor or health check fails is rolled back there), then watches the new version for
``watch_s`` seconds: health checks and, given ``probe`` records, predictions. If the error rate
exceeds ``max_error_rate`` or the application turns unhealthy, the alias is rolled back, the
previous version serves again (again in place), and the event ``rollout_watch_failed`` is
recorded.

Example::

    @flow
    def retrain(path: str):
        parts = split(read_parquet(path), test_fraction=0.25, seed=0)
        model = train_sklearn(parts, estimator=LogisticRegression(), label="churned")
        decision = gate_and_promote(model, parts, model_name="churn", metric="accuracy", margin=0.01)
        return rollout_if_promoted(decision, app_name="churn", input_log=True)

    decision = gate_and_promote(model, parts, model_name="churn")
    rollout_if_promoted(decision, app_name="churn", probe=[{"a": 1.0, "b": 0.0}])
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rayline.models.metrics import LOWER_IS_BETTER
from rayline.sdk.task import task
from rayline.tasks.gangs import replica_gang

log = logging.getLogger(__name__)

__all__ = ["GateDecision", "RolloutOutcome", "gate_and_promote", "measure", "rollout_if_promoted"]

GATE_ACTOR = "rayline-gate"


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided, and why (JSON-able via ``to_dict``)."""

    model_name: str
    alias: str
    metric: str
    mode: str
    margin: float
    challenger_version: int
    champion_version: int | None
    challenger_score: float
    champion_score: float | None
    promoted: bool
    reason: str
    rows: int
    decided_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RolloutOutcome:
    """What ``rollout_if_promoted`` did: ``none``, ``serving`` or ``rolled_back``."""

    action: str
    app: str
    version: int | None  # the version serving afterwards
    reason: str
    requests: int = 0
    errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(model: Any, data: Any, *, metric: str, label: str | None = None,
            inputs: Sequence[str] | None = None, flavor: str = "sklearn",
            features: Any = None) -> tuple[float, int]:  # fmt: skip
    """``metric`` of ``model`` on ``data`` (a ``Split`` uses ``.test``) and the row count.

    A ``TrainedModel`` is scored by ``metrics.score``; anything else (a registered scikit-learn
    estimator, a pyfunc model) through the serving predictor, on prediction-only metrics.
    """
    from rayline.models.metrics import prediction_metric, score
    from rayline.models.predictor import RecordPredictor
    from rayline.models.trained import TrainedModel
    from rayline.models.training_data import held_out_part, to_table

    table = to_table(held_out_part(data), "gate")
    if isinstance(model, TrainedModel):
        return float(score(model, table, label=label, metrics=[metric])[metric]), table.num_rows
    if label is None:
        raise ValueError("gate: give label= to score a model that is not a TrainedModel")
    predictor = RecordPredictor(model, flavor=flavor, inputs=inputs, features=features)
    records = table.drop_columns([label]).to_pylist()
    pred = predictor.predict(records)
    try:
        value = prediction_metric(metric, table.column(label).to_pylist(), pred)
    except ValueError as e:
        raise ValueError(f"gate: {e}") from None
    return value, table.num_rows


def _better(challenger: float, champion: float, mode: str, margin: float) -> bool:
    if math.isnan(challenger):
        return False
    if mode == "max":
        return challenger >= champion + margin
    return challenger <= champion - margin


@task(cpus=1, name="gate_and_promote", registry=True)
def gate_and_promote(
    challenger: Any,
    data: Any,
    *,
    model_name: str,
    metric: str = "accuracy",
    mode: str = "max",
    margin: float = 0.0,
    alias: str = "production",
    label: str | None = None,
    home: Any = None,
    lineage: Mapping[str, Any] | None = None,
) -> GateDecision:
    """Register ``challenger``, compare it with the ``alias`` version on ``data``, promote if better.

    Args:
        challenger: a trained model to register, or a registered one (its version number, or
            the ``ModelVersion`` that ``register_model`` returned).
        data: held-out data with the label (a ``Split``: its test part); both models see it all.
        mode: ``max`` (higher is better) or ``min`` (``rmse``, ``mae``, ``logloss``).
        margin: how much better the challenger must be (in the metric's units); ties promote
            only with ``margin=0``.
        home: the registry's home, or a ``ModelRegistry`` (default: the run's, else RAYLINE_HOME).

    Raises:
        ValueError: unknown mode, a negative margin, or ``mode`` contradicting the metric.
    """
    from rayline import context
    from rayline.models.registry import ModelVersion, open_registry
    from rayline.models.registry.protocol import Registry

    if mode not in ("max", "min"):
        raise ValueError(f"gate: mode is 'max' or 'min', got {mode!r}")
    if margin < 0:
        raise ValueError(f"gate: margin must be >= 0, got {margin!r}")
    if (metric in LOWER_IS_BETTER) != (mode == "min"):
        raise ValueError(f"gate: metric {metric!r} is {'lower' if metric in LOWER_IS_BETTER else 'higher'}"
                         f"-is-better; mode={mode!r} contradicts it")  # fmt: skip
    ctx = context.current()
    own = not isinstance(home, Registry)
    reg = open_registry(home, store=getattr(ctx, "store", None)) if own else home  # in a run: its copy
    try:
        if isinstance(challenger, ModelVersion):
            if challenger.name != model_name:
                raise ValueError(f"gate: the challenger is a version of '{challenger.name}', "
                                 f"not of '{model_name}'")  # fmt: skip
            challenger = challenger.version
        if isinstance(challenger, int):
            mv = reg.get(model_name, challenger)
        else:
            mv = reg.register(model_name, challenger, lineage={**context.lineage(), **(lineage or {})})
        ch_score, rows = _score_version(reg, mv, data, metric, label)
        champion = reg.aliases(model_name).get(alias)
        cp_score = None
        if champion is None:
            promoted = not math.isnan(ch_score)
            reason = f"gate: no '{alias}' version yet; challenger v{mv.version} {metric} {ch_score:.4f}"
        elif champion == mv.version:
            cp_score, promoted = ch_score, False
            reason = f"gate: v{mv.version} already is '{alias}'"
        else:
            cp_score, _ = _score_version(reg, reg.get(model_name, champion), data, metric, label)
            promoted = _better(ch_score, cp_score, mode, margin)
            op = "+" if mode == "max" else "-"
            verdict = "beats" if promoted else "does not beat"
            reason = (f"gate: challenger v{mv.version} {metric} {ch_score:.4f} {verdict} champion "
                      f"v{champion} {cp_score:.4f} {op} margin {margin:g} on {rows} held-out rows")  # fmt: skip
        if promoted:
            reg.promote(model_name, mv.version, alias, reason=reason, actor=GATE_ACTOR)
        elif champion != mv.version:
            reg.record_event(model_name, "gate_rejected", alias=alias, from_version=champion,
                             to_version=mv.version, reason=reason, actor=GATE_ACTOR)  # fmt: skip
        log.info("%s", reason)
        return GateDecision(model_name, alias, metric, mode, float(margin), mv.version, champion,
                            ch_score, cp_score, promoted, reason, rows)  # fmt: skip
    finally:
        if own:
            reg.close()


def _score_version(reg: Any, mv: Any, data: Any, metric: str, label: str | None) -> tuple[float, int]:
    model = reg.load(mv)
    return measure(model, data, metric=metric, label=label, inputs=mv.inputs, flavor=mv.flavor,
                   features=reg.load_features(mv))  # fmt: skip


def _watch(url: str, app: str, watch_s: float, interval_s: float, probe: Sequence[Mapping[str, Any]] | None,
           headers: Mapping[str, str] | None, check: Callable[[], bool] | None) -> tuple[int, int, str]:  # fmt: skip
    """Probe the new version for ``watch_s`` s: (requests, errors, why it went bad or "")."""
    import httpx
    from ray import serve

    requests = errors = 0
    deadline = time.monotonic() + watch_s
    with httpx.Client(timeout=10, headers=dict(headers or {})) as client:
        while True:
            status = serve.status().applications.get(app)
            if status is None or status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
                return requests, errors, f"application '{app}' is {getattr(status, 'status', 'gone')}"
            calls = [("GET", f"{url}/healthz", None)]
            if probe:
                calls.append(("POST", f"{url}/predict", {"records": list(probe)}))
            for method, where, body in calls:
                requests += 1
                try:
                    r = client.request(method, where, json=body)
                    errors += r.status_code >= 500
                except httpx.HTTPError:
                    errors += 1
            if check is not None and not check():
                return requests, errors, "the custom check failed"
            if time.monotonic() >= deadline:
                return requests, errors, ""
            time.sleep(interval_s)


@task(cpus=0, name="rollout_if_promoted", gang=replica_gang, registry=True)  # it waits on Serve; its replicas are its gang
def rollout_if_promoted(
    decision: GateDecision | Mapping[str, Any],
    *,
    app_name: str,
    home: Any = None,
    watch_s: float = 10.0,
    interval_s: float = 0.25,
    max_error_rate: float = 0.0,
    probe: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    check: Callable[[], bool] | None = None,
    **serve_kwargs: Any,
) -> RolloutOutcome:
    """Serve the promoted version as ``app_name``, watch it, and restore the previous one if it
    goes bad (see the module docstring). Nothing happens if the gate did not promote.

    ``serve_kwargs`` go to ``serve_model`` (port, health_check_period_s, bake_s,
    ``input_log=True`` or ``{"flush_seconds": 2}`` to log served inputs for drift, …; an update
    that does not say keeps the logging of the version it replaces). ``home``: the registry's
    home or a ``ModelRegistry`` (default: the run's, else RAYLINE_HOME).
    """
    d = decision.to_dict() if isinstance(decision, GateDecision) else dict(decision)
    name, alias, version = d["model_name"], d["alias"], d["challenger_version"]
    if not d["promoted"]:
        return RolloutOutcome("none", app_name, d.get("champion_version"), "not promoted: " + d["reason"])
    from rayline.errors import RaylineError
    from rayline.models.registry import open_registry
    from rayline.serving.rollout import RolloutError, serve_model
    from rayline.serving.serve_control import ACTOR

    reg = open_registry(home)  # inside a run: the task's copy, which the driver commits
    try:
        try:
            dep = serve_model(name, alias=alias, app_name=app_name, home=reg, **serve_kwargs)
        except RolloutError as e:  # serve_model restored the previous version and recorded it
            return RolloutOutcome("rolled_back", app_name, e.serving, str(e))
        previous = dep.previous_version
        n, bad, why = _watch(dep.url, app_name, watch_s, interval_s, probe, headers, check)
        rate = bad / n if n else 0.0
        if not why and rate > max_error_rate:
            why = f"error rate {rate:.1%} > {max_error_rate:.1%} ({bad} of {n} probes)"
        if not why:
            return RolloutOutcome("serving", app_name, dep.version, f"v{dep.version} healthy for "
                                  f"{watch_s:g} s ({n} probes, {bad} errors)", n, bad)  # fmt: skip
        reason = f"rollback after rollout: {why}"
        reg.record_event(name, "rollout_watch_failed", alias=alias, from_version=previous,
                         to_version=dep.version, reason=reason, actor=ACTOR)  # fmt: skip
        if previous is None:
            return RolloutOutcome("rolled_back", app_name, None, reason + "; nothing to restore", n, bad)
        kwargs = {k: v for k, v in serve_kwargs.items() if k != "bake_s"}
        try:
            reg.rollback(name, alias, reason=reason, actor=ACTOR, expected=version)
            restored = serve_model(name, alias=alias, app_name=app_name, home=reg, bake_s=0, **kwargs)
        except RaylineError as e:  # the alias moved meanwhile: serve the previous version by number
            log.warning("alias %s of %s not rolled back: %s", alias, name, e)
            restored = serve_model(name, previous, None, app_name=app_name, home=reg, bake_s=0, **kwargs)
        return RolloutOutcome("rolled_back", app_name, restored.version, reason, n, bad)
    finally:
        if reg is not home:
            reg.close()
