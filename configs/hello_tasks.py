"""Tasks for ``configs/hello.yaml``: make a list of numbers, square three of them, add them up."""

from __future__ import annotations

from rayline import task


@task
def make_numbers(n: int = 3) -> list[int]:
    """The numbers 1..n."""
    return list(range(1, n + 1))


@task
def square(numbers: list[int], index: int) -> int:
    """The square of ``numbers[index]``."""
    return numbers[index] ** 2


@task(cache=True)
def total(xs: list[int]) -> int:
    """The sum of ``xs``."""
    return sum(xs)


@task
def square_one(x: int) -> int:
    """The square of ``x`` (mapped over a list by ``configs/hello_map.yaml``)."""
    return x * x
