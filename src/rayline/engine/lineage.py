"""What the driver tells each task about its run, for the lineage of what the task produces.

The driver knows the run (parameters, plan hash, the trigger that started it) and the plan
(every node's code hash and inputs); a task on a Ray worker must not open the run store to learn
them. ``RunLineage.of(node_id)`` is the small dict that travels with the node's call and becomes
``TaskContext.lineage`` (see ``rayline.context.lineage``).

Example::

    lineage = RunLineage(plan, run_store.get_run(run_id))
    lineage.of("register")   # {"run_params": {...}, "plan_hash": "…", "code_hash": "…"}
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["RunLineage"]


class RunLineage:
    """The lineage of one run's nodes.

    Args:
        plan: the compiled ``Plan`` being run.
        run: the run's record (``RunRecord``: ``params``, ``plan_hash``, ``trigger``).
    """

    def __init__(self, plan: Any, run: Any) -> None:
        self._base: dict[str, Any] = {"run_params": run.params, "plan_hash": run.plan_hash}
        if run.trigger:
            self._base["trigger"] = run.trigger
        self._nodes = {n.id: n for n in plan.nodes}

    def of(self, node_id: str) -> dict[str, Any]:
        """The run's lineage plus ``code_hash``: a sha256 over the code hash of every task
        upstream of ``node_id`` (None when it has no upstream task)."""
        seen: set[str] = set()
        stack = list(self._nodes[node_id].inputs) if node_id in self._nodes else []
        while stack:
            nid = stack.pop()
            if nid not in seen and nid in self._nodes:
                seen.add(nid)
                stack.extend(self._nodes[nid].inputs)
        text = "\n".join(f"{nid}:{self._nodes[nid].spec.code_hash}" for nid in sorted(seen))
        code = hashlib.sha256(text.encode()).hexdigest() if seen else None
        return {**self._base, "code_hash": code}
