"""A flow that succeeds with a warning and a counter (SUCCEEDED_WITH_WARNINGS)."""

from __future__ import annotations

from rayline import context, flow, task


@task
def ingest() -> int:
    context.warn("2 corrupt files set aside")
    context.count("quarantined", 2)
    return 10


@flow
def warned():
    return ingest()
