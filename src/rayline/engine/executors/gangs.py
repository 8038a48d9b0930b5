"""The placement groups of gang nodes on Ray (``PlannedNode.gang``: ``train_torch``'s workers,
a multi-worker trial): one group of all the node's bundles per submission, so Ray starts the task
only once every bundle is reserved, and given back when the task ends or is cancelled.

Example::

    pg = placement_group_for(node, run_id)     # the task gets pg and pg.ready() as arguments
    remove_groups(handles)                     # handles with a ``pg`` attribute
"""

from __future__ import annotations

import logging
from typing import Any

from rayline.engine.compiler import PlannedNode

log = logging.getLogger("rayline.executor")

__all__ = ["placement_group_for", "remove_groups"]


def placement_group_for(node: PlannedNode, run_id: str) -> Any:
    """A placement group of every bundle of ``node``'s gang (not yet ready)."""
    from ray.util.placement_group import placement_group

    return placement_group(node.gang.bundle_dicts(), strategy=node.gang.strategy, name=f"rayline:{run_id}:{node.id}")


def remove_groups(handles: list[Any]) -> None:
    """Give back the placement groups of these (finished or cancelled) nodes' gangs."""
    for h in handles:
        if getattr(h, "pg", None) is not None:
            from ray.util import remove_placement_group

            pg, h.pg = h.pg, None
            try:
                remove_placement_group(pg)
            except Exception as exc:  # removed by the task itself already
                log.debug("remove placement group of %s: %s", h.node_id, exc)
