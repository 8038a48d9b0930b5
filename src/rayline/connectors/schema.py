"""The schema contract: every file's footer schema is checked against one contract.

The contract is either *declared* (a ``pyarrow.Schema`` or ``{"age": "int64"}``) or, when
nothing is declared, the *first file's* schema — and every other file must then match it, so
drift in the second file is caught rather than inferred away. Nothing is ever cast silently.

Evolution policies:

- ``"strict"``: every file has exactly the contract's columns and types.
- ``"additive"`` (default): files may carry extra columns (missing ones read as nulls); a
  dropped contract column or a changed type is rejected.
- ``"widening"``: additive, and a column may also be a lossless narrower type than the contract
  (int32 in a file, int64 in the contract); it is read as the contract type.

Example::

    contract = SchemaContract.of({"id": "int64", "age": "int32"}, evolution="strict")
    schema = contract.unify([("part-0.parquet", s0), ("part-1.parquet", s1)])
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pyarrow as pa

from rayline.connectors import SchemaContractError
from rayline.errors import DefinitionError

POLICIES = ("additive", "strict", "widening")

# Lossless widenings: narrow type -> the types it may be read as under "widening".
_INTS = ["int8", "int16", "int32", "int64"]
_UINTS = ["uint8", "uint16", "uint32", "uint64"]
_FLOATS = ["halffloat", "float", "double"]


def _wider(order: list[str]) -> dict[str, set[str]]:
    return {t: set(order[i + 1 :]) for i, t in enumerate(order)}


_WIDENING: dict[str, set[str]] = {**_wider(_INTS), **_wider(_UINTS), **_wider(_FLOATS)}
for _u, _s in (("uint8", "int16"), ("uint16", "int32"), ("uint32", "int64")):
    _WIDENING[_u] |= set(_INTS[_INTS.index(_s) :])
_WIDENING.update({"string": {"large_string"}, "binary": {"large_binary"}})


def parse_type(name: str | pa.DataType, *, column: str = "?") -> pa.DataType:
    """An Arrow type from a name: ``"int64"``, ``"float32"``, ``"string"``, ``"bool"``,
    ``"timestamp[ms]"``, ``"date32"`` … (anything ``pyarrow.type_for_alias`` knows)."""
    if isinstance(name, pa.DataType):
        return name
    try:
        return pa.type_for_alias(str(name).strip())
    except (ValueError, KeyError):
        raise DefinitionError(
            f"schema: column '{column}' has unknown Arrow type name {name!r}; use a name such as "
            "'int64', 'float32', 'string', 'bool', 'timestamp[ms]', or a pyarrow.DataType"
        ) from None


def _type_name(t: pa.DataType) -> str:
    return str(t)


def _kind(t: pa.DataType) -> str:
    # Arrow's own alias names ("double", "timestamp[ms]") identify types for widening rules.
    return str(t).split("[")[0] if pa.types.is_timestamp(t) else str(t)


def widens(file_type: pa.DataType, contract_type: pa.DataType) -> bool:
    """True when ``file_type`` converts to ``contract_type`` without loss."""
    return _kind(contract_type) in _WIDENING.get(_kind(file_type), set())


@dataclass(frozen=True)
class SchemaContract:
    """A declared schema (or none: the first file is the reference) and an evolution policy."""

    schema: pa.Schema | None = None
    evolution: str = "additive"

    @classmethod
    def of(cls, schema: pa.Schema | Mapping[str, Any] | None, evolution: str = "additive") -> SchemaContract:
        """Build a contract from a ``pyarrow.Schema``, a mapping of column to type name, or None."""
        if evolution not in POLICIES:
            raise DefinitionError(
                f"schema_evolution={evolution!r} is not a policy; use one of {', '.join(POLICIES)}"
            )
        if schema is None or isinstance(schema, pa.Schema):
            return cls(schema, evolution)
        if isinstance(schema, Mapping):
            fields = [pa.field(str(k), parse_type(v, column=str(k))) for k, v in schema.items()]
            return cls(pa.schema(fields), evolution)
        raise DefinitionError(
            f"schema must be a pyarrow.Schema or a mapping like {{'age': 'int64'}}, got {type(schema).__name__}"
        )

    def unify(self, files: Sequence[tuple[str, pa.Schema]]) -> pa.Schema:
        """Check every ``(name, schema)`` against the contract; return the schema to read with.

        Raises ``SchemaContractError`` listing every problem (file, column, old and new type).
        """
        if not files:
            return self.schema if self.schema is not None else pa.schema([])
        declared = self.schema is not None
        reference = self.schema if declared else files[0][1]
        ref_name = "the contract" if declared else f"the first file ({files[0][0]})"
        contract = {f.name: f.type for f in reference}
        extras: dict[str, tuple[pa.DataType, str]] = {}  # column -> (type, first file with it)
        problems: list[str] = []
        for name, schema in files if declared else files[1:]:
            problems += self._check(name, schema, contract, ref_name, extras)
        if problems:
            raise SchemaContractError(problems, hint=self._hint(declared))
        fields = [pa.field(f.name, f.type) for f in reference]
        fields += [pa.field(col, t) for col, (t, _) in extras.items()]
        return pa.schema(fields)

    def _check(
        self,
        name: str,
        schema: pa.Schema,
        contract: dict[str, pa.DataType],
        ref_name: str,
        extras: dict[str, tuple[pa.DataType, str]],
    ) -> list[str]:
        problems: list[str] = []
        present = {f.name: f.type for f in schema}
        says = "the contract says" if ref_name == "the contract" else f"{ref_name} has"
        for col, want in contract.items():
            got = present.get(col)
            if got is None:
                problems.append(f"{name}: column '{col}' ({_type_name(want)} in {ref_name}) is missing")
            elif not got.equals(want):
                if self.evolution == "widening" and widens(got, want):
                    continue
                problems.append(
                    f"{name}: column '{col}' is {_type_name(got)}, {says} {_type_name(want)}"
                    + _why(got, want, self.evolution)
                )
        for col, got in present.items():
            if col in contract:
                continue
            if self.evolution == "strict":
                problems.append(
                    f"{name}: column '{col}' ({_type_name(got)}) is not in {ref_name}; "
                    "schema_evolution='strict' allows no new columns"
                )
            elif col not in extras:
                extras[col] = (got, name)
            elif not extras[col][0].equals(got):
                first_t, first_file = extras[col]
                problems.append(
                    f"{name}: added column '{col}' is {_type_name(got)}, but {first_file} has it as "
                    f"{_type_name(first_t)}"
                )
        return problems

    def _hint(self, declared: bool) -> str:
        if declared:
            return (
                "fix or remove the listed files, or change schema= (and schema_evolution=) to the "
                "types you want; rayline never casts silently"
            )
        return (
            "no schema was declared, so the first file is the reference: declare schema= with the "
            "types you expect, and fix or remove the files that differ"
        )


def _why(got: pa.DataType, want: pa.DataType, evolution: str) -> str:
    if pa.types.is_timestamp(got) and pa.types.is_timestamp(want):
        return " (a timestamp unit or time zone change)"
    if widens(got, want) and evolution != "widening":
        return " (a lossless widening: allow it with schema_evolution='widening')"
    if widens(want, got):
        return " (narrowing would lose data)"
    return " (incompatible types)"


_HIVE = re.compile(r"^([^=/]+)=(.*)$")
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def hive_partitions(
    relative_paths: Sequence[str], declared: pa.Schema | None = None
) -> tuple[tuple[str, ...], list[pa.Field], list[tuple[tuple[str, str | None], ...]]]:
    """Hive ``key=value`` folders shared by every file: (keys, typed fields, values per file).

    A key's type is the declared one if ``declared`` names it, else int64 when every value is
    an integer, else string. Files that disagree on the keys mean: no partitioning.
    """
    pairs = []
    for rel in relative_paths:
        found = [_HIVE.match(d) for d in rel.split("/")[:-1]]
        pairs.append(tuple((m.group(1), unquote(m.group(2))) for m in found if m))
    keys = tuple(k for k, _ in pairs[0]) if pairs else ()
    if not keys or any(tuple(k for k, _ in p) != keys for p in pairs):
        return (), [], [() for _ in relative_paths]
    types = {f.name: f.type for f in declared} if declared is not None else {}
    fields = []
    for i, k in enumerate(keys):
        values = [p[i][1] for p in pairs if p[i][1] != _HIVE_NULL]
        inferred = pa.int64() if values and all(re.fullmatch(r"-?\d+", v) for v in values) else pa.string()
        fields.append(pa.field(k, types.get(k, inferred)))
    per_file = [tuple((k, None if v == _HIVE_NULL else v) for k, v in p) for p in pairs]
    return keys, fields, per_file


__all__ = ["POLICIES", "SchemaContract", "hive_partitions", "parse_type", "widens"]
