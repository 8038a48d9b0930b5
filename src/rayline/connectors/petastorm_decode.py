"""Decoding petastorm's stored columns into Arrow columns, on rayline's side of the bridge.

Each codec decodes its Arrow column into an Arrow column (``decode_column``):

=========================  =======================================================================
``ScalarCodec``            the native column, cast to the field's numpy dtype
``NdarrayCodec``           ``np.save`` bytes; equal-size values become one strided view (no loop)
``CompressedNdarrayCodec`` ``np.savez_compressed`` zips; the member is raw-inflated with ``zlib``
``CompressedImageCodec``   PNG/JPEG through Pillow (optional: a clear error without it)
=========================  =======================================================================

The schema, the codec stand-ins and the Arrow column builders live in ``petastorm_codecs.py``
(which the bridge process loads on its own); this module is only needed where rayline reads.

Example::

    schema = load_unischema(pq.read_metadata(".../_common_metadata").metadata[UNISCHEMA_KEY])
    column = decode_column(schema.fields["patch"], table.column("patch"))
"""

from __future__ import annotations

import ast
import io
import struct
import zlib

import numpy as np
import pyarrow as pa

from rayline.connectors.petastorm_codecs import (
    CompressedImageCodec,
    CompressedNdarrayCodec,
    NdarrayCodec,
    PetastormDataError,
    ScalarCodec,
    UnischemaField,
    column_from_arrays,
    fixed_tensor_column,
    is_fixed,
    value_type,
)


