"""Per-task environments on the shared local Ray: a task's ``runtime_env`` reaches its own
worker (never the warm pool); a task with its own pip package (from the package registry) runs
in a virtualenv Ray builds for it (slow: marked so); a secret resolved on a Ray worker never
reaches the run store's files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import rayline
from rayline import Secret
from rayline.config import Settings
from tests.integration.flows import task_envs

pytestmark = pytest.mark.usefixtures("ray_session")

VALUE = "ray-side-s3cr3t-91b4"


def test_a_task_sees_its_runtime_env_vars_and_never_runs_on_the_warm_pool(settings: Settings) -> None:
    pooled = settings.model_copy(update={"pool": "on"})  # every eligible task on warm actors
    run = rayline.run(task_envs.env_vars_flow, settings=pooled)
    assert run.status.value == "SUCCEEDED", run.error
    own, plain = run.result()
    assert own["mode"] == "from-runtime-env"
    assert plain is None  # the other task's worker has no such variable
    opts = {n["id"]: n["ray_options"] for n in run.plan["nodes"]}
    assert opts["read_mode"]["runtime_env"] == {"env_vars": {"RAYLINE_TEST_MODE": "from-runtime-env"}}
    assert "runtime_env" not in opts["plain_mode"]


@pytest.mark.slow  # Ray builds a virtualenv and pip-installs into it: 75-120 s on 2 busy cores
def test_a_task_with_its_own_pip_package(settings: Settings) -> None:
    run = rayline.run(task_envs.pip_flow, settings=settings)
    assert run.status.value == "SUCCEEDED", run.error
    out = run.result()
    assert out["version"] == "3.3.0" and out["text"] == "\x1b[31mhi\x1b[0m"
    assert "runtime_resources" in out["from"]  # the virtualenv Ray built for the task


def store_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.rglob("runs.db*") if p.is_file())


def test_a_secret_is_resolved_on_the_ray_worker_and_never_stored(settings: Settings, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "RAY_TOKEN").write_text(VALUE)
    (secrets / "RAY_TOKEN").chmod(0o600)
    the_flow = task_envs.secret_flow(str(secrets))
    digest = tmp_path / "digest"
    ok = rayline.run(the_flow, settings=settings, digest_path=str(digest), token=Secret("RAY_TOKEN"))
    assert ok.status.value == "SUCCEEDED", ok.error
    assert digest.read_text() == hashlib.sha256(VALUE.encode()).hexdigest()
    failed = rayline.run(the_flow, settings=settings, digest_path=str(digest), token=Secret("RAY_TOKEN"), fail=True)
    assert failed.status.value == "FAILED"
    assert "refused: Bearer ***" in failed.error
    (task,) = failed.tasks
    assert VALUE not in (task.traceback or "") + (task.error_message or "")
    assert failed.record.params["token"] == {"$secret": "RAY_TOKEN"}
    assert VALUE.encode() not in store_bytes(settings.resolved_home)
