"""Subflows: a flow called inside a flow's body is traced into the same graph, its nodes
namespaced under the call (``train_all.fit``), so that it runs as part of the same run.

Its parameters are bound like a function's when the outer flow is traced: an unknown or missing
parameter is a ``DefinitionError`` naming the caller's ``file:line``. Arguments may be task
outputs, flow parameters or constants; what the subflow returns (``Ref``s) is what the call
returns. A second call of the same subflow is namespaced ``train_all-1``.

Example::

    @flow
    def train_all(path: str, folds: int = 3):
        return evaluate(fit.map(range(folds), path=path))

    @flow
    def nightly(path: str):
        return publish(train_all(path, folds=5))   # nodes train_all.fit[0], …, train_all.evaluate
"""

from __future__ import annotations

import inspect
from typing import Any

from rayline.errors import DefinitionError
from rayline.sdk.tracing import Trace, caller_location


def call_subflow(flow: Any, trace: Trace, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Trace ``flow``'s body into ``trace`` under the namespace of this call."""
    location = caller_location()
    signature = inspect.signature(flow.fn)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise DefinitionError(
            f"{location}: flow '{trace.flow_name}' calls subflow '{flow.name}' "
            f"(defined at {flow.location}): {exc}; its parameters are {signature}"
        ) from None
    bound.apply_defaults()
    trace.prefixes.append(trace.new_id(flow.name) + ".")
    try:
        return flow.fn(**bound.arguments)
    finally:
        trace.prefixes.pop()
