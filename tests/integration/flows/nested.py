"""Flows for the subflow tests: ``nightly`` calls ``train_all`` twice, which maps ``fit``."""

from __future__ import annotations

from rayline import flow, task


@task
def fit(fold: int, scale: int) -> int:
    return fold * scale


@task
def evaluate(scores: list[int]) -> int:
    return sum(scores)


@task
def publish(a: int, b: int) -> list[int]:
    return [a, b]


@flow
def train_all(scale: int, folds: int = 3):
    return evaluate(fit.map(range(folds), scale=scale))


@flow
def nightly(scale: int = 2):
    return publish(train_all(scale), train_all(scale=10, folds=2))


@flow
def folds_from_a_parameter(n: int = 2):
    """The subflow maps over range() of the outer flow's parameter."""
    return train_all(1, folds=n)
