"""A flow whose task fails while a ``fail-TAG`` file exists and otherwise waits for a ``go``
file, for the overlap and resume tests (``tests/unit/test_run_overlap.py``): "busy" is a state
the test controls, not a race. A file, so that ``rayline.resume`` can load it again."""

from __future__ import annotations

import time
from pathlib import Path

from rayline import flow, task


@task
def gated(tag: str, folder: str) -> str:
    """Fails while the file ``fail-TAG`` exists; else marks that it started (``entered-TAG``),
    then waits for the file ``go``."""
    root = Path(folder)
    if (root / f"fail-{tag}").exists():
        raise ValueError(f"asked to fail: {root / f'fail-{tag}'} exists")
    (root / f"entered-{tag}").touch()
    deadline = time.monotonic() + 30
    while not (root / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never created 'go'")
        time.sleep(0.02)
    return tag


@flow
def held(tag: str, folder: str):
    return gated(tag, folder)
