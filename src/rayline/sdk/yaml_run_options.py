"""What a YAML flow says about how it runs, beside its steps: run hooks (``on_failure:`` /
``on_success:``) and a step's ``runtime_env:``. Each function takes the YAML loader
(``yaml_flow._Loader``) as ``self``, to resolve ``uses:``-style references and report problems at
their ``file:line``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayline.sdk.yaml_reader import Loc
from rayline.sdk.yaml_uses import UsesError

if TYPE_CHECKING:
    from rayline.sdk.hooks import RunHooks

__all__ = ["step_runtime_env", "yaml_hooks"]


def yaml_hooks(self: Any) -> RunHooks | None:
    """``on_failure:`` / ``on_success:`` (a ``"module:function"`` or a list of them),
    resolved from the same allowlist as ``uses:``."""
    from rayline.sdk.hooks import as_hooks

    data = self.doc.data if isinstance(self.doc.data, dict) else {}
    found: dict[str, list[Any]] = {}
    for kind in ("on_failure", "on_success"):
        raw = data.get(kind)
        refs = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        for i, ref in enumerate(refs):
            loc: Loc = (kind,) if isinstance(raw, str) else (kind, i)
            if not isinstance(ref, str):
                continue  # the schema check reported it
            try:
                obj = self.uses.resolve(ref)
            except UsesError as exc:
                self.problem(f"{kind}: {exc.message}", loc, hint=exc.hint)
                continue
            _, problems = as_hooks(**{kind: obj})
            for problem in problems:
                self.problem(f"{kind}: {ref!r}: {problem}", loc)
            if not problems:
                found.setdefault(kind, []).append(obj)
    hooks, _ = as_hooks(found.get("on_failure"), found.get("on_success"))
    return hooks or None


def step_runtime_env(self: Any, sid: str, env: dict[str, Any]) -> dict[str, Any]:
    """A step's ``runtime_env:``, checked at its ``file:line``; a relative ``working_dir``
    is read from the YAML file's folder."""
    from rayline.sdk.runtime_env import runtime_env_problems

    base = Path(self.doc.filename).resolve().parent
    for message, hint in runtime_env_problems(env, base):
        self.problem(message, ("steps", sid, "runtime_env"), sid, hint)
    wd = env.get("working_dir")
    if isinstance(wd, str) and "://" not in wd and not Path(wd).is_absolute():
        env = {**env, "working_dir": str(base / wd)}
    return env
