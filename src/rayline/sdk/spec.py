"""``TaskSpec``: what a task *is* — function, signature, resources and policies, code hash."""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rayline.sdk.resources import CachePolicy, Gang, Resources, RetryPolicy


@dataclass(frozen=True, slots=True, eq=False)
class TaskSpec:
    """Everything the engine needs to know about a task, independent of any one call."""

    name: str
    fn: Callable[..., Any]
    resources: Resources = field(default_factory=Resources)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cache: CachePolicy = field(default_factory=CachePolicy)
    timeout: float | None = None
    persist: bool = False
    location: str = "<unknown>"
    runtime_env: dict[str, Any] | None = None  # Ray's runtime environment (rayline.sdk.runtime_env)
    #: what the task starts from inside (Train workers, Tune trials): ``gang(args) -> Gang | None``
    gang: Callable[[dict[str, Any]], Gang | None] | None = None
    registry: bool = False  # uses the model registry: gets a copy, the driver commits its changes
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def signature(self) -> inspect.Signature:
        sig = self._memo.get("signature")
        if sig is None:
            sig = self._memo["signature"] = inspect.signature(self.fn)
        return sig

    @property
    def code_hash(self) -> str:
        """sha256 of the function's source without comments and docstrings (computed once,
        lazily, so that importing a module of tasks stays cheap)."""
        h = self._memo.get("code_hash")
        if h is None:
            h = self._memo["code_hash"] = code_hash(self.fn)
        return h

    @property
    def type_hints(self) -> dict[str, Any]:
        hints = self._memo.get("hints")
        if hints is None:
            try:
                import typing

                hints = typing.get_type_hints(self.fn)
            except Exception:  # unresolvable forward references: no type checks for this task
                hints = {}
            self._memo["hints"] = hints
        return hints

    @property
    def qualified_name(self) -> str:
        return f"{getattr(self.fn, '__module__', '?')}:{getattr(self.fn, '__qualname__', self.name)}"


def code_hash(fn: Callable[..., Any]) -> str:
    """Hash a function's code, ignoring comments, docstrings and formatting."""
    try:
        src = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(src)
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module)
                and body
                and isinstance(body[0], ast.Expr)
                and isinstance(getattr(body[0], "value", None), ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                node.decorator_list = []
        text = ast.dump(tree, annotate_fields=False)
    except (OSError, TypeError, SyntaxError):
        code = getattr(fn, "__code__", None)
        text = repr(code.co_code if code else fn)
    return hashlib.sha256(text.encode()).hexdigest()


def definition_site(fn: Callable[..., Any]) -> str:
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:
        return "<unknown>"
    return f"{code.co_filename}:{code.co_firstlineno}"
