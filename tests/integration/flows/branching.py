"""Flows for the condition tests: ``with when(check(...))`` takes or skips a branch."""

from __future__ import annotations

from rayline import flow, task, when


@task
def check(go: bool) -> bool:
    return go


@task
def train(x: int) -> int:
    return x * 10


@task
def register(model: int) -> str:
    return f"model-{model}"


@task
def report(x: int) -> int:
    return x + 1


@flow
def maybe_retrain(go: bool = False, x: int = 4):
    with when(check(go)):
        model = train(x)
        name = register(model)
    return {"report": report(x), "name": name}


@flow
def report_only(go: bool = False, x: int = 4):
    with when(check(go)):
        register(train(x))
    return report(x)
