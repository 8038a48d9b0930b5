"""Chaos tests (``make test-slow``): random ``kill -9`` of drivers, Ray workers and serving
replicas, round after round. Every random choice comes from one seeded ``random.Random``:

- ``RAYLINE_CHAOS_SEED``: the seed (default: a fresh one, printed at the start of each test and
  in every failure's report, so that ``RAYLINE_CHAOS_SEED=<seed>`` replays the same choices);
- ``RAYLINE_CHAOS_ROUNDS``: rounds per test (default 3).

What the processes do is still timed by the machine, so a replay makes the same choices (what to
kill, at which commit, which task) rather than the same interleaving to the microsecond.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

ROUNDS = int(os.environ.get("RAYLINE_CHAOS_ROUNDS", "3"))


@dataclass
class Chaos:
    """The seeded choices of one test, and where it is (for failure messages)."""

    seed: int
    rng: random.Random
    where: list[str] = field(default_factory=list)

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Name the round (or step) in any assertion that fails inside it."""
        self.where.append(what)
        try:
            yield
        except AssertionError as e:
            if str(e).startswith("[chaos seed"):  # an inner step named it already
                raise
            raise AssertionError(f"[chaos seed {self.seed}, {' / '.join(self.where)}] {e}") from e
        except Exception as e:  # any other failure keeps its type, with where it happened noted
            if not any(n.startswith("[chaos seed") for n in getattr(e, "__notes__", [])):
                e.add_note(f"[chaos seed {self.seed}, {' / '.join(self.where)}]")
            raise
        finally:
            self.where.pop()


@pytest.fixture
def chaos(request: pytest.FixtureRequest) -> Chaos:
    seed = int(os.environ.get("RAYLINE_CHAOS_SEED") or secrets.randbelow(1_000_000))
    request.node.user_properties.append(("chaos_seed", seed))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    line = f"chaos seed {seed} ({ROUNDS} rounds): RAYLINE_CHAOS_SEED={seed} replays its choices"
    if reporter is not None:
        reporter.write_line(f"\n{request.node.name}: {line}")
    print(line)
    return Chaos(seed, random.Random(seed))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    seed = dict(item.user_properties).get("chaos_seed")
    if seed is not None and report.failed:
        report.sections.append(("chaos", f"seed {seed}: rerun with RAYLINE_CHAOS_SEED={seed}"))

