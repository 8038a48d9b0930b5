"""Flows that take secrets: ``use_token`` writes the sha256 of the token it receives to
``digest_path`` (and, with ``fail``, raises an error and warns with the token in their text);
``fixed_secret`` passes ``Secret("FIXED_TOKEN")`` as a task argument in the flow body."""

from __future__ import annotations

import hashlib

from rayline import Secret, context, flow, task


@task
def use_token(token: str, digest_path: str, fail: bool = False, shout: bool = False) -> str:
    with open(digest_path, "w") as f:
        f.write(hashlib.sha256(token.encode()).hexdigest())
    context.warn(f"token in use: {token}")
    if shout:
        print(f"calling the server with token {token}")  # lands in the task's log: masked there
    if fail:
        raise PermissionError(f"the server refused token {token!r}\nrequest: Authorization: Bearer {token}")
    return "done"


@flow
def with_param(token: str, digest_path: str, fail: bool = False, shout: bool = False):
    return use_token(token, digest_path, fail, shout)


@flow
def fixed_secret(digest_path: str):
    return use_token(Secret("FIXED_TOKEN"), digest_path)
