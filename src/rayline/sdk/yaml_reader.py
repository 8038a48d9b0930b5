"""Reading a YAML flow file safely, keeping the line of every key.

PyYAML's ``SafeLoader`` only *composes* the file into a node tree here; the values are built from
that tree by this module, so that:

- nothing but the standard plain tags (null, bool, int, float, str, timestamp, seq, map) is ever
  turned into a value: ``!!python/object/apply:os.system [...]`` is reported with its line and
  never constructed, let alone executed (CVE-2020-1747 is a loader that did);
- duplicate keys are reported with both lines (PyYAML silently keeps the last one);
- the file size, the nesting depth and alias expansion ("billion laughs") are bounded;
- every key and list item keeps its line, so later checks can say ``flow.yaml:17``.

Mapping keys are always kept as the text written (``on:`` is the key ``"on"``, not ``True``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from rayline.errors import Problem, SpecValidationError

MAX_BYTES = 1 << 20
MAX_DEPTH = 50
MAX_VALUES = 100_000  # after alias expansion

_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_YAML + t for t in ("null", "bool", "int", "float", "str", "timestamp"))
_SEQ, _MAP, _MERGE = _YAML + "seq", _YAML + "map", _YAML + "merge"

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """The values of a YAML file and the 1-based line of each key and list item.

    ``lines`` maps a path from the root (``("steps", "train", "with", "lr")``) to the line of
    that key; ``line(loc)`` falls back to the nearest enclosing key that has one.
    """

    filename: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line(self, loc: Loc) -> int:
        for end in range(len(loc), -1, -1):
            found = self.lines.get(tuple(loc[:end]))
            if found is not None:
                return found
        return 1

    def where(self, loc: Loc) -> str:
        """``file:line`` of the key at ``loc`` (or of its nearest enclosing key)."""
        return f"{self.filename}:{self.line(loc)}"


def read_yaml(path: str | os.PathLike[str]) -> YamlDocument:
    """Read and safely parse a YAML file (at most ``MAX_BYTES``).

    Raises:
        SpecValidationError: unreadable, too large, malformed, unsafe tags, duplicate keys.
    """
    filename = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise _fail(f"cannot read the flow file: {exc.strerror or exc}", filename) from None
    if len(raw) > MAX_BYTES:
        raise _fail(
            f"the file is larger than {MAX_BYTES // 1024} KiB",
            filename,
            hint="a flow spec should be small; keep data in files the tasks read",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"the file is not UTF-8 text (byte {exc.start})", filename) from None
    return parse_yaml(text, filename)


def parse_yaml(text: str, filename: str = "<string>") -> YamlDocument:
    """Parse YAML text into plain values with line numbers (see the module docstring)."""
    import yaml

    try:
        _check_depth(text, filename)
        root = yaml.compose(text, Loader=yaml.SafeLoader)  # composes only: no object is built
    except yaml.MarkedYAMLError as exc:
        raise _malformed(exc, filename) from None
    except yaml.YAMLError as exc:
        raise _fail(f"malformed YAML: {exc}", filename) from None
    if root is None:
        raise _fail("the file is empty", filename, hint="a flow needs at least `steps:`")
    builder = _Builder(filename)
    data = builder.build(root, (), 1)
    if builder.problems:
        raise SpecValidationError(builder.problems)
    builder.lines.setdefault((), root.start_mark.line + 1)
    return YamlDocument(filename, data, builder.lines)


def _check_depth(text: str, filename: str) -> None:
    # The event parser is iterative, so this runs before the (recursive) composer can overflow.
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise _fail(
                    f"nesting is deeper than {MAX_DEPTH} levels",
                    f"{filename}:{mark.line + 1}:{mark.column + 1}",
                )
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            depth -= 1


class _Builder:
    """Builds plain values from composed nodes, collecting every problem."""

    def __init__(self, filename: str):
        import yaml

        self.filename = filename
        self.yaml = yaml
        self.constructor = yaml.SafeLoader("")
        self.lines: dict[Loc, int] = {}
        self.problems: list[Problem] = []
        self.count = 0

    def where(self, node: Any) -> str:
        return f"{self.filename}:{node.start_mark.line + 1}"

    def build(self, node: Any, loc: Loc, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _fail(
                f"the file expands to more than {MAX_VALUES} values (aliases?)", self.where(node)
            )
        if depth > MAX_DEPTH:  # only reachable through aliases (e.g. an anchor inside itself)
            raise _fail(f"nesting is deeper than {MAX_DEPTH} levels (aliases?)", self.where(node))
        y = self.yaml
        if isinstance(node, y.ScalarNode) and node.tag in _SCALAR_TAGS:
            try:
                return self.constructor.construct_object(node, deep=True)
            except Exception as exc:  # e.g. "!!int abc": report it, keep going
                self._problem(node, f"cannot read the value {node.value!r}: {exc}")
                return None
        if isinstance(node, y.SequenceNode) and node.tag == _SEQ:
            out = []
            for i, item in enumerate(node.value):
                self.lines[(*loc, i)] = item.start_mark.line + 1
                out.append(self.build(item, (*loc, i), depth + 1))
            return out
        if isinstance(node, y.MappingNode) and node.tag == _MAP:
            return self._mapping(node, loc, depth)
        self._problem(
            node,
            f"the tag {_short_tag(node.tag)} is not allowed",
            hint="use plain YAML values only: strings, numbers, booleans, null, lists, mappings",
        )
        return None

    def _mapping(self, node: Any, loc: Loc, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE:
                self._problem(
                    key_node,
                    "merge keys (<<) are not supported",
                    hint="write the keys out in each mapping",
                )
                continue
            if not isinstance(key_node, self.yaml.ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                self._problem(key_node, "mapping keys must be plain strings or numbers")
                continue
            key = key_node.value
            if key in first_line:
                self._problem(
                    key_node,
                    f"duplicate key {key!r} at line {line} (first at line {first_line[key]})",
                    hint="keep one of them; YAML would silently use the last",
                )
                continue
            first_line[key] = line
            self.lines[(*loc, key)] = line
            out[key] = self.build(value_node, (*loc, key), depth + 1)
        return out

    def _problem(self, node: Any, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(message, location=self.where(node), hint=hint))


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


def _malformed(exc: Any, filename: str) -> SpecValidationError:
    mark, context = exc.problem_mark or exc.context_mark, exc.context_mark
    where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
    what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
    if context is not None and mark is not None and context.line != mark.line:
        what += f" (the construct began at line {context.line + 1}, column {context.column + 1})"
    return _fail(f"malformed YAML: {what}", where)


def _fail(message: str, location: str, hint: str | None = None) -> SpecValidationError:
    return SpecValidationError([Problem(message, location=location, hint=hint)])
