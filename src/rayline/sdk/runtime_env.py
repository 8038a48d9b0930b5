"""Per-task environments: ``@task(runtime_env={...})`` (and ``runtime_env:`` on a YAML step)
is Ray's runtime environment for the task's own worker process: ``pip`` packages,
``env_vars``, a ``working_dir``, a container ``image_uri`` where the cluster supports one.

The compiler puts it into the node's Ray options; a task with one never runs on the warm actor
pool (its worker must be started in that environment). ``runtime_env_problems`` finds the
obvious mistakes before anything runs (``rayline.engine.validate.check_runtime_envs``, and the
YAML loader at the step's ``file:line``); Ray checks the rest when it builds the environment.

Example::

    @task(runtime_env={"pip": ["termcolor==3.3.0"], "env_vars": {"MODE": "fast"}})
    def colour(text: str) -> str: ...
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Ray's RuntimeEnv.known_fields (Ray 2.x), less its private ones.
KNOWN_KEYS = ("working_dir", "py_modules", "py_executable", "excludes", "pip", "uv", "conda", "env_vars",
              "container", "image_uri", "java_jars", "config", "worker_process_setup_hook")  # fmt: skip

__all__ = ["KNOWN_KEYS", "runtime_env_problems"]


def runtime_env_problems(env: Any, base: str | os.PathLike[str] | None = None) -> list[tuple[str, str | None]]:
    """Every obvious mistake in the runtime environment ``env``, as (message, hint) pairs.

    ``base``: the folder a relative ``working_dir`` is read from (default: the current one).
    """
    if not isinstance(env, Mapping):
        return [(f"runtime_env must be a mapping, got {type(env).__name__} {env!r}",
                 'e.g. runtime_env={"pip": ["requests"], "env_vars": {"MODE": "fast"}}')]  # fmt: skip
    out: list[tuple[str, str | None]] = []
    for key in env:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(str(key), KNOWN_KEYS, n=1)
            out.append((f"runtime_env has an unknown key {key!r}",
                        (f"did you mean {close[0]!r}? " if close else "") + "known: " + ", ".join(KNOWN_KEYS)))  # fmt: skip
    if "env_vars" in env:
        out += _env_vars_problems(env["env_vars"])
    if "pip" in env:
        pip = env["pip"]
        ok = isinstance(pip, str) or (isinstance(pip, list) and all(isinstance(p, str) for p in pip))
        if isinstance(pip, Mapping):
            ok = isinstance(pip.get("packages"), list | str)
        if not ok:
            out.append((f"runtime_env['pip'] must be a list of requirements, a requirements file or "
                        f"{{'packages': [...]}}, got {pip!r}", 'e.g. "pip": ["termcolor==3.3.0"]'))  # fmt: skip
    if "working_dir" in env:
        wd = env["working_dir"]
        if not isinstance(wd, str | os.PathLike):
            out.append((f"runtime_env['working_dir'] must be a path or a URL, got {wd!r}", None))
        elif "://" not in str(wd):
            path = Path(base or ".") / wd
            if not path.exists():
                out.append((f"runtime_env['working_dir'] {str(wd)!r} does not exist ({path.resolve()})",
                            "give a folder that exists where the flow is started, or a remote URI (s3://…/x.zip)"))  # fmt: skip
    if "container" in env and "image_uri" in env:
        out.append(("runtime_env gives both 'container' and 'image_uri'; give one (image_uri)", None))
    return out


def _env_vars_problems(env_vars: Any) -> list[tuple[str, str | None]]:
    if not isinstance(env_vars, Mapping):
        return [(f"runtime_env['env_vars'] must be a mapping of names to strings, got {env_vars!r}", None)]
    bad = [f"{k}={v!r}" for k, v in env_vars.items() if not isinstance(k, str) or not isinstance(v, str)]
    if not bad:
        return []
    return [(f"runtime_env['env_vars'] values must be strings: {', '.join(bad)}",
             'quote them, e.g. {"THREADS": "4"}; for a secret use rayline.Secret, not env_vars')]  # fmt: skip