# ---------------------------------------------------------------------------- decoding
def decode_column(field: UnischemaField, column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Decode one stored column of ``field`` (its codec's bytes) into its Arrow type."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    codec = field.codec
    if codec is None or isinstance(codec, ScalarCodec):
        target = value_type(field)
        return column if column.type == target else column.cast(target)
    if isinstance(codec, NdarrayCodec | CompressedNdarrayCodec):
        if not pa.types.is_binary(column.type) and not pa.types.is_large_binary(column.type):
            column = column.cast(pa.large_binary())
        inflate = isinstance(codec, CompressedNdarrayCodec)
        try:
            return _decode_npy_column(field, column, inflate)
        except (ValueError, TypeError, zlib.error, struct.error, SyntaxError) as exc:
            raise PetastormDataError(f"field '{field.name}' ({type(codec).__name__}): a value "
                                     f"is not a valid encoded ndarray: {exc}") from None  # fmt: skip
    if isinstance(codec, CompressedImageCodec):
        return column_from_arrays(field, [None if v is None else decode_image(field, v)
                                          for v in column.to_pylist()])  # fmt: skip
    raise PetastormDataError(f"field '{field.name}': unknown codec {type(codec).__name__}")


def _binary_parts(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data bytes) of a binary or large_binary array, zero-copy."""
    kind = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    _, offsets_buf, data_buf = column.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=kind)[column.offset : column.offset + len(column) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return offsets.astype(np.int64), data


def _decode_npy_column(field: UnischemaField, column: pa.Array, inflate: bool) -> pa.Array:
    valid = np.asarray(column.is_valid()) if column.null_count else np.ones(len(column), dtype=bool)
    offsets, data = _binary_parts(column)
    starts, stops = offsets[:-1][valid], offsets[1:][valid]
    if inflate:  # one zlib call per value (C speed), then the same path as plain .npy
        blobs = [inflate_npz_member(data[a:b]) for a, b in zip(starts, stops, strict=True)]
        sizes = np.array([len(b) for b in blobs], dtype=np.int64)
        data = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        stops = np.cumsum(sizes)
        starts = stops - sizes
    if is_fixed(field) and len(starts):
        stacked = _stack_equal_npy(field, data, starts, stops)
        if stacked is not None:
            full = np.zeros((len(valid), *field.shape), dtype=stacked.dtype)
            full[valid] = stacked
            return fixed_tensor_column(field, full, valid)
    it = iter(read_npy(field, data[a:b]) for a, b in zip(starts, stops, strict=True))
    return column_from_arrays(field, [next(it) if ok else None for ok in valid])


def _stack_equal_npy(field: UnischemaField, data: np.ndarray, starts: np.ndarray,
                     stops: np.ndarray) -> np.ndarray | None:
    """All values as one (rows × shape) array through a strided view, when every value has the
    same length and header (the common case); ``None`` otherwise."""
    length = int(stops[0] - starts[0])
    if not (np.all(stops - starts == length) and np.all(np.diff(starts) == length)):
        return None
    rows = data[int(starts[0]) : int(starts[0]) + length * len(starts)].reshape(len(starts), length)
    head_len, dtype, fortran, shape = npy_header(field, rows[0].tobytes())
    if fortran or tuple(shape) != tuple(field.shape) or not np.all(rows[:, :head_len] == rows[0, :head_len]):
        return None
    body = np.ascontiguousarray(rows[:, head_len:])
    return body.view(dtype).reshape(len(starts), *shape).astype(np.dtype(field.numpy_dtype), copy=False)


def npy_header(field: UnischemaField, blob: bytes) -> tuple[int, np.dtype, bool, tuple[int, ...]]:
    """(header length, dtype, fortran_order, shape) of an ``.npy`` blob; object arrays refused."""
    if blob[:6] != b"\x93NUMPY":
        raise PetastormDataError(f"field '{field.name}': a value is not .npy data (no NUMPY magic)")
    major = blob[6]
    size_len = 2 if major == 1 else 4
    (hlen,) = struct.unpack("<H" if size_len == 2 else "<I", blob[8 : 8 + size_len])
    start = 8 + size_len
    header = ast.literal_eval(blob[start : start + hlen].decode("utf8" if major >= 3 else "latin1"))
    dtype = np.dtype(header["descr"])
    if dtype.hasobject:
        raise PetastormDataError(f"field '{field.name}': a value is an object array (it would "
                                 "need pickle to load); refusing it")  # fmt: skip
    return start + hlen, dtype, bool(header["fortran_order"]), tuple(header["shape"])


def read_npy(field: UnischemaField, blob: np.ndarray | bytes) -> np.ndarray:
    """One ``.npy`` value (any shape or order), like ``np.load(allow_pickle=False)``."""
    raw = bytes(blob)
    head_len, dtype, fortran, shape = npy_header(field, raw)
    flat = np.frombuffer(raw, dtype=dtype, offset=head_len, count=int(np.prod(shape, dtype=np.int64)))
    return flat.reshape(shape, order="F" if fortran else "C")


def inflate_npz_member(blob: np.ndarray | bytes) -> bytes:
    """The first member of a ``np.savez_compressed`` zip: its local header parsed by hand,
    the deflate stream inflated raw (``zlib``, wbits -15), the CRC checked."""
    raw = bytes(blob)
    if raw[:4] != b"PK\x03\x04":
        raise ValueError("not a zip (np.savez_compressed) value")
    flags, method, crc, csize, usize, name_len, extra_len = struct.unpack("<2xHH4xIIIHH", raw[4:30])
    start = 30 + name_len + extra_len
    if method == 0:  # stored
        if usize == 0xFFFFFFFF:  # zip64: the sizes are in the extra field
            usize = struct.unpack("<Q", raw[30 + name_len + 4 : 30 + name_len + 12])[0]
        out = raw[start : start + usize]
    elif method == 8:
        inflater = zlib.decompressobj(-15)
        out = inflater.decompress(raw[start:])
        if not inflater.eof:
            raise ValueError("the deflate stream is truncated")
    else:
        raise ValueError(f"zip compression method {method} is not deflate or stored")
    if not flags & 0x08 and zlib.crc32(out) != crc:
        raise ValueError("the zip member's CRC does not match (corrupt value)")
    return out


def decode_image(field: UnischemaField, blob: bytes) -> np.ndarray:
    """One PNG/JPEG value as petastorm returns it: (H, W) grey or (H, W, 3) RGB, via Pillow."""
    try:
        from PIL import Image
    except ImportError:
        raise PetastormDataError(
            f"field '{field.name}' holds {getattr(field.codec, '_image_codec', '?')[1:]} images "
            "(CompressedImageCodec), which need Pillow to decode. fix: pip install pillow, or "
            f"read the other columns: columns=[...] without '{field.name}'"
        ) from None
    with Image.open(io.BytesIO(blob)) as image:
        return np.asarray(image, dtype=np.dtype(field.numpy_dtype))
