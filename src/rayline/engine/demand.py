"""The real demand of a node: its own worker's resources plus the gang it starts from inside.

``train_torch`` and ``tune`` wait without a CPU of their own; what they ask of the cluster is
their Ray Train workers and Tune trials. Such a task declares them with ``@task(gang=fn)``
(``sdk/resources.Gang``); the compiler calls ``node_gang`` once per node and keeps the answer on
the ``PlannedNode``, and ``check_gangs`` refuses, before anything runs, a gang the cluster can
never hold: an atomic gang (a Train worker group) must pack onto the alive nodes all at once, each
bundle of a non-atomic one (a Tune trial) must fit on some node.

Example::

    gang = node_gang(spec, (("num_workers", 2), ("use_gpu", True)))
    problems = list(check_gangs(plan.nodes, cluster, flow="churn"))
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from typing import Any

from rayline.errors import Problem
from rayline.sdk.resources import Gang
from rayline.sdk.spec import TaskSpec


def node_gang(spec: TaskSpec, template: Iterable[tuple[str, Any]], is_known: Any = None) -> Gang | None:
    """``spec.gang`` called with the node's arguments known at compile time (constants, flow
    parameters, then the function's defaults); ``is_known(value)`` says which template values
    are known (default: all).

    Raises:
        ValueError: the task's gang function refused the arguments (its message says why).
    """
    if spec.gang is None:
        return None
    args: dict[str, Any] = {}
    for name, p in spec.signature.parameters.items():
        if p.default is not inspect.Parameter.empty:
            args[name] = p.default
    for name, value in template:
        if is_known is None or is_known(value):
            args[name] = value
    gang = spec.gang(args)
    if gang is not None and not isinstance(gang, Gang):
        raise ValueError(f"task '{spec.name}': its gang function returned {gang!r}, not a Gang")
    return gang


def check_gangs(nodes: Iterable[Any], cluster: list[dict[str, float]], *, flow: str) -> Iterator[Problem]:
    """A problem for every planned node whose gang no arrangement on ``cluster`` (total
    resources per alive node) can ever hold."""
    for node in nodes:
        gang = getattr(node, "gang", None)
        if gang is None:
            continue
        bundles = gang.bundle_dicts()
        if gang.atomic:
            ok = _packs(bundles, cluster)
        else:
            ok = all(any(_fits(b, n) for n in cluster) for b in bundles[:1])
        if ok:
            continue
        totals = gang.totals()
        first = _text(bundles[0]) if bundles else ""
        has = {k: sum(n.get(k, 0.0) for n in cluster) for k in totals}
        alone = [k for k, v in bundles[0].items() if not any(n.get(k, 0.0) >= v for n in cluster)]
        summed = [k for k, v in totals.items() if has[k] < v] if gang.atomic else []
        short = summed or alone or list(bundles[0])
        need = _text({k: totals[k] for k in short}) if gang.atomic else _text({k: bundles[0][k] for k in short})
        got = _text({k: has[k] for k in short})
        msg = (f"task '{node.spec.name}' asks for {gang.what} of {{{first}}} each "
               f"({need} {'in all, at once' if gang.atomic else 'for one'}), which the cluster can "
               f"never provide: it has {got} ({len(cluster)} node(s): "
               f"{'; '.join(_text(_visible(n)) for n in cluster)})")  # fmt: skip
        yield Problem(msg, flow=flow, node=node.id, location=node.location,
                      hint="lower num_workers / use_gpu / resources_per_worker (or the trial's "
                           "resources), or connect to a cluster that has them")  # fmt: skip


def _fits(bundle: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(k, 0.0) >= v - 1e-9 for k, v in bundle.items())


def _packs(bundles: list[dict[str, float]], cluster: list[dict[str, float]]) -> bool:
    """First-fit decreasing of ``bundles`` onto the nodes' totals (a gang's placement group)."""
    free = [dict(n) for n in cluster]
    for b in sorted(bundles, key=lambda b: sorted(b.items(), key=lambda kv: -kv[1]), reverse=True):
        for n in free:
            if _fits(b, n):
                for k, v in b.items():
                    n[k] = n.get(k, 0.0) - v
                break
        else:
            return False
    return True


def _visible(node: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in node.items()
            if k in ("CPU", "GPU") or not (k.startswith("node:") or "memory" in k or k.startswith("accelerator_type"))}  # fmt: skip


def _text(resources: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(resources.items())) or "nothing"
