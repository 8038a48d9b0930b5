"""A flow file whose function is an argument of a task defined elsewhere (as model_fn is for
the built-in train_torch): the file's module must still reach the workers."""

from __future__ import annotations

from tests.integration.flows.apply_task import apply

from rayline import flow


def triple(x: int) -> int:
    return 3 * x


@flow
def uses_fn_elsewhere():
    return apply(triple, 14)
