"""Flow files: ``path.py[:flow]`` or ``path.yaml`` into a traced ``Graph``, loaded once.

``load_flow_file`` imports the file (a Python module is imported once per process and cached),
picks the flow and traces it once; the ``FlowFile`` it returns also says which overlap policy the
flow declares with its schedule or trigger, so that ``rayline run`` never loads the file a second
time to ask. ``import_flow_file`` is the importer the trigger catalog uses to read ``schedule=``.

Example::

    ff = load_flow_file("flows/hello.py")
    ff.graph.name, ff.declared_overlap      # ("hello", "skip")
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayline.errors import DefinitionError, UsageError
from rayline.sdk.flow import Flow
from rayline.sdk.graph import Graph

__all__ = ["FlowFile", "flows_in", "import_flow_file", "load_flow", "load_flow_file", "split_target"]


@dataclass(frozen=True)
class FlowFile:
    """One loaded flow: its traced graph, and the overlap policy of its first declared schedule
    or trigger (``skip`` when it declares none)."""

    graph: Graph
    declared_overlap: str = "skip"


def split_target(target: str) -> tuple[str, str]:
    """``path[:flow]`` as (path, flow name or "")."""
    if Path(target).exists():
        return target, ""
    path_s, _, attr = target.partition(":")
    return path_s, attr


def load_flow(target: str | Path) -> Graph:
    """Load ``path.py[:flow]`` or ``path.yaml`` into a ``Graph`` (traced once)."""
    return load_flow_file(target).graph


def load_flow_file(target: str | Path) -> FlowFile:
    """Load ``path.py[:flow]`` or ``path.yaml``: the traced graph and the declared overlap.

    Raises:
        UsageError: no such file, not a flow file, or no (single) flow to pick.
        DefinitionError: the file does not import, or the flow does not trace.
    """
    path_s, attr = split_target(str(target))
    path = Path(path_s)
    if not path.exists():
        raise UsageError(f"no such flow file: {path_s}")
    if path.suffix in (".yaml", ".yml"):
        return _yaml_flow_file(path)
    if path.suffix != ".py":
        raise UsageError(f"{path}: a flow is a .py file (with @flow) or a .yaml file")
    flows = flows_in(import_flow_file(path))
    if attr:
        chosen = flows.get(attr) or next((f for f in flows.values() if f.name == attr), None)
        if chosen is None:
            raise UsageError(f"{path}: no flow named '{attr}'; flows here: {', '.join(flows) or 'none'}")
        attr = next(n for n, f in flows.items() if f is chosen)
    elif len(flows) == 1:
        attr, chosen = next(iter(flows.items()))
    else:
        raise UsageError(
            f"{path} defines {len(flows)} flows ({', '.join(flows) or 'none'}); "
            f"pick one with {path}:NAME"
        )
    source = f"{path}:{attr}"
    chosen.source = source
    graph = chosen.graph()  # traced once per process; later loads reuse it
    if graph.source != source:  # traced before the loader named it (e.g. at import)
        graph = dataclasses.replace(graph, source=source)
    return FlowFile(graph, _first_overlap(chosen.schedule))


def flows_in(module: Any) -> dict[str, Flow]:
    """The flows a module defines, by attribute name."""
    return {name: obj for name, obj in vars(module).items() if isinstance(obj, Flow)}


def import_flow_file(path: Path) -> Any:
    """Import the Python file at ``path`` as a module, once per process (later calls return it).

    Raises:
        DefinitionError: importing the file raised.
    """
    path = path.resolve()
    name = f"rayline_flow_{path.stem}_{abs(hash(str(path))) % 10**8}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    parent = str(path.parent)
    if parent not in sys.path:
        # Appended, not prepended: the flow's sibling modules become importable without a
        # file such as numbers.py there ever shadowing the standard library (for this process
        # and for the processes it spawns, which inherit sys.path).
        sys.path.append(parent)
    try:
        spec.loader.exec_module(module)
    except DefinitionError:
        sys.modules.pop(name, None)
        raise
    except Exception as exc:
        sys.modules.pop(name, None)
        raise DefinitionError(f"{path}: importing the flow file failed: {type(exc).__name__}: {exc}") from exc
    return module


def _first_overlap(schedule: Any) -> str:
    if schedule is None:
        return "skip"
    first = schedule[0] if isinstance(schedule, list | tuple) and schedule else schedule
    return str(getattr(first, "overlap", "skip") or "skip")


def _yaml_flow_file(path: Path) -> FlowFile:
    from rayline.sdk.yaml_flow import load_yaml_flow
    from rayline.sdk.yaml_reader import read_yaml

    graph = load_yaml_flow(path)
    data = read_yaml(path).data
    spec = data.get("schedule") if isinstance(data, dict) else None
    overlap = spec.get("overlap", "skip") if isinstance(spec, dict) else "skip"
    return FlowFile(graph, str(overlap))
