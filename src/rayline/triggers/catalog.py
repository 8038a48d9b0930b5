"""Which schedules and triggers exist: read from flow files and schedules files.

There is no global registry. ``rayline schedule list|tick`` and ``rayline scheduler`` take
PATHS, each one of:

- a Python flow file, ``flows/churn.py`` (every flow in it declared with ``@flow(schedule=...)``)
  or ``flows/churn.py:churn`` (that flow); ``schedule=`` is one trigger or a list of them;
- a YAML flow file with a ``schedule:`` key (``{cron: "0 3 * * *", tz: UTC, overlap: skip,
  catchup: none}``);
- a schedules file: YAML with a top-level ``schedules:`` list. Each item names a ``flow`` and
  optionally one trigger kind with its options and ``params``; without a kind, the flow's own
  declared schedule is used::

      schedules:
        - flow: ../flows/churn.py              # as declared in the file
        - flow: ../flows/train.py:train
          cron: "0 3 * * *"
          tz: Europe/Warsaw
          catchup: latest
          params: {lr: 0.01}
        - flow: retrain.yaml
          new_data: ../data/incoming/*.parquet
          debounce: 2

Without PATHS, ``configs/schedules.yaml`` in the current directory is read. Relative paths in a
schedules file are relative to that file's directory; a relative ``NewData`` path declared in a
flow file is relative to the flow file's directory (so cron's working directory never matters).

Example::

    entries = load_entries(["flows/churn.py", "configs/schedules.yaml"])
    [(e.flow_name, e.trigger.describe()) for e in entries]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayline.errors import DefinitionError, UsageError
from rayline.launch.flow_files import flows_in, import_flow_file, load_flow, split_target
from rayline.triggers.trigger import TRIGGER_KINDS, Trigger, trigger_class

__all__ = ["DEFAULT_SCHEDULES", "Entry", "declared_triggers", "load_entries"]

DEFAULT_SCHEDULES = Path("configs/schedules.yaml")
_ITEM_KEYS = {"flow", "params"}


@dataclass(frozen=True)
class Entry:
    """One trigger of one flow: what the scheduler polls and fires."""

    target: str  # absolute "path.py:attr" or "path.yaml", as the run records it
    flow_name: str
    trigger: Any  # a Trigger
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    graph: Any = field(default=None, hash=False, compare=False, repr=False)  # traced when read

    @property
    def trigger_id(self) -> str:
        """``flow|trigger key``: the key of the trigger's stored state."""
        return f"{self.flow_name}|{self.trigger.key}"

    @property
    def all_params(self) -> dict[str, Any]:
        """The trigger's own params, overridden by the schedules file's."""
        return {**getattr(self.trigger, "params", {}), **self.params}


def load_entries(paths: Sequence[str | Path] = ()) -> list[Entry]:
    """Every (flow, trigger) declared by ``paths`` (default: ``configs/schedules.yaml``).

    Raises:
        UsageError: no paths and no default file, or a path that does not exist.
        DefinitionError: a flow without a schedule, a malformed schedules file or trigger.
    """
    if not paths:
        if not DEFAULT_SCHEDULES.exists():
            raise UsageError(
                "no schedules given: pass flow files (or a schedules file) as PATHS, or create "
                f"{DEFAULT_SCHEDULES} listing them"
            )
        paths = [DEFAULT_SCHEDULES]
    out: list[Entry] = []
    for p in paths:
        out += _entries_of(str(p))
    seen: set[str] = set()
    unique = []
    for e in out:
        if e.trigger_id not in seen:
            seen.add(e.trigger_id)
            unique.append(e)
    return unique


def declared_triggers(target: str) -> list[Entry]:
    """The triggers a flow file declares for its flow(s) (empty if none)."""
    path_s, attr = split_target(target)
    path = Path(path_s).resolve()
    if path.suffix in (".yaml", ".yml"):
        return _yaml_flow_entries(path)
    return _python_entries(path, attr, required=False)


def _entries_of(target: str) -> list[Entry]:
    path_s, attr = split_target(target)
    path = Path(path_s).expanduser()
    if not path.exists():
        raise UsageError(f"no such file: {path_s}")
    path = path.resolve()
    if path.suffix in (".yaml", ".yml"):
        from rayline.sdk.yaml_reader import read_yaml

        doc = read_yaml(path)
        if isinstance(doc.data, dict) and "schedules" in doc.data:
            return _schedules_file(path, doc)
        found = _yaml_flow_entries(path)
        if not found:
            raise DefinitionError(f"{path}: this YAML flow has no `schedule:` key")
        return found
    if path.suffix == ".py":
        return _python_entries(path, attr, required=True)
    raise UsageError(f"{path}: expected a flow file (.py, .yaml) or a schedules file (.yaml)")


