"""Petastorm's stored schema and column codecs, read without petastorm, pyspark or pickle's trust.

Petastorm keeps a dataset's ``Unischema`` as a *pickle* in ``_common_metadata`` (key
``dataset-toolkit.unischema.v1``), so opening a dataset means unpickling. ``load_unischema``
does it with ``RestrictedUnpickler``: only the globals in ``ALLOWED`` (petastorm's schema and
codec classes, pyspark's scalar type names, numpy dtype/scalar reconstruction, ``OrderedDict``
and a few builtin types) resolve, each to an inert stand-in here or a harmless type; anything
else raises ``UnsafePickleError`` before it is imported, let alone called.

Each codec class here is an inert stand-in; ``petastorm_decode.py`` decodes a codec's column into
an Arrow column. ``column_from_arrays`` builds that Arrow column from decoded numpy values (fixed
shapes as ``pa.FixedShapeTensorArray``, shapes with ``None`` dimensions as nested lists): the
petastorm bridge uses it too (this module runs under pyarrow 14 as well as pyarrow 26 and imports
nothing from rayline for that reason).

Example::

    schema = load_unischema(pq.read_metadata(".../_common_metadata").metadata[UNISCHEMA_KEY])
    schema.fields["patch"].codec                 # an NdarrayCodec stand-in
"""

from __future__ import annotations

import builtins
import io
import pickle
from collections import OrderedDict
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

try:  # rayline's data error; the side env's bridge loads this file alone, without rayline
    from rayline.connectors import DataError as _DataError
except ImportError:  # pragma: no cover - exercised in the bridge process
    _DataError = Exception  # type: ignore[assignment,misc]

UNISCHEMA_KEY = b"dataset-toolkit.unischema.v1"
ROW_GROUPS_KEY = b"dataset-toolkit.num_row_groups_per_file.v1"


class PetastormDataError(_DataError):
    """A petastorm dataset's schema or values cannot be read (named field and reason)."""


class UnsafePickleError(PetastormDataError, pickle.UnpicklingError):
    """The stored Unischema pickle names a global outside petastorm's known classes."""


# ---------------------------------------------------------------------------- stand-ins
class UnischemaField(NamedTuple):
    """Stand-in for ``petastorm.unischema.UnischemaField`` (same fields, same order)."""

    name: str
    numpy_dtype: Any
    shape: tuple[int | None, ...]
    codec: Any = None
    nullable: bool | None = False


class Unischema:
    """Stand-in for ``petastorm.unischema.Unischema``: ``name`` and ``fields`` (ordered)."""

    _name: str
    _fields: OrderedDict[str, UnischemaField]

    @property
    def name(self) -> str:
        return self._name

    @property
    def fields(self) -> OrderedDict[str, UnischemaField]:
        return self._fields

    def __repr__(self) -> str:
        return f"Unischema({self._name!r}, [{', '.join(self._fields)}])"


class _Inert:
    """Pickle restores these stand-ins' ``__dict__`` (no code runs); equal by type and state."""

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(type(self).__name__)

    def __repr__(self) -> str:
        state = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({state})"


class Codec(_Inert):
    """Base of the codec stand-ins."""


class ScalarCodec(Codec):
    _spark_type: Any = None


class NdarrayCodec(Codec):
    pass


class CompressedNdarrayCodec(Codec):
    pass


class CompressedImageCodec(Codec):
    _image_codec: str = ".png"
    _quality: int = 80


class SparkType(_Inert):
    """Stand-in for a ``pyspark.sql.types`` scalar type; only its name (and state) is kept."""


SPARK_TYPES = (
    "BinaryType", "BooleanType", "ByteType", "DateType", "DecimalType", "DoubleType", "FloatType",
    "IntegerType", "LongType", "NullType", "ShortType", "StringType", "TimestampType",
    "TimestampNTZType",
)  # fmt: skip
_SPARK = {n: type(n, (SparkType,), {"__module__": __name__}) for n in SPARK_TYPES}
globals().update(_SPARK)  # importable by name here, so schemas pickle to Ray workers by reference

# numpy scalar types by pickled name (numpy 1 aliases included) -> the numpy 2 name
NUMPY_TYPES = {n: n for n in ("bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 "
                              "float64 int_ complex64 complex128 str_ bytes_ datetime64 timedelta64").split()}
