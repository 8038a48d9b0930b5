"""The shape of a YAML flow, checked with pydantic (``extra="forbid"``, strict types).

Each pydantic error becomes a ``Problem`` at the ``file:line`` of the offending key. Steps and
parameters are checked one by one, so one bad step does not hide the problems of the others.
This module imports pydantic; ``rayline.sdk.yaml_flow`` imports it only when a file is loaded.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticError

from rayline.errors import Problem
from rayline.sdk.graph import REQUIRED
from rayline.sdk.yaml_reader import Loc, YamlDocument

TYPES: dict[str, type] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list": list,
    "dict": dict,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)


class ResourcesSpec(_Strict):
    """``resources:`` of a step; each key overrides the task's own value."""

    cpus: float | None = Field(default=None, ge=0)
    gpus: float | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, gt=0)
    custom: dict[str, float] = Field(default_factory=dict)
    accelerator_type: str | None = None


class BackoffSpec(_Strict):
    """``backoff:`` as a mapping, or a number of seconds (a constant delay)."""

    base: float = Field(default=1.0, ge=0)
    factor: float = Field(default=2.0, ge=1)
    max: float = Field(default=60.0, ge=0)
    jitter: float = Field(default=0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _constant(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"base": value, "factor": 1.0, "max": value}
        return value


class StepSpec(_Strict):
    """One entry of ``steps:``."""

    uses: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    needs: list[str] = Field(default_factory=list)
    #: run the task once per item of this value (``${steps.x}``, ``${params.x}`` or a list),
    #: each item passed as its first parameter; the step's output is the list of results
    map: Any = None
    #: run the step only when this step output (``${steps.x}``) is truthy; else it is SKIPPED,
    #: with everything downstream of it, and the run still succeeds
    if_: str | None = Field(default=None, alias="if")
    resources: ResourcesSpec | None = None
    retries: int | None = Field(default=None, ge=0)
    backoff: BackoffSpec | None = None
    timeout: float | None = Field(default=None, gt=0)
    cache: bool | None = None
    persist: bool | None = None
    runtime_env: dict[str, Any] | None = None  # checked by rayline.sdk.runtime_env
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return _drop_blank(value, ("with", "needs"))


class ParamSpec(_Strict):
    """The long form of a parameter: ``{default: ..., type: int}``; no default means required."""

    default: Any = None
    type: Literal["str", "int", "float", "bool", "list", "dict"] | None = None
    description: str | None = None


class ScheduleSpec(_Strict):
    """``schedule:`` of a flow: when ``rayline scheduler`` / ``rayline schedule tick`` run it.

    Example: ``schedule: {cron: "0 3 * * *", tz: Europe/Warsaw, overlap: skip, catchup: none}``
    (semantics in ``rayline.triggers``: ``schedule`` for DST, ``policy`` for overlap/catch-up).
    """

    cron: str
    tz: str = "UTC"
    overlap: Literal["skip", "queue", "allow"] = "skip"
    catchup: Literal["none", "latest", "all"] = "none"
    max_catchup: int = Field(default=10, ge=1)
    grace: float = Field(default=60.0, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from datetime import datetime

        from cronsim import CronSim, CronSimError

        text = " ".join(value.split())
        if text.lower() in _CRON_ALIASES:
            return value
        try:
            CronSim(text, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ValueError(
                f"not a cron expression ({exc}); the form is 'minute hour day-of-month month "
                "day-of-week', e.g. '0 3 * * *'"
            ) from None
        return value

    @field_validator("tz")
    @classmethod
    def _tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone; use an IANA name such as 'Europe/Warsaw'") from None
        return value


_CRON_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


class _FlowSpec(_Strict):
    name: str | None = None
    description: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    steps: dict[str, Any] = Field(min_length=1)
    outputs: Any = None
    schedule: ScheduleSpec | None = None
    on_failure: str | list[str] | None = None
    on_success: str | list[str] | None = None
    queue: str | None = Field(default=None, min_length=1, max_length=128)  # admission (launch/)
    priority: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return _drop_blank(value, ("params",))


def _drop_blank(value: Any, keys: tuple[str, ...]) -> Any:
    # `with:` (or `needs:`, `params:`) with nothing after it means none.
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if not (k in keys and v is None)}
    return value


@dataclass(frozen=True, slots=True)
class ParamDecl:
    """A checked parameter: ``default`` is ``REQUIRED`` when the file gives none."""

    name: str
    default: Any
    type: type | None


@dataclass
class FlowDoc:
    """What the schema check accepted. ``steps`` keeps every declared step id in file order;
    a step whose own body is invalid maps to ``None`` (its problems are already reported)."""

    name: str
    params: dict[str, ParamDecl] = field(default_factory=dict)
    steps: dict[str, StepSpec | None] = field(default_factory=dict)
    outputs: Any = None
    has_outputs: bool = False


def check_schema(doc: YamlDocument, default_name: str) -> tuple[FlowDoc, list[Problem]]:
    """Check ``doc`` against the flow schema. Returns what is usable and every problem found."""
    problems: list[Problem] = []
    data = doc.data
    if not isinstance(data, dict):
        problems.append(
            Problem(
                "the top level must be a mapping with `name`, `params`, `steps` and `outputs`",
                location=doc.where(()),
            )
        )
        return FlowDoc(default_name), problems
    try:
        _FlowSpec.model_validate(data)
    except PydanticError as exc:
        problems += _problems(exc, doc, (), _FlowSpec)
    name = data.get("name") if isinstance(data.get("name"), str) else default_name
    out = FlowDoc(name, outputs=data.get("outputs"), has_outputs=data.get("outputs") is not None)
    params = data.get("params")
    for pname, raw in (params or {}).items() if isinstance(params, dict) else ():
        decl = _param(pname, raw, doc, problems)
        if decl is not None:
            out.params[pname] = decl
    steps = data.get("steps")
    for step_id, raw in (steps or {}).items() if isinstance(steps, dict) else ():
        try:
            out.steps[step_id] = StepSpec.model_validate(raw)
        except PydanticError as exc:
            out.steps[step_id] = None
            problems += _problems(exc, doc, ("steps", step_id), StepSpec, node=step_id)
    return out, problems


def _param(name: str, raw: Any, doc: YamlDocument, problems: list[Problem]) -> ParamDecl | None:
    loc: Loc = ("params", name)
    if not name.isidentifier():
        problems.append(
            Problem(
                f"parameter name {name!r} is not a valid identifier",
                location=doc.where(loc),
                hint="use letters, digits and '_' (not first)",
            )
        )
        return None
    if not isinstance(raw, dict):  # the short form: `n: 3` is a default
        return ParamDecl(name, raw, None)
    try:
        spec = ParamSpec.model_validate(raw)
    except PydanticError as exc:
        problems += _problems(exc, doc, loc, ParamSpec)
        return None
    typ = TYPES[spec.type] if spec.type else None
    default = spec.default if "default" in spec.model_fields_set else REQUIRED
    if (
        typ is not None
        and default is not REQUIRED
        and default is not None
        and not _is_a(default, typ)
    ):
        problems.append(
            Problem(
                f"parameter '{name}' has type {spec.type} but its default is {default!r}",
                location=doc.where((*loc, "default")),
                hint=f"give a default of type {spec.type}, or change `type:`",
            )
        )
    return ParamDecl(name, default, typ)


def _is_a(value: Any, typ: type) -> bool:
    if typ is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


# Which model describes the mapping at a location inside a step / param (for "did you mean").
_NESTED: dict[str, type[BaseModel]] = {
    "resources": ResourcesSpec,
    "backoff": BackoffSpec,
    "schedule": ScheduleSpec,
}


def _problems(
    exc: PydanticError,
    doc: YamlDocument,
    base: Loc,
    model: type[BaseModel],
    node: str | None = None,
) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc: Loc = (*base, *err["loc"])
        key = str(err["loc"][-1]) if err["loc"] else ""
        dotted = ".".join(str(p) for p in loc)
        hint = None
        if err["type"] == "extra_forbidden":
            owner = _owner(model, err["loc"])
            allowed = sorted(f.alias or n for n, f in owner.model_fields.items())
            close = difflib.get_close_matches(key, allowed, n=1)
            message = f"unknown key '{key}' in {_where_label(base, err['loc'])}"
            hint = (
                (f"did you mean '{close[0]}'? " if close else "") + "allowed: " + ", ".join(allowed)
            )
        elif err["type"] == "missing":
            message = f"missing required key '{key}' in {_where_label(base, err['loc'])}"
        elif err["type"] in ("model_type", "dict_type"):
            message = f"'{dotted}' must be a mapping (got {_short(err.get('input'))})"
        else:
            message = f"'{dotted}': {err['msg']} (got {_short(err.get('input'))})"
        out.append(Problem(message, node=node, location=doc.where(loc), hint=hint))
    return out


def _owner(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    for part in loc[:-1]:
        nested = _NESTED.get(str(part))
        if nested is not None:
            model = nested
    return model


def _where_label(base: Loc, loc: tuple[Any, ...]) -> str:
    parent = [str(p) for p in (*base, *loc[:-1])]
    if parent[:1] == ["steps"] and len(parent) >= 2:
        rest = ".".join(parent[2:])
        return f"step '{parent[1]}'" + (f" `{rest}`" if rest else "")
    return f"`{'.'.join(parent)}`" if parent else "the top level"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
