"""The fan-out the chaos tests kill (tests/chaos/test_fanout_kills.py): ``source`` lists ``n``
items (0 to n-1), ``work`` maps over them, ``combine`` folds the results. Every output is a pure function of
``n`` and ``seed``, so a run killed any number of times and resumed must end with exactly the
outputs of a clean run.

How a task talks to the test, through files in ``folder``:

- ``ledger``: a task appends its key (``source``, ``work-<i>`` for node
  ``work[i]``, ``combine``) when its body has run
  to completion, just before it returns (and its output is committed);
- ``hold-<key>``: while it exists, that task writes its pid to ``held-<key>`` and waits (so the
  test can kill the process running it, or the driver, mid-body), at most 120 s.

Bodies are self-contained (a driver loads this file by path; Ray workers cannot import it).
"""

from __future__ import annotations

from rayline import flow, task


@task
def source(n: int, folder: str) -> list[int]:
    import os
    import time

    hold = os.path.join(folder, "hold-source")
    if os.path.exists(hold):
        with open(os.path.join(folder, "held-source"), "w") as f:
            f.write(str(os.getpid()))
        deadline = time.monotonic() + 120
        while os.path.exists(hold) and time.monotonic() < deadline:
            time.sleep(0.02)
    items = list(range(n))
    with open(os.path.join(folder, "ledger"), "a") as f:
        f.write("source\n")
    return items


@task
def work(item: int, seed: int, folder: str) -> dict:
    import hashlib
    import os
    import time

    key = f"work-{item}"
    hold = os.path.join(folder, f"hold-{key}")
    if os.path.exists(hold):
        with open(os.path.join(folder, f"held-{key}"), "w") as f:
            f.write(str(os.getpid()))
        deadline = time.monotonic() + 120
        while os.path.exists(hold) and time.monotonic() < deadline:
            time.sleep(0.02)
    blob = hashlib.sha256(f"{seed}:{item}".encode()).digest() * 256  # 8 KiB, pure
    with open(os.path.join(folder, "ledger"), "a") as f:
        f.write(f"{key}\n")
    return {"item": item, "blob": blob, "sum": sum(blob)}


@task
def combine(results: list[dict], folder: str) -> dict:
    import hashlib
    import os
    import time

    hold = os.path.join(folder, "hold-combine")
    if os.path.exists(hold):
        with open(os.path.join(folder, "held-combine"), "w") as f:
            f.write(str(os.getpid()))
        deadline = time.monotonic() + 120
        while os.path.exists(hold) and time.monotonic() < deadline:
            time.sleep(0.02)
    h = hashlib.sha256()
    for r in results:
        h.update(r["blob"])
    with open(os.path.join(folder, "ledger"), "a") as f:
        f.write("combine\n")
    return {"items": [r["item"] for r in results], "total": sum(r["sum"] for r in results),
            "sha256": h.hexdigest()}  # fmt: skip


@flow
def fanout(folder: str, n: int = 24, seed: int = 0):
    return combine(work.map(source(n, folder), seed=seed, folder=folder), folder)
