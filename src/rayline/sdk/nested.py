"""Values nested in a task argument: the lists, tuples and dict values that hold ``Ref``s,
``ParamRef``s, slots, secrets and constants.

Every walk over an argument (tracing its references, compiling it into a template, binding a
template's slots on the worker, resolving its secrets) goes through these two functions, so
they agree on what a container is. A tuple or list subclass comes out as a plain tuple or list.

Example::

    list(nested_values({"a": [1, (2, 3)]}))        # [1, 2, 3]
    map_nested({"a": [1, (2, 3)]}, lambda v: v * 10)  # {"a": [10, (20, 30)]}
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["map_nested", "nested_values"]


def nested_values(value: Any) -> Iterator[Any]:
    """Each value nested in ``value``'s lists, tuples and dict values, depth first; ``value``
    itself when it is none of those."""
    if isinstance(value, list | tuple):
        for v in value:
            yield from nested_values(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from nested_values(v)
    else:
        yield value


def map_nested(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with each nested value (see ``nested_values``) replaced by ``fn`` of it; the
    lists, tuples and dicts are new ones, their keys kept."""
    if isinstance(value, list):
        return [map_nested(v, fn) for v in value]
    if isinstance(value, tuple):
        return tuple(map_nested(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: map_nested(v, fn) for k, v in value.items()}
    return fn(value)
