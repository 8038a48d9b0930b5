"""A flow that branches on a task result while tracing: a TracingError at definition time."""

from __future__ import annotations

from rayline import flow, task


@task
def count() -> int:
    return 3


@task
def big() -> str:
    return "big"


@flow
def branching():
    n = count()
    if n:  # not allowed: n is a placeholder while the flow is traced
        return big()
    return n
