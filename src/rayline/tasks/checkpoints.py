"""Where Ray Train and Ray Tune keep a node's checkpoints and results (under the artifact URL),
and the newest checkpoint of a Train run folder.

Example::

    storage, name = checkpoint_dir()          # ("<artifacts>/train/<run_id>", "<node_id>")
    latest_checkpoint(f"{storage}/{name}")    # (epoch, folder) or None
"""

from __future__ import annotations

import uuid
from pathlib import Path

from rayline import context
from rayline.models.trained import resolve_store
from rayline.store.artifact_location import store_url
from rayline.tasks.torch_loop import read_meta

__all__ = ["checkpoint_dir", "latest_checkpoint"]


def checkpoint_dir(run_name: str | None = None, storage_path: str | None = None,
                   kind: str = "train") -> tuple[str, str]:
    """``(storage_path, name)`` for this node's Train (or Tune) run: ``<store root>/<kind>/<run_id>``
    and the node id inside a run; outside a run ``…/<kind>/adhoc`` and ``run_name`` (or a fresh id)."""
    ctx = context.current()
    base = str(storage_path or store_url(resolve_store(), kind)).rstrip("/")  # a folder or a URL
    if ctx is not None:
        return f"{base}/{ctx.run_id}", run_name or ctx.node_id
    return f"{base}/adhoc", run_name or f"{kind}-{uuid.uuid4().hex[:12]}"


def latest_checkpoint(path: str | Path) -> tuple[int, Path] | None:
    """The highest-epoch checkpoint under a Train run folder, as ``(epoch, directory)``."""
    best: tuple[int, Path] | None = None
    for meta in Path(path).glob("*/meta.json"):
        try:
            epoch = int(read_meta(meta.parent)["epoch"])
        except (OSError, ValueError, KeyError):
            continue
        if best is None or epoch > best[0]:
            best = (epoch, meta.parent)
    return best
