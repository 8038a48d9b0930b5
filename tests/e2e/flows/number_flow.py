"""A small succeeding flow with typed parameters (int, float, bool, str), whose tasks print
(the CLI's --json output must stay one JSON object all the same)."""

from __future__ import annotations

from rayline import flow, task


@task
def square(x: int, scale: float) -> float:
    print(f"squaring {x}")
    return scale * x * x


@task
def total(values: list[float], label: str, loud: bool) -> str:
    text = f"{label}: {sum(values)}"
    return text.upper() if loud else text


@flow
def numbers(n: int = 3, scale: float = 1.0, label: str = "sum", loud: bool = False):
    squares = square.map(range(1, 4), scale=scale)
    return total(squares, label, loud)
