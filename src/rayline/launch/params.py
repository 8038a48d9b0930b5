"""Flow parameters given as text (``rayline run -p n=5``, ``rayline trigger -p``) and their
strict conversion to each parameter's annotation: the one place that decides what ``5``,
``0.1``, ``true`` or ``[1, 2]`` mean for a parameter.

Text is read as YAML (``5`` an int, ``0.1`` a float, ``true`` a bool, ``[1, 2]`` a list), then
converted to the annotation when that is ``int``, ``float``, ``bool`` or ``str`` (or
``Optional`` of one). A value that does not convert is refused with the parameter's name and the
type it expects: booleans are not numbers (``-p n=true`` for ``n: int`` is an error), and
``2.5`` is not an int. ``check_values`` refuses a bool given from Python for a number.
``secret:NAME`` is a ``rayline.Secret("NAME")``: resolved where the task runs, never stored
(``rayline.sdk.secrets``).

Example::

    parse_param_text(graph, {"n": "5", "lr": "1e-3"})   # {"n": 5, "lr": 0.001}
    parse_param_text(graph, {"n": "true"})              # UsageError: parameter 'n' expects int
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

from rayline.errors import DefinitionError, UsageError
from rayline.sdk.graph import Graph
from rayline.sdk.secrets import Secret

__all__ = ["check_values", "coerce_text", "parse_param_text", "yaml_value"]

SECRET_PREFIX = "secret:"
_TRUE = ("1", "true", "yes", "on", "y")
_FALSE = ("0", "false", "no", "off", "n")


def parse_param_text(graph: Graph, raw: Mapping[str, str]) -> dict[str, Any]:
    """``{name: text}`` as the flow's parameter values (an unknown name is passed on, and
    validation names it with the flow's parameters).

    Raises:
        UsageError: a value that does not convert to its parameter's type.
    """
    declared = {p.name: p.annotation for p in graph.params}
    return {name: coerce_text(name, text, declared.get(name)) for name, text in raw.items()}


def yaml_value(text: str) -> Any:
    """``text`` read as a YAML scalar or flow collection; the text itself if it is not YAML."""
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def coerce_text(name: str, text: str, annotation: Any) -> Any:
    """The value of ``-p name=TEXT`` for a parameter annotated ``annotation``.

    Raises:
        UsageError: the value does not convert (the message names the parameter and the type).
    """
    if text.startswith(SECRET_PREFIX):  # -p token=secret:API_TOKEN: a reference, never a value
        try:
            return Secret(text[len(SECRET_PREFIX) :])
        except DefinitionError as exc:
            raise UsageError(f"-p {name}={text}: {exc}") from None
    target, optional = _simple_type(annotation)
    if target is str:
        return text
    value = yaml_value(text)
    if target is None:
        return value
    if value is None:
        if optional:
            return None
        raise _refused(name, text, target, value)
    converted = _convert(value, target)
    if converted is _NO:
        raise _refused(name, text, target, value)
    return converted


def check_values(graph: Graph, params: Mapping[str, Any]) -> None:
    """Refuse a ``bool`` given for an ``int`` or ``float`` parameter (Python counts a bool as
    an int; a flow that asks for a number never means True).

    Raises:
        UsageError: the first such parameter.
    """
    declared = {p.name: p.annotation for p in graph.params}
    for name, value in params.items():
        target, _ = _simple_type(declared.get(name))
        if target in (int, float) and isinstance(value, bool):
            raise UsageError(f"parameter '{name}' expects {target.__name__}, got bool {value!r}")


_NO = object()


def _convert(value: Any, target: type) -> Any:
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        return _NO
    if target not in (int, float) or isinstance(value, bool):
        return _NO  # true/false is not a number
    if isinstance(value, str):
        try:
            return target(value.strip())
        except ValueError:
            return _NO
    if isinstance(value, int) or (target is float and isinstance(value, float)):
        return target(value)
    if isinstance(value, float) and value.is_integer():  # 3.0 for an int
        return int(value)
    return _NO


def _refused(name: str, text: str, target: type, value: Any) -> UsageError:
    got = "null" if value is None else type(value).__name__
    return UsageError(f"-p {name}={text}: parameter '{name}' expects {target.__name__}, got {got} {text!r}")


def _simple_type(annotation: Any) -> tuple[type | None, bool]:
    """(int/float/bool/str or None, whether None is allowed)."""
    if annotation in (int, float, bool, str):
        return annotation, False
    args = typing.get_args(annotation)
    rest = [a for a in args if a is not type(None)]
    if len(rest) == 1 and len(args) == 2 and rest[0] in (int, float, bool, str):
        return rest[0], True  # Optional[int] and int | None
    return None, True
