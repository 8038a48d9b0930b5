"""A flow for the web UI tests: `check` fails with an error of several lines until the file
`marker` exists; `gated` (when `gate` names a folder) writes `gated.started` there and waits for
the file `go`, so a test can watch the run while it is going."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rayline import flow, task

PROBLEMS = (
    "schema contract violated (2 problems):",
    "  file part-3.parquet: column 'age': expected int64, found string",
    "  file part-7.parquet: column 'region' is missing",
)


@task
def load() -> int:
    return 1


@task(retries=0)
def check(x: int, marker: str) -> int:
    if not (marker and os.path.exists(marker)):
        raise ValueError("\n".join(PROBLEMS))
    return x + 1


@task
def gated(x: int, gate: str) -> int:
    if gate:
        Path(gate, "gated.started").write_text(str(os.getpid()))
        deadline = time.monotonic() + 90
        while not Path(gate, "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return x + 1


@flow
def ui_demo(marker: str = "", gate: str = ""):
    return gated(check(load(), marker), gate)
