"""Conditional steps: ``with rayline.when(ref):`` records every task called inside the block so
that it runs only when ``ref`` (an upstream task's output) is truthy.

Example::

    @flow
    def retrain(path: str):
        drifted = check_drift(path)
        with when(drifted):
            model = train(path)
            register(model)
        return report(path)

When ``check_drift`` returns something falsy, ``train`` and ``register`` are recorded SKIPPED
(and so is anything downstream of them), and the run still SUCCEEDS. Blocks nest: a task inside
two blocks runs only when both values are truthy. To branch on the opposite, return the negation
from a task. YAML spells it ``if: ${steps.check}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rayline.errors import TracingError
from rayline.sdk.graph import Ref
from rayline.sdk.tracing import active_trace, caller_location


@contextmanager
def when(condition: Ref) -> Iterator[None]:
    """Run the tasks called inside the block only when ``condition`` is truthy at run time."""
    trace = active_trace()
    if trace is None:
        raise TracingError(f"{caller_location()}: rayline.when() works only inside a flow")
    if not isinstance(condition, Ref):
        raise TracingError(
            f"{caller_location()}: rayline.when() takes the output of a task called in this flow, "
            f"got {condition!r}; branch on a constant or a parameter with a task that returns a bool"
        )
    trace.conditions.append(condition.node)
    try:
        yield
    finally:
        trace.conditions.pop()
