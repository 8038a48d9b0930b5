"""The executor seam stays real: every executor class has each member of the ``Executor``
protocol (``engine/executors/base.py``) that the ``Runner`` is typed against, with the same
parameters (names, kinds, defaults), so a signature that drifts in one executor fails here."""

from __future__ import annotations

import inspect

import pytest

from rayline.engine.executors.base import Executor
from rayline.engine.executors.local import LocalExecutor
from rayline.engine.executors.ray import RayExecutor

EXECUTORS = [LocalExecutor, RayExecutor]


def protocol_members() -> dict[str, inspect.Signature | None]:
    """Each member of the protocol: its method signature, or None for a plain attribute."""
    members: dict[str, inspect.Signature | None] = {}
    for name in Executor.__annotations__:
        members[name] = None
    for name, value in vars(Executor).items():
        if inspect.isfunction(value) and not name.startswith("_"):
            members[name] = inspect.signature(value)
    return members


def parameters(sig: inspect.Signature) -> list[tuple[str, inspect._ParameterKind, object]]:
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def drift(cls: type) -> list[str]:
    """How ``cls`` differs from the protocol (empty when it satisfies it)."""
    problems = []
    for name, sig in protocol_members().items():
        if not hasattr(cls, name):
            problems.append(f"{cls.__name__} has no '{name}'")
            continue
        if sig is None:
            continue
        mine = inspect.signature(getattr(cls, name))
        if parameters(mine) != parameters(sig):
            problems.append(f"{cls.__name__}.{name}{mine} differs from Executor.{name}{sig}")
    return problems


def test_the_protocol_names_what_the_runner_calls():
    assert set(protocol_members()) == {
        "name", "sequential", "start", "cluster_nodes", "prepare", "finish", "submit", "wait", "metas", "cancel",
        "release", "lost",
    }  # fmt: skip


@pytest.mark.parametrize("cls", EXECUTORS, ids=lambda c: c.__name__)
def test_each_executor_matches_the_protocol_signatures(cls):
    assert drift(cls) == []
    assert isinstance(cls.name, str) and cls.name


def test_a_drifted_executor_is_caught():
    class Drifted(LocalExecutor):
        def submit(self, node, call, inputs):  # the signature base.py had drifted to
            raise NotImplementedError

        def meta(self, handle):
            raise NotImplementedError

    del_metas = type("NoMetas", (), {k: v for k, v in vars(LocalExecutor).items() if k != "metas"})
    assert drift(Drifted) == [f"Drifted.submit{inspect.signature(Drifted.submit)} differs from "
                              f"Executor.submit{inspect.signature(Executor.submit)}"]  # fmt: skip
    assert drift(del_metas) == ["NoMetas has no 'metas'"]


def test_the_local_executor_is_an_executor_at_runtime():
    assert isinstance(LocalExecutor(), Executor)
    assert isinstance(RayExecutor(), Executor)
