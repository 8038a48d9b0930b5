"""A small flow with a fan-out, a fan-in and a retry: what `make demo` runs.

    rayline run flows/hello.py -p scale=3
"""

from __future__ import annotations

import os
import tempfile

from rayline import flow, task


@task
def square(x: int, scale: int) -> int:
    return scale * x * x


@task(retries=2, backoff=0.2, retry_on=(ConnectionError,))
def flaky_sum(values: list[int], run_tag: str) -> int:
    """Fails once (as a flaky service would), then succeeds on the retry."""
    marker = os.path.join(tempfile.gettempdir(), f"rayline-hello-{run_tag}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError("the first call to the pretend service always drops; rayline retries it")
    os.remove(marker)
    return sum(values)


@task
def report(total: int, scale: int) -> str:
    return f"{scale} x (1² + 2² + 3² + 4² + 5²) = {total}"


@flow
def hello(scale: int = 1, run_tag: str = "demo"):
    squares = square.map(range(1, 6), scale=scale)  # static fan-out: five parallel tasks
    total = flaky_sum(squares, run_tag)  # fan-in, retried once after a ConnectionError
    return report(total, scale)
