"""Secrets by reference: ``Secret("NAME")`` stands for a value that rayline never stores.

A ``Secret`` may be a flow parameter's value (``rayline run -p token=secret:API_TOKEN``, or
``rayline.run(flow, token=Secret("API_TOKEN"))``) or a task argument in a flow body. The run
store keeps only the reference (``{"$secret": "API_TOKEN"}`` in the run's params, the plan
records no argument values); the value is looked up on the worker, just before the task's
function is called (``resolve_secrets``, from ``rayline.engine.worker``):

1. the environment variable ``NAME`` of the worker process, else
2. the file ``NAME`` in the folder ``RAYLINE_SECRETS_DIR`` (one file per secret, mode 0600 or
   stricter; a file that others may read is refused), its trailing newline dropped.

The task receives the value as a ``str``. Errors, warnings and skip reasons that the worker
sends back have every resolved value replaced by ``***`` (``mask``), so rayline never records
or shows it. A value that the task returns, or prints, is the task's own business.

Example::

    @task
    def fetch(url: str, token: str) -> bytes: ...

    @flow
    def nightly(token: str = Secret("API_TOKEN")):
        return fetch("https://example.com/data", token)
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayline.errors import DefinitionError, SecretError
from rayline.sdk.nested import map_nested, nested_values

MASK = "***"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

__all__ = ["MASK", "Secret", "decode_secret_params", "has_secrets", "mask", "mask_meta", "resolve_secrets"]


@dataclass(frozen=True, slots=True)
class Secret:
    """A reference to the secret ``name`` (an environment variable's name, or a file's name in
    ``RAYLINE_SECRETS_DIR``); its value is resolved where the task runs."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise DefinitionError(
                f"Secret({self.name!r}): a secret's name is letters, digits and '_' (not first), "
                "as an environment variable's, e.g. Secret('API_TOKEN')"
            )

    def __repr__(self) -> str:
        return f"Secret({self.name!r})"

    def to_json(self) -> dict[str, str]:
        """How the run store records it."""
        return {"$secret": self.name}

    def resolve(self, node_id: str = "?", secrets_dir: str | os.PathLike[str] | None = None) -> str:
        """The secret's value here (see the module's docstring for where it is looked up).

        Raises:
            SecretError: it is nowhere, or its file may be read by others.
        """
        value = os.environ.get(self.name)
        if value is not None:
            return value
        folder = secrets_dir if secrets_dir is not None else _secrets_dir()
        if folder:
            path = Path(folder) / self.name
            if path.is_file():
                mode = stat.S_IMODE(path.stat().st_mode)
                if mode & 0o077:
                    raise SecretError(
                        f"task '{node_id}': the file of secret '{self.name}' ({path}) has mode "
                        f"{mode:04o}, so others may read it; rayline uses only files of mode 0600 "
                        f"(run: chmod 600 {path})"
                    )
                return path.read_text().rstrip("\r\n")
        where = f"a file {Path(folder) / self.name}" if folder else "RAYLINE_SECRETS_DIR (not set)"
        raise SecretError(
            f"task '{node_id}': secret '{self.name}' is not set where the task runs: no environment "
            f"variable {self.name} and no {where}. Set {self.name} in the environment of the Ray "
            f"workers, or write it to a file named {self.name} (mode 0600) in the folder that "
            "RAYLINE_SECRETS_DIR names"
        )


def _secrets_dir() -> str | None:
    from rayline.config import Settings

    folder = Settings().secrets_dir
    return str(folder) if folder else None


def has_secrets(value: Any) -> bool:
    """Whether a ``Secret`` is nested in ``value`` (lists, tuples, dict values)."""
    return any(type(v) is Secret for v in nested_values(value))


def resolve_secrets(template: Any, node_id: str) -> tuple[Any, list[str]]:
    """``template`` with every ``Secret`` replaced by its value, and the values (to ``mask``).

    Raises:
        SecretError: a secret cannot be resolved.
    """
    values: list[str] = []

    def fill(v: Any) -> Any:
        if type(v) is not Secret:
            return v
        value = v.resolve(node_id)
        values.append(value)
        return value

    return map_nested(template, fill), values


def mask(text: Any, values: list[str]) -> Any:
    """``text`` with each of ``values`` replaced by ``***`` (longest first); non-text as is."""
    if not isinstance(text, str) or not text:
        return text
    for v in sorted({v for v in values if v}, key=len, reverse=True):
        text = text.replace(v, MASK)
    return text


def mask_meta(meta: dict[str, Any], values: list[str]) -> dict[str, Any]:
    """A worker's ``meta`` with the secret ``values`` masked in every error, traceback,
    warning and skip reason it reports."""
    if not values:
        return meta
    for a in meta.get("attempts") or ():
        for key in ("error_message", "traceback", "error_type"):
            if key in a:
                a[key] = mask(a[key], values)
    if "skip_reason" in meta:
        meta["skip_reason"] = mask(meta["skip_reason"], values)
    if meta.get("warnings"):
        meta["warnings"] = [mask(w, values) for w in meta["warnings"]]
    return meta


def decode_secret_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Params as recorded (``{"$secret": NAME}``) back to ``Secret`` objects, for a resume."""
    out = dict(params)
    for k, v in params.items():
        if isinstance(v, dict) and set(v) == {"$secret"} and isinstance(v["$secret"], str):
            out[k] = Secret(v["$secret"])
    return out
