"""The settings of rayline's own Ray (``engine/ray_cluster.py``), without starting Ray: its
private token, the record a later command joins with, the hint for a token refusal. The Ray
processes themselves are checked end to end in ``tests/e2e/test_own_ray.py``."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from rayline.engine import ray_cluster
from rayline.engine.ray_cluster import auth_failure_hint, local_env, recorded

USER_TOKEN_VARS = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")


@pytest.fixture(autouse=True)
def _no_user_token(monkeypatch):
    for name in USER_TOKEN_VARS:
        monkeypatch.delenv(name, raising=False)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_importing_it_does_not_import_ray():
    code = "import rayline.engine.ray_cluster, sys; assert 'ray' not in sys.modules"
    assert os.system(f"{sys.executable} -c \"{code}\"") == 0


def test_local_ray_gets_token_auth_a_private_token_and_loopback(tmp_path):
    ray_dir = tmp_path / "home" / "ray"
    env = local_env(ray_dir)
    token = Path(env["RAY_AUTH_TOKEN_PATH"])
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert token == ray_dir / "auth_token"
    assert (_mode(token), _mode(ray_dir)) == (0o600, 0o700)
    value = token.read_text()
    assert len(value) == 64 and int(value, 16) >= 0
    assert local_env(ray_dir)["RAY_AUTH_TOKEN_PATH"] == str(token) and token.read_text() == value


def test_a_token_file_or_folder_opened_up_by_hand_is_made_private_again(tmp_path):
    ray_dir = tmp_path / "ray"
    token = Path(local_env(ray_dir)["RAY_AUTH_TOKEN_PATH"])
    os.chmod(token, 0o644)
    os.chmod(ray_dir, 0o755)
    local_env(ray_dir)
    assert (_mode(token), _mode(ray_dir)) == (0o600, 0o700)


def test_a_token_the_user_names_is_used_instead(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "mine"))
    env = local_env(tmp_path / "ray")
    assert "RAY_AUTH_TOKEN_PATH" not in env and env["RAY_AUTH_MODE"] == "token"
    assert not (tmp_path / "ray" / "auth_token").exists()


def test_a_later_command_joins_a_recorded_ray_with_its_settings(tmp_path, monkeypatch):
    ray_dir = tmp_path / "ray"
    for key, value in local_env(ray_dir).items():
        monkeypatch.setenv(key, value)
    ray_cluster._record(ray_dir, "127.0.0.1:41234")
    assert _mode(ray_dir / "clusters.json") == 0o600
    for key in (*USER_TOKEN_VARS, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):  # a fresh shell
        monkeypatch.delenv(key, raising=False)
    assert recorded(ray_dir, "127.0.0.1:41234")["pid"] == os.getpid()
    assert ray_cluster._join_env("127.0.0.1:41234", ray_dir) == {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(ray_dir / "auth_token"),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    # a cluster rayline did not start keeps the user's settings; loopback stays loopback
    assert ray_cluster._join_env("10.1.2.3:6379", ray_dir) == {}
    assert ray_cluster._join_env("127.0.0.1:6379", ray_dir) == {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def test_the_record_forgets_rays_whose_owner_died(tmp_path):
    import subprocess

    ray_dir = tmp_path / "ray"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    (ray_dir).mkdir(mode=0o700)
    (ray_dir / "clusters.json").write_text(f'{{"127.0.0.1:1": {{"pid": {dead.stdout.strip()}}}}}')
    ray_cluster._record(ray_dir, "127.0.0.1:2")
    assert recorded(ray_dir, "127.0.0.1:1") is None
    assert recorded(ray_dir, "127.0.0.1:2") is not None


class InvalidAuth(Exception):
    pass


def test_a_token_refusal_says_how_to_fix_it():
    try:
        try:
            raise InvalidAuth("RPC error: InvalidAuthToken: Authentication token is missing or incorrect")
        except InvalidAuth as inner:
            raise RuntimeError("Failed to connect to GCS") from inner
    except RuntimeError as middle:
        outer = ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379")
        outer.__cause__ = middle
    hint = auth_failure_hint(outer, "127.0.0.1:6379")
    assert hint is not None
    assert "127.0.0.1:6379 requires token authentication" in hint
    assert "RAY_AUTH_MODE=token" in hint and "RAY_AUTH_TOKEN_PATH" in hint and "RAY_AUTH_TOKEN" in hint
    assert auth_failure_hint(ConnectionError("Failed to connect to Ray cluster"), "x:1") is None
