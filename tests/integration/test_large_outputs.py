"""F13: outputs over the inline limit travel through the artifact store, not Ray's object store,
so an output larger than the object store still reaches its consumer."""

from __future__ import annotations

import pytest

import rayline
from rayline import flow, task
from rayline.store.states import RunStatus

pytestmark = pytest.mark.usefixtures("ray_session")


@task(cpus=0.5)
def big(mb: int):
    import numpy as np

    return np.ones(mb * 1024 * 1024 // 8)


@task(cpus=0.5)
def total(x) -> float:
    return float(x.sum())


@flow
def big_flow(mb: int = 16):
    return total(big(mb))


def test_output_over_the_inline_limit_goes_through_the_artifact_store(settings):
    small_limit = settings.model_copy(update={"inline_limit": 1024 * 1024})
    run = rayline.run(big_flow, settings=small_limit, mb=16)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result() == 16 * 1024 * 1024 // 8
    assert run.task("big").size > 16 * 1024 * 1024


@pytest.mark.slow
def test_output_larger_than_the_object_store_succeeds(settings):
    # The session's object store is 150 MB; the array is 200 MB.
    run = rayline.run(big_flow, settings=settings, mb=200)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result() == 200 * 1024 * 1024 // 8
