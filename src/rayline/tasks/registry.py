"""``register_model``: register a trained model from inside a flow, with the run's lineage.

The registry itself (versions, aliases, promotion history, the SQL backend) lives in
``rayline.models.registry``. The lineage comes from the task's context, where the driver put
what it knows of the run (run id, flow, parameters, plan hash, the code of the upstream tasks,
the trigger that started it). The task never opens the database: it registers in its copy of
the registry (``@task(registry=True)``), the model's bytes go to the artifact store, and the
driver commits the new version with the task's success.

Example::

    @flow
    def churn(path: str):
        model = train_sklearn(read_parquet(path), label="churned")
        return register_model(model, name="churn", alias="staging")
"""

from __future__ import annotations

from typing import Any

from rayline import context
from rayline.models.registry import ModelVersion, open_registry
from rayline.sdk.task import task

__all__ = ["register_model"]


@task(name="register_model", registry=True)
def register_model(
    model: Any,
    *,
    name: str,
    metrics: dict[str, Any] | None = None,
    alias: str | None = None,
    lineage: dict[str, Any] | None = None,
    features: Any = None,
    reason: str | None = None,
) -> ModelVersion:
    """Register ``model`` as the next version of ``name`` (and point ``alias`` at it).

    Inside a run, the lineage gets the run id, node id, flow name, the run's parameters, plan hash
    and a code hash of every task upstream of this one; ``lineage`` adds to it (for example an
    ``input_snapshot``). Outside a run it registers in ``RAYLINE_HOME``.

    Example::

        @flow
        def churn(path: str):
            model = train_sklearn(read_parquet(path), label="churned")
            return register_model(model, name="churn", alias="staging")
    """
    ctx = context.current()
    found = context.lineage()
    with open_registry(store=getattr(ctx, "store", None)) as reg:  # in a run: the task's copy
        mv = reg.register(name, model, metrics=metrics, lineage={**found, **(lineage or {})},
                          features=features)  # fmt: skip
        if alias is not None:
            why = reason or f"registered by flow {found.get('flow_name', '-')}"
            reg.promote(name, mv.version, alias, reason=why, actor=f"run:{found.get('run_id', '-')}")
            mv = reg.get(name, mv.version)
    return mv
