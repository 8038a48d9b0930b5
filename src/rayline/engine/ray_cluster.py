"""Starting or joining Ray for rayline: one place, one set of settings.

Every rayline command that needs Ray (a run's executor, ``rayline serve``, ``serve stop``, the
demo) comes through ``connect``. Importing this module does not import Ray.

**No address: rayline starts its own local Ray** for this process, with

- token authentication on (``RAY_AUTH_MODE=token``). The token lives in
  ``$RAYLINE_HOME/ray/auth_token``, 0600 in a 0700 folder (Ray itself would write
  ``~/.ray/auth_token`` readable by every local user), unless ``RAY_AUTH_TOKEN`` or
  ``RAY_AUTH_TOKEN_PATH`` names one already;
- every listener Ray lets us place on 127.0.0.1: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is Ray's
  own single-machine mode (the default on macOS and Windows); it puts the node's address on
  loopback, and with it the GCS, raylet, object manager, workers, dashboard agent (gRPC, HTTP,
  metrics exporter) and runtime-env agent. ``_node_ip_address="127.0.0.1"`` alone does not do
  it: ``ray.init`` rewrites a loopback address to the machine's address first;
- nothing it does not need: no dashboard, no usage statistics.

It is recorded in ``$RAYLINE_HOME/ray/clusters.json`` (address, how its token is found, the pid
that owns it), so that a later command given that address (``rayline serve stop``, a run with
``RAY_ADDRESS``) joins it with the same settings.

**An address** (argument or ``RAY_ADDRESS``) is joined with the recorded settings when rayline
started that Ray, else with the user's own Ray settings. A loopback address is joined in the same
single-machine mode (Ray would otherwise rewrite 127.0.0.1 to the machine's address, where a
loopback-only cluster does not listen). A cluster that refuses us for want of a token raises
``UsageError`` (exit 2) saying how to fix it.

Ray reads these settings only from the environment (its C++ core and every process it spawns
read them there), so ``connect`` sets them in this process's environment before Ray starts.

Example::

    started = connect(None, ray_dir=Settings().ray_dir, num_cpus=2)   # rayline's own local Ray
    connect("127.0.0.1:6379", ray_dir=Settings().ray_dir)             # a cluster (or ours again)
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Any

__all__ = ["LOOPBACK_ENV", "TOKEN_FILE", "auth_failure_hint", "connect", "local_env", "recorded"]

log = logging.getLogger(__name__)

TOKEN_FILE = "auth_token"
RECORD_FILE = "clusters.json"
#: Ray's single-machine mode: the node address (and every listener placed on it) is 127.0.0.1.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
_USER_TOKEN_VARS = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def connect(address: str | None, *, ray_dir: Path, num_cpus: int | None = None,
            object_store_memory: int | None = None, log_to_driver: bool = True,
            runtime_env: dict[str, Any] | None = None) -> bool:  # fmt: skip
    """Join Ray at ``address``, or start rayline's own local Ray when it is None (or "local");
    True if this call started one. Does nothing (False) when Ray is connected already.

    Args:
        address: a cluster (``host:port``, ``auto``, ``ray://…``), or None for a local Ray.
        ray_dir: rayline's Ray folder (``Settings().ray_dir``): the token and the record.
        num_cpus: CPUs of a local Ray (ignored when joining).
        object_store_memory: object store bytes of a local Ray (ignored when joining).

    Raises:
        UsageError: the cluster wants a token this process does not have (exit 2).
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": log_to_driver}
    if runtime_env is not None:
        kwargs["runtime_env"] = runtime_env
    if not address or address == "local":
        _apply_env(local_env(ray_dir))
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        if object_store_memory is not None:
            kwargs["object_store_memory"] = object_store_memory
        ray.init(address="local", **kwargs)  # never attach to a stray cluster by accident
        _record(ray_dir, ray.get_runtime_context().gcs_address)
        return True
    _apply_env(_join_env(address, ray_dir))
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError) as exc:
        hint = auth_failure_hint(exc, address)
        if hint is None:
            raise
        from rayline.errors import UsageError

        raise UsageError(hint) from None
    return False


def local_env(ray_dir: Path) -> dict[str, str]:
    """The environment of rayline's own local Ray: token authentication with a private token
    file (created here, 0600 in a 0700 folder) unless the user names a token, loopback only."""
    env = {"RAY_AUTH_MODE": "token", **LOOPBACK_ENV}
    if not any(os.environ.get(k) for k in _USER_TOKEN_VARS):
        env["RAY_AUTH_TOKEN_PATH"] = str(_private_token(ray_dir))
    return env


