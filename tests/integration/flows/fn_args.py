"""A flow that passes a function defined in its own file as a task argument."""

from __future__ import annotations

from rayline import flow, task


def double(x: int) -> int:
    return 2 * x


@task
def apply(fn, x: int) -> int:
    return fn(x)


@flow
def uses_fn():
    return apply(double, 21)
