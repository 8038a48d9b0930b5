"""A flow with a required parameter."""

from __future__ import annotations

from rayline import flow, task


@task
def double(n: int) -> int:
    return 2 * n


@flow
def needs_n(n: int):
    return double(n)
