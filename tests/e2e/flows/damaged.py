"""A diamond for the damaged-output tests (tests/e2e/test_damaged_outputs.py): ``load`` feeds
``double`` (then ``total``) and ``count``. Each task appends its pid to ``folder/ran-<name>``, so
the test counts executions. Bodies are self-contained (a driver loads this file by path)."""

from __future__ import annotations

import os

from rayline import flow, task


@task
def load(folder: str) -> list:
    with open(os.path.join(folder, "ran-load"), "a") as f:
        f.write(f"{os.getpid()}\n")
    return list(range(1000))


@task
def double(xs: list, folder: str) -> list:
    with open(os.path.join(folder, "ran-double"), "a") as f:
        f.write(f"{os.getpid()}\n")
    return [2 * x for x in xs]


@task
def total(xs: list, folder: str) -> int:
    with open(os.path.join(folder, "ran-total"), "a") as f:
        f.write(f"{os.getpid()}\n")
    return sum(xs)


@task
def count(xs: list, folder: str) -> int:
    with open(os.path.join(folder, "ran-count"), "a") as f:
        f.write(f"{os.getpid()}\n")
    return len(xs)


@flow
def diamond(folder: str):
    xs = load(folder)
    return {"total": total(double(xs, folder), folder), "count": count(xs, folder)}