def _as_list(schedule: Any) -> list[Any]:
    if schedule is None:
        return []
    return list(schedule) if isinstance(schedule, list | tuple) else [schedule]


def _check_trigger(obj: Any, where: str) -> Any:
    if not isinstance(obj, Trigger):
        raise DefinitionError(
            f"{where}: schedule={obj!r} is not a trigger; use Cron('0 3 * * *'), "
            "NewData('data/*.parquet') or a list of them"
        )
    return obj


def _python_entries(path: Path, attr: str, required: bool) -> list[Entry]:
    flows = flows_in(import_flow_file(path))
    if attr:
        chosen = {n: f for n, f in flows.items() if attr in (n, f.name)}
        if not chosen:
            raise UsageError(f"{path}: no flow named '{attr}'; flows here: {', '.join(flows) or 'none'}")
    else:
        chosen = {n: f for n, f in flows.items() if f.schedule is not None}
    out = []
    for name, f in chosen.items():
        graph = load_flow(f"{path}:{name}")
        for trig in _as_list(f.schedule):
            trig = _check_trigger(trig, f"{path}: flow '{f.name}'")
            if hasattr(trig, "resolved"):
                trig = trig.resolved(path.parent)
            out.append(Entry(graph.source or f"{path}:{name}", graph.name, trig, graph=graph))
    if required and not out:
        which = f"flow '{attr}'" if attr else "no flow"
        raise DefinitionError(
            f"{path}: {which} declares a schedule; add @flow(schedule=Cron('0 3 * * *')) or list "
            "the flow with a trigger in configs/schedules.yaml"
        )
    return out


def _yaml_flow_entries(path: Path) -> list[Entry]:
    from rayline.sdk.yaml_reader import read_yaml

    graph = load_flow(str(path))  # validates the whole file, `schedule:` included
    spec = read_yaml(path).data.get("schedule")
    if not spec:
        return []
    from rayline.triggers.schedule import Cron

    opts = dict(spec)
    params = opts.pop("params", None) or {}
    return [Entry(graph.source or str(path), graph.name, Cron(opts.pop("cron"), **opts), dict(params), graph)]


def _schedules_file(path: Path, doc: Any) -> list[Entry]:
    items = doc.data.get("schedules")
    if not isinstance(items, list):
        raise DefinitionError(f"{doc.where(('schedules',))}: `schedules` must be a list of items with a `flow` key")
    out: list[Entry] = []
    for i, item in enumerate(items):
        where = doc.where(("schedules", i))
        if not isinstance(item, dict) or not isinstance(item.get("flow"), str):
            raise DefinitionError(f"{where}: each schedule needs `flow: path/to/flow.py[:name]`")
        flow_s, sep, attr = item["flow"].partition(":") if not (path.parent / item["flow"]).exists() else (item["flow"], "", "")
        flow_path = (path.parent / flow_s).resolve()
        if not flow_path.exists():
            raise DefinitionError(f"{where}: no such flow file {flow_path} (relative paths are relative to {path.parent})")
        target = f"{flow_path}{sep}{attr}"
        kinds = [k for k in item if k in TRIGGER_KINDS]
        unknown = sorted(set(item) - _ITEM_KEYS - set(TRIGGER_KINDS))
        params = item.get("params") or {}
        if len(kinds) > 1 or (unknown and not kinds):
            raise DefinitionError(
                f"{where}: give at most one trigger kind ({', '.join(sorted(TRIGGER_KINDS))}); "
                f"found {', '.join(kinds + unknown)}"
            )
        if not kinds:
            found = declared_triggers(target)
            if not found:
                raise DefinitionError(f"{where}: flow {target} declares no schedule; add a trigger here, e.g. `cron: \"0 3 * * *\"`")
            out += [Entry(e.target, e.flow_name, e.trigger, dict(params), e.graph) for e in found]
            continue
        kind = kinds[0]
        options = {k: v for k, v in item.items() if k not in _ITEM_KEYS and k != kind}
        trig = _build(kind, item[kind], options, f"{doc.where(('schedules', i, kind))}")
        if hasattr(trig, "resolved"):
            trig = trig.resolved(path.parent)
        graph = load_flow(target)
        out.append(Entry(graph.source or target, graph.name, trig, dict(params), graph))
    return out


def _build(kind: str, value: Any, options: dict[str, Any], where: str) -> Any:
    cls = trigger_class(kind)
    try:
        return cls(value, **options)
    except TypeError as exc:
        raise DefinitionError(f"{where}: bad options for `{kind}`: {exc}") from None
    except DefinitionError as exc:
        raise DefinitionError(f"{where}: {exc}") from None


def flows_of(entries: Iterable[Entry]) -> list[str]:
    """The distinct flow names, in first-seen order."""
    return list(dict.fromkeys(e.flow_name for e in entries))