def recorded(ray_dir: Path, address: str) -> dict[str, Any] | None:
    """How rayline started the Ray at ``address`` (its record), or None if it did not."""
    return _read_records(ray_dir).get(_key(address))


def auth_failure_hint(exc: BaseException, address: str) -> str | None:
    """A message saying how to fix a token-authentication refusal, or None if ``exc`` (or what
    caused it) is not one."""
    seen: BaseException | None = exc
    while seen is not None:
        text = f"{type(seen).__name__}: {seen}"
        if "AuthenticationError" in text or "InvalidAuthToken" in text:
            break
        seen = seen.__cause__ or seen.__context__
    else:
        return None
    mode = os.environ.get("RAY_AUTH_MODE", "")
    first = ("set RAY_AUTH_MODE=token and make the cluster's token available"
             if mode.lower() != "token" else "make the cluster's token available")  # fmt: skip
    return (f"the Ray cluster at {address} requires token authentication and refused this "
            f"connection (RAY_AUTH_MODE is {mode or 'unset'}): {first}, as the file "
            "~/.ray/auth_token, a file named by RAY_AUTH_TOKEN_PATH, or RAY_AUTH_TOKEN itself; "
            "`ray get-auth-token` on the head node prints it. E.g. "
            f"`RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/path/to/token RAY_ADDRESS={address} rayline …`")  # fmt: skip


# ----------------------------------------------------------------------------- the settings


def _join_env(address: str, ray_dir: Path) -> dict[str, str]:
    record = recorded(ray_dir, address)
    env: dict[str, str] = {}
    if record is not None:
        env["RAY_AUTH_MODE"] = record.get("auth_mode", "token")
        token_path = record.get("token_path")
        if token_path and not any(os.environ.get(k) for k in _USER_TOKEN_VARS):
            env["RAY_AUTH_TOKEN_PATH"] = token_path
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    if (record is not None and record.get("loopback")) or host in _LOOPBACK_HOSTS:
        env.update(LOOPBACK_ENV)
    return env


def _apply_env(env: dict[str, str]) -> None:
    """Put ``env`` in this process's environment, where Ray (and what it spawns) reads it. A Ray
    imported before (a flow file that imports it, a notebook) read two of them at import: tell it."""
    os.environ.update(env)
    if "ray._private.ray_constants" in sys.modules and LOOPBACK_ENV.keys() <= env.keys():
        sys.modules["ray._private.ray_constants"].ENABLE_RAY_CLUSTER = False
    if "ray._raylet" in sys.modules and "RAY_AUTH_MODE" in env:
        raylet = sys.modules["ray._raylet"]
        try:  # what Ray's own _enable_token_auth does: refresh the cached config and token
            raylet.Config.initialize("")
            raylet.AuthenticationTokenLoader.instance().reset_cache()
        except AttributeError:  # another Ray: it reads the environment when it starts
            pass


def _private_dir(ray_dir: Path) -> Path:
    ray_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(ray_dir.stat().st_mode) & 0o077:
        os.chmod(ray_dir, 0o700)
    return ray_dir


def _private_token(ray_dir: Path) -> Path:
    """rayline's Ray token, created once (256 random bits, as Ray makes them), 0600."""
    path = _private_dir(ray_dir) / TOKEN_FILE
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        if stat.S_IMODE(path.lstat().st_mode) & 0o077:
            os.chmod(path, 0o600)
        return path
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def _key(address: str) -> str:
    return address.split("://", 1)[-1].strip()


def _read_records(ray_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((ray_dir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def _record(ray_dir: Path, address: str) -> None:
    """Remember how this process started the Ray at ``address``; forget Rays whose owner died."""
    records = {k: v for k, v in _read_records(ray_dir).items() if _alive(v.get("pid"))}
    records[_key(address)] = {
        "pid": os.getpid(),
        "auth_mode": os.environ.get("RAY_AUTH_MODE", "token"),
        "token_path": os.environ.get("RAY_AUTH_TOKEN_PATH") if not os.environ.get("RAY_AUTH_TOKEN") else None,
        "loopback": os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0",
    }
    path = _private_dir(ray_dir) / RECORD_FILE
    tmp = path.with_name(f".{RECORD_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(records, f, indent=1)
    os.replace(tmp, path)
