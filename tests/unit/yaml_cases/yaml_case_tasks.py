"""Tasks used by the YAML flow fixtures in this folder."""

from __future__ import annotations

from rayline import task


@task
def make_numbers(n: int = 3) -> list[int]:
    return list(range(1, n + 1))


@task(retries=1, cpus=2)
def square(x: int) -> int:
    return x * x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


def greet(greeting: str, name: str = "world") -> str:
    """A plain function (no @task): YAML steps may use it too."""
    return f"{greeting}, {name}"


def nothing() -> None:
    return None


NOT_CALLABLE = 42
