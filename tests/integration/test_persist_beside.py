"""Large outputs are persisted beside the work: the consumer takes the value from Ray's object
store as soon as its producer returns, and the producer counts as done (SUCCEEDED, with its
digest) once its artifact is committed; an output that cannot be stored fails its task."""

from __future__ import annotations

import numpy as np
import pytest

import rayline
from rayline import flow, task
from rayline.store.artifact_encoding import to_bytes
from rayline.store.artifacts import ArtifactStore
from rayline.store.states import RunStatus, TaskStatus

pytestmark = pytest.mark.usefixtures("ray_session")


@task(cpus=0.5)
def make(mb: int, seed: int):
    return np.random.default_rng(seed).random(mb * 1024 * 1024 // 8)


@task(cpus=0.5)
def inspect_input(a) -> dict:
    # A value that came through Ray's object store is a read-only view of it (zero-copy); one
    # read back from the artifact store would be a fresh, writable array.
    return {"writeable": bool(a.flags.writeable), "sum": float(a.sum())}


@flow
def beside_flow(mb: int = 4, seed: int = 0):
    return inspect_input(make(mb, seed))


@task(cpus=0.5, cache=True)
def cached_sum(a) -> float:
    return float(a.sum())


@flow
def cached_flow(mb: int = 2, seed: int = 0):
    return cached_sum(make(mb, seed))


def test_a_large_output_reaches_its_consumer_through_ray_and_is_committed(settings):
    run = rayline.run(beside_flow, settings=settings, mb=4, seed=7)
    assert run.status == RunStatus.SUCCEEDED
    expected = np.random.default_rng(7).random(4 * 1024 * 1024 // 8)
    got = run.result()
    assert got["writeable"] is False  # the consumer got Ray's object, not a re-read of the store
    assert got["sum"] == pytest.approx(float(expected.sum()))
    made = run.task("make")
    assert made.status == TaskStatus.SUCCEEDED and made.digest and made.fmt == "pickle"
    assert made.size > 4 * 1024 * 1024
    store = ArtifactStore.for_settings(settings, sweep=False)
    assert store.verify(made.digest)
    # Written from Ray's read-only copy (beside the work), not by the producer before it
    # returned: the producer's own, writable array would have pickled to to_bytes' bytes.
    assert store.get_bytes(made.digest) != to_bytes(expected)[0]
    back = run.output("make")
    np.testing.assert_array_equal(back, expected)
    assert back.flags.writeable  # stored from Ray's read-only copy, it loads writable again
    assert store.temp_files() == []


def test_a_large_output_that_cannot_be_stored_fails_its_task(settings):
    store = ArtifactStore.for_settings(settings, sweep=False)
    store.root.mkdir(parents=True, exist_ok=True)
    (store.root / "objects").write_text("not a directory")  # every write of an object fails
    run = rayline.run(beside_flow, settings=settings, mb=2, seed=1)
    assert run.status == RunStatus.FAILED
    made = run.task("make")
    assert made.status == TaskStatus.FAILED and not made.digest
    assert "cannot store the output of task 'make'" in (made.error_message or "")


def test_a_cached_consumer_of_a_large_output_keys_on_its_digest(settings):
    first = rayline.run(cached_flow, settings=settings, seed=1)
    again = rayline.run(cached_flow, settings=settings, seed=1)
    other = rayline.run(cached_flow, settings=settings, seed=2)
    assert first.task("cached_sum").status == TaskStatus.SUCCEEDED
    assert again.task("cached_sum").status == TaskStatus.CACHED
    assert other.task("cached_sum").status == TaskStatus.SUCCEEDED  # another input: no hit
    assert other.result() == pytest.approx(float(np.random.default_rng(2).random(2 * 1024 * 1024 // 8).sum()))
