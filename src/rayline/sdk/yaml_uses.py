"""Resolving a step's ``uses: "module:function"``, from an allowlist of modules only.

A YAML flow names Python callables by string, so a hostile or careless file could otherwise run
``os:system`` or ``subprocess:run``. A module may be imported only if it is

- part of the flow's project: a ``.py`` file (or package) under the YAML file's folder or that
  folder's parent, and imported from there (not shadowed by another module of the same name);
- rayline's built-in task library, ``rayline.tasks`` and its submodules;
- named (or a parent package named) in ``RAYLINE_ALLOWED_MODULES``, comma-separated.

The check runs before the import, so a refused module's code never runs.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

ALLOW_ENV = "RAYLINE_ALLOWED_MODULES"
BUILTIN_MODULES = ("rayline.tasks",)
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_USES = re.compile(rf"^({_DOTTED}):({_DOTTED})$")


class UsesError(Exception):
    """``uses:`` cannot be resolved; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsesResolver:
    """Resolves ``uses:`` strings for one YAML file, importing each module at most once."""

    def __init__(self, yaml_path: str | os.PathLike[str], env: dict[str, str] | None = None):
        folder = Path(yaml_path).resolve().parent
        self.roots = project_roots(folder)
        raw = (os.environ if env is None else env).get(ALLOW_ENV, "")
        self.allowed = (
            tuple(m.strip().removesuffix(".*") for m in raw.split(",") if m.strip())
            + BUILTIN_MODULES
        )
        self._modules: dict[str, ModuleType] = {}

    def resolve(self, uses: str) -> Any:
        """The object named by ``"module:attr"`` (``attr`` may be dotted).

        Raises:
            UsesError: malformed, not allowed, not importable, or no such attribute.
        """
        m = _USES.match(uses.strip())
        if m is None:
            raise UsesError(
                f"uses: {uses!r} is not of the form 'module:function'",
                hint='e.g. uses: "my_tasks:train" for the function train in my_tasks.py',
            )
        module = self._module(m.group(1))
        obj: Any = module
        for part in m.group(2).split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                names = [n for n in dir(obj) if not n.startswith("_")]
                close = difflib.get_close_matches(part, names, n=1)
                raise UsesError(
                    f"module '{m.group(1)}' has no attribute '{m.group(2)}'",
                    hint=f"did you mean '{close[0]}'?" if close else None,
                ) from None
        return obj

    def _module(self, name: str) -> ModuleType:
        if name in self._modules:
            return self._modules[name]
        root = self._project_root_of(name)
        if root is None and not _listed(name, self.allowed):
            raise UsesError(
                f"module '{name}' is not allowed in `uses:`",
                hint=(
                    "only modules of this flow's project ("
                    + " or ".join(str(r) for r in self.roots)
                    + f"), rayline.tasks, and modules listed in {ALLOW_ENV} can be used; "
                    f"to allow it, set {ALLOW_ENV}={name.split('.')[0]} (comma-separated)"
                ),
            )
        if root is not None:
            _refuse_shadowing(name.split(".")[0], root)
        try:
            with _on_sys_path(self.roots if root is not None else ()):
                importlib.invalidate_caches()
                module = importlib.import_module(name)
        except Exception as exc:  # user code: any error importing it is the user's to fix
            raise UsesError(
                f"cannot import module '{name}': {type(exc).__name__}: {exc}",
                hint="check the module path; it is imported relative to the YAML file's folder "
                "or its parent",
            ) from None
        if root is not None and not _is_listed_or_under(module, root, name, self.allowed):
            raise UsesError(
                f"module '{name}' was imported from {getattr(module, '__file__', '?')}, "
                f"not from this flow's project ({root})",
                hint="another module of the same name shadows yours; rename your module",
            )
        self._modules[name] = module
        return module

    def _project_root_of(self, name: str) -> Path | None:
        parts = name.split(".")
        for root in self.roots:
            base = root.joinpath(*parts)
            if base.with_name(parts[-1] + ".py").is_file() or (base / "__init__.py").is_file():
                return root
        return None


def project_roots(folder: Path) -> tuple[Path, ...]:
    """The YAML file's folder and its parent, except the filesystem root and the home folder
    (too broad to count as one project)."""
    try:
        home: Path | None = Path.home().resolve()
    except RuntimeError:  # no home folder known
        home = None
    out = []
    for p in (folder, folder.parent):
        if p == Path(p.anchor) or p == home or p in out:
            continue
        out.append(p)
    return tuple(out)


def _refuse_shadowing(top: str, root: Path) -> None:
    """Refuse a project module whose name another module (standard library, installed package)
    already has: importing it would replace that module for the whole process."""
    other = "the standard library" if top in sys.stdlib_module_names else None
    if other is None:
        try:
            spec = importlib.util.find_spec(top)  # searches only; runs no module code
        except (ImportError, ValueError):
            spec = None
        places = [spec.origin] if spec is not None and spec.origin else []
        places += list(spec.submodule_search_locations or []) if spec is not None else []
        outside = [p for p in places if p and not Path(p).resolve().is_relative_to(root)]
        other = outside[0] if outside else None
    if other is not None:
        raise UsesError(
            f"module '{top}' of this flow's project has the name of a module in {other}",
            hint=f"rename {root / top} (.py or package) so that it does not shadow the other",
        )


def _listed(name: str, allowed: tuple[str, ...]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


def _is_listed_or_under(
    module: ModuleType, root: Path, name: str, allowed: tuple[str, ...]
) -> bool:
    file = getattr(module, "__file__", None)
    if file is not None:
        return Path(file).resolve().is_relative_to(root)
    paths = [Path(p).resolve() for p in getattr(module, "__path__", [])]  # namespace package
    return any(p.is_relative_to(root) for p in paths) or _listed(name, allowed)


@contextlib.contextmanager
def _on_sys_path(roots: tuple[Path, ...]) -> Iterator[None]:
    added = [str(r) for r in reversed(roots) if str(r) not in sys.path]
    for p in added:
        sys.path.insert(0, p)
    try:
        yield
    finally:
        for p in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(p)
