"""Flows for the run-time fan-out tests: maps over an upstream task's output, a flow parameter,
an empty list, and maps of maps. Items listed in ``folder/fail`` fail; every execution of an
item is a line in ``folder/ran-square`` (and ``folder/ran-square-<x>``)."""

from __future__ import annotations

import os

from rayline import flow, task


def _ledger(folder: str, name: str) -> None:
    with open(os.path.join(folder, f"ran-{name}"), "a") as f:
        f.write(f"{os.getpid()}\n")


@task
def listing(n: int, folder: str) -> list[int]:
    _ledger(folder, "listing")
    return list(range(n))


@task
def square(x: int, folder: str) -> int:
    _ledger(folder, "square")
    _ledger(folder, f"square-{x}")
    failing = os.path.join(folder, "fail")
    if os.path.exists(failing) and str(x) in open(failing).read().split():
        raise ValueError(f"item {x} is listed in {failing}")
    return x * x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@task
def checked_total(xs: list[int], folder: str) -> int:
    """Fails while ``folder/fail-total`` exists."""
    if os.path.exists(os.path.join(folder, "fail-total")):
        raise ValueError("fail-total is there")
    return sum(xs)


@flow
def over_output_then_check(folder: str, n: int = 5):
    return checked_total(square.map(listing(n, folder), folder=folder), folder)


@task
def rows(n: int) -> list[list[int]]:
    return [list(range(i)) for i in range(n)]


@flow
def over_output(folder: str, n: int = 100):
    """A map over the list an upstream task returns."""
    return total(square.map(listing(n, folder), folder=folder))


@task
def count(xs: list) -> int:
    return len(xs)


@flow
def maps_of_maps(n: int = 4):
    """A map over a list of lists, over a map's output, and over that map's output."""
    sums = total.map(rows(n))
    return total(count.map(rows.map(sums)))
