"""Tasks with their own runtime environment (``@task(runtime_env=...)``), for
tests/integration/test_task_environments.py."""

from __future__ import annotations

import hashlib
import os

from rayline import Secret, flow, task


@task(runtime_env={"env_vars": {"RAYLINE_TEST_MODE": "from-runtime-env"}})
def read_mode() -> dict:
    return {"mode": os.environ.get("RAYLINE_TEST_MODE"), "pid": os.getpid()}


@task
def plain_mode() -> str | None:
    return os.environ.get("RAYLINE_TEST_MODE")


@flow
def env_vars_flow():
    return [read_mode(), plain_mode()]


@task(runtime_env={"pip": ["termcolor==3.3.0"]})
def colour(text: str) -> dict:
    from importlib.metadata import version

    import termcolor

    return {"version": version("termcolor"), "text": termcolor.colored(text, "red", force_color=True),
            "from": termcolor.__file__}


@flow
def pip_flow():
    return colour("hi")


def secret_task_for(secrets_dir: str):
    """A task whose worker finds secrets in ``secrets_dir`` (its runtime env names the folder,
    not the secret)."""

    @task(name="use_secret", runtime_env={"env_vars": {"RAYLINE_SECRETS_DIR": secrets_dir}})
    def use_secret(token: str, digest_path: str, fail: bool = False) -> str:
        with open(digest_path, "w") as f:
            f.write(hashlib.sha256(token.encode()).hexdigest())
        if fail:
            raise PermissionError(f"refused: Bearer {token}")
        return "ok"

    return use_secret


def secret_flow(secrets_dir: str):
    use_secret = secret_task_for(secrets_dir)

    @flow(name="secret_flow")
    def the_flow(digest_path: str, fail: bool = False, token: str = "unset"):
        return use_secret(token, digest_path, fail)

    return the_flow


__all__ = ["Secret", "env_vars_flow", "pip_flow", "secret_flow"]
