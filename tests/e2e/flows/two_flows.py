"""Two flows in one file: pick one with two_flows.py:NAME."""

from __future__ import annotations

from rayline import flow, task


@task
def load() -> list[int]:
    return [1, 2, 3]


@task
def train(data: list[int]) -> int:
    return sum(data)


@task
def evaluate(model: int) -> float:
    return model / 10


@flow
def training():
    return evaluate(train(load()))


@flow
def loading():
    return load()
