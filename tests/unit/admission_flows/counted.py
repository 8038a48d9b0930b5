"""A scheduled flow that counts how often its file is imported (``module``) and its body traced
(``trace``), in the file named by ``RAYLINE_TEST_COUNTER``; its task fails while
``RAYLINE_TEST_FAIL`` is set (so that a run can be resumed)."""

from __future__ import annotations

import os

from rayline import flow, task
from rayline.triggers import Cron


def _mark(what: str) -> None:
    with open(os.environ["RAYLINE_TEST_COUNTER"], "a") as f:
        f.write(what + "\n")


_mark("module")


@task
def double(n: int) -> int:
    if os.environ.get("RAYLINE_TEST_FAIL"):
        raise RuntimeError("failing on purpose (RAYLINE_TEST_FAIL)")
    return 2 * n


@flow(schedule=Cron("0 3 * * *"))
def counted(n: int = 1):
    _mark("trace")
    return double(n)