NUMPY_TYPES |= {"bool8": "bool_", "bool": "bool_", "float_": "float64", "unicode_": "str_", "string_": "bytes_"}
_BUILTINS = ("object", "set", "frozenset", "list", "dict", "tuple", "bytearray", "complex")
_LEGACY_PACKAGES = ("av.experimental.deepdrive.dataset_toolkit.", "av.ml.dataset_toolkit.")


def _numpy_global(module: str, name: str) -> Any:
    if name in NUMPY_TYPES:
        return getattr(np, NUMPY_TYPES[name])
    if name == "dtype":
        return np.dtype
    if name == "scalar":  # numpy.core.multiarray.scalar / numpy._core.multiarray.scalar
        return np.int64(0).__reduce__()[0]
    raise KeyError(name)


def stand_in(module: str, name: str) -> Any:
    """The inert local object for an allowed petastorm/pyspark global (``KeyError`` if none)."""
    if module == "petastorm.unischema":
        return {"Unischema": Unischema, "UnischemaField": UnischemaField}[name]
    if module == "petastorm.codecs":
        return {c.__name__: c for c in (ScalarCodec, NdarrayCodec, CompressedNdarrayCodec,
                                        CompressedImageCodec)}[name]  # fmt: skip
    return _SPARK[name]


# Every global a petastorm Unischema pickle may name: (module, name) -> resolver(module, name).
ALLOWED: dict[tuple[str, str], Callable[[str, str], Any]] = {
    **{("petastorm.unischema", n): stand_in for n in ("Unischema", "UnischemaField")},
    **{("petastorm.codecs", n): stand_in for n in ("ScalarCodec", "NdarrayCodec",
                                                   "CompressedNdarrayCodec", "CompressedImageCodec")},
    **{("pyspark.sql.types", n): stand_in for n in SPARK_TYPES},
    **{("numpy", n): _numpy_global for n in (*NUMPY_TYPES, "dtype")},
    **{(m, "scalar"): _numpy_global for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("collections", "OrderedDict"): lambda m, n: OrderedDict,
    ("decimal", "Decimal"): lambda m, n: Decimal,
    **{(b, n): lambda m, n: getattr(builtins, n) for b in ("builtins", "__builtin__") for n in _BUILTINS},
}  # fmt: skip


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a Unischema, resolving only ``ALLOWED`` globals (through ``resolve``, default:
    the stand-ins); any other global raises ``UnsafePickleError`` and is never imported."""

    def __init__(self, data: bytes, resolve: Callable[[str, str], Any] | None = None):
        super().__init__(io.BytesIO(data))
        self._resolve = resolve

    def find_class(self, module: str, name: str) -> Any:
        for legacy in _LEGACY_PACKAGES:  # petastorm's old package names, as petastorm maps them
            if module.startswith(legacy):
                module = "petastorm." + module[len(legacy):]
        if (module, name) not in ALLOWED:
            raise UnsafePickleError(
                f"the stored Unischema pickle names the global '{module}.{name}', which is not one "
                "of petastorm's schema, codec or type classes; refusing to load it (an untrusted "
                "dataset can run code through a pickle). fix: re-create the dataset's metadata with "
                "petastorm, or read its Parquet files without the Unischema (connector 'parquet')"
            )
        if self._resolve is not None:
            return self._resolve(module, name)
        return ALLOWED[(module, name)](module, name)


def load_unischema(data: bytes, resolve: Callable[[str, str], Any] | None = None) -> Any:
    """The Unischema in ``data`` (pickle bytes), loaded by ``RestrictedUnpickler``."""
    try:
        schema = RestrictedUnpickler(data, resolve).load()  # noqa: S301 - restricted to ALLOWED
    except PetastormDataError:
        raise
    except Exception as exc:  # truncated or malformed pickle, a stand-in used wrongly
        raise PetastormDataError(f"the stored Unischema pickle is unreadable: {exc!r}") from None
    if resolve is None and not isinstance(schema, Unischema):
        raise PetastormDataError(f"the stored Unischema pickle holds a {type(schema).__name__}, "
                                 "not a petastorm Unischema")  # fmt: skip
    return schema


# ---------------------------------------------------------------------------- Arrow types
def is_fixed(field: UnischemaField) -> bool:
    return all(d is not None for d in field.shape)


def value_type(field: UnischemaField) -> pa.DataType:
    """Arrow type of one element of ``field`` (its numpy dtype; Decimal as decimal128)."""
    dtype = field.numpy_dtype
    if dtype is Decimal:
        spark = getattr(field.codec, "_spark_type", None)
        return pa.decimal128(getattr(spark, "precision", 38), getattr(spark, "scale", 18))
    if np.dtype(dtype).kind in "mM" and np.datetime_data(np.dtype(dtype))[0] == "generic":
        dtype = np.dtype(dtype).str + "[ns]"  # petastorm hands out pandas (nanosecond) times
    return pa.from_numpy_dtype(np.dtype(dtype))


def arrow_type(field: UnischemaField) -> pa.DataType:
    """The Arrow type ``field`` decodes to: the element type for scalars, a fixed-shape tensor
    for fixed shapes, one list level per dimension otherwise."""
    element = value_type(field)
    if not field.shape:
        return element
    if is_fixed(field):
        return pa.fixed_shape_tensor(element, list(field.shape))
    for _ in field.shape:
        element = pa.list_(element)
    return element


def arrow_schema(fields: Sequence[UnischemaField]) -> pa.Schema:
    """The Arrow schema that decoded ``fields`` have (in this order)."""
    return pa.schema([pa.field(f.name, arrow_type(f), nullable=bool(f.nullable)) for f in fields])


# ---------------------------------------------------------------------------- column builders
def _validity(valid: np.ndarray) -> pa.Buffer | None:
    return None if valid.all() else pa.array(valid, pa.bool_()).buffers()[1]


def fixed_tensor_column(field: UnischemaField, stacked: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A FixedShapeTensorArray from ``stacked`` (rows × shape; null rows hold anything)."""
    typ = arrow_type(field)
    flat = pa.array(np.ascontiguousarray(stacked, dtype=np.dtype(field.numpy_dtype)).reshape(-1))
    storage = pa.Array.from_buffers(typ.storage_type, len(valid), [_validity(valid)], children=[flat])
    return pa.ExtensionArray.from_storage(typ, storage)


def nested_list_column(field: UnischemaField, values: Sequence[np.ndarray | None]) -> pa.Array:
    """One list level per dimension of ``field.shape`` (for shapes with ``None`` dimensions)."""
    ndim = len(field.shape)
    dtype = np.dtype(field.numpy_dtype)
    arrays = [np.asarray(v, dtype=dtype) if v is not None else np.zeros((0,) * ndim, dtype) for v in values]
    for a, v in zip(arrays, values, strict=True):
        if v is not None and a.ndim != ndim:
            raise PetastormDataError(f"field '{field.name}': a value of shape {a.shape} does not "
                                     f"match the Unischema shape {field.shape}")  # fmt: skip
    valid = np.array([v is not None for v in values], dtype=bool)
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, dtype)
    column: pa.Array = pa.array(flat, type=value_type(field))
    for level in range(ndim - 1, -1, -1):
        lengths = [np.full(int(np.prod(a.shape[:level], dtype=np.int64)), a.shape[level]) for a in arrays]
        counts = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int32)
        mask = pa.array(~valid) if level == 0 and not valid.all() else None
        column = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), column, mask=mask)
    return column


def column_from_arrays(field: UnischemaField, values: Sequence[Any], *, nan_is_null: bool = False) -> pa.Array:
    """The Arrow column for ``field`` from decoded values (numpy arrays/scalars or ``None``).
    ``nan_is_null`` reads float NaN as null (undoing a trip through pandas)."""
    if not field.shape:
        return pa.array([None if v is None else (v.item() if isinstance(v, np.generic) else v)
                         for v in values], type=value_type(field), from_pandas=nan_is_null)  # fmt: skip
    if not is_fixed(field):
        return nested_list_column(field, values)
    valid = np.array([v is not None for v in values], dtype=bool)
    stacked = np.zeros((len(values), *field.shape), dtype=np.dtype(field.numpy_dtype))
    for i, v in enumerate(values):
        if v is not None:
            if np.shape(v) != tuple(field.shape):
                raise PetastormDataError(f"field '{field.name}': a value of shape {np.shape(v)} "
                                         f"does not match the Unischema shape {field.shape}")  # fmt: skip
            stacked[i] = v
    return fixed_tensor_column(field, stacked, valid)
