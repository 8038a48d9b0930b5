"""Petastorm's predicates as data: ``Predicate`` (an op and its arguments, JSON for the bridge
process) and the ``in_*`` helpers, named and ordered as in ``petastorm.predicates``. They filter
rows with ``read_petastorm(url, engine="bridge", predicate=...)``; the bridge process rebuilds
petastorm's own predicate from the JSON.

Example::

    keep = in_reduce([in_set([0, 1], "label"), in_negate(in_set([7], "id"))], all)
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rayline.errors import DefinitionError


@dataclass(frozen=True)
class Predicate:
    """A petastorm predicate as data (JSON for the bridge); build one with the ``in_*`` helpers,
    named and ordered as in ``petastorm.predicates``."""

    op: str
    args: tuple[Any, ...]

    def to_json(self) -> dict[str, Any]:
        def enc(a: Any) -> Any:
            return a.to_json() if isinstance(a, Predicate) else [enc(x) for x in a] if isinstance(a, list | tuple) else a

        return {"op": self.op, "args": [enc(a) for a in self.args]}


def in_set(inclusion_values: Sequence[Any], predicate_field: str) -> Predicate:
    return Predicate("in_set", (list(inclusion_values), predicate_field))


def in_intersection(inclusion_values: Sequence[Any], predicate_field: str) -> Predicate:
    return Predicate("in_intersection", (list(inclusion_values), predicate_field))


def in_negate(predicate: Predicate) -> Predicate:
    return Predicate("in_negate", (predicate,))


def in_reduce(predicate_list: Sequence[Predicate], reduce_func: Callable[..., bool] | str = "all") -> Predicate:
    """``reduce_func``: ``all``/``any`` (the builtins or their names)."""
    name = getattr(reduce_func, "__name__", reduce_func)
    if name not in ("all", "any"):
        raise DefinitionError(f"in_reduce: reduce_func must be all or any, got {reduce_func!r}")
    return Predicate("in_reduce", (list(predicate_list), name))


def in_pseudorandom_split(fraction_list: Sequence[float], subset_index: int, predicate_field: str) -> Predicate:
    return Predicate("in_pseudorandom_split", (list(fraction_list), subset_index, predicate_field))


def in_lambda(predicate_fields: Sequence[str], predicate_func: Callable[..., bool], state_arg: Any = None) -> Predicate:
    """Any function of the named fields' values, shipped with cloudpickle (your own code, run in
    the side env's Python of the same version). Functions from your own modules travel by value
    (the side env cannot import them); what they call must exist there (numpy, the stdlib)."""
    import types

    import cloudpickle

    module = sys.modules.get(getattr(predicate_func, "__module__", "") or "")
    own = (isinstance(predicate_func, types.FunctionType) and module is not None
           and "site-packages" not in str(getattr(module, "__file__", "site-packages")))  # fmt: skip
    if own:
        cloudpickle.register_pickle_by_value(module)
    try:
        blob = base64.b64encode(cloudpickle.dumps((predicate_func, state_arg))).decode()
    finally:
        if own:
            cloudpickle.unregister_pickle_by_value(module)
    return Predicate("in_lambda", (list(predicate_fields), blob))
