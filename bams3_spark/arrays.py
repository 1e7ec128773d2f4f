"""Arrow arrays to and from numpy, without pandas: what the engines' hot paths convert with.

pyarrow imports pandas (about 0.3 s and 35 MB per process) the first time it
converts Python or numpy values: ``pa.array``, ``pa.scalar``,
``Array.to_numpy`` and a Python scalar given to a compute function all go
through its pandas shim. The engines need nothing from pandas, so they read
column values as views of the Arrow buffers and build arrays over numpy
buffers with these helpers; a command that only counts never loads pandas.
Record columns are non-null (FORMAT.md), so a values buffer is all there is;
a column that breaks that raises ``ValueError``, which the engines report as
a damaged dataset naming it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


def _one(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if not isinstance(column, pa.ChunkedArray):
        return column
    # combine_chunks copies even a single chunk; a chunk's column is one chunk.
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def ints(column: pa.ChunkedArray | pa.Array) -> I64:
    """An integer column (any width, plain or dictionary-encoded) as int64 numpy.

    Raises:
        ValueError: For nulls, or a column that is not of integers.
    """
    arr = _one(column)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if arr.null_count or not pa.types.is_integer(arr.type):
        raise ValueError(f"expected a non-null integer column, got {arr.type} with {arr.null_count} null(s)")
    width = np.dtype(f"{'u' if pa.types.is_unsigned_integer(arr.type) else 'i'}{arr.type.bit_width // 8}")
    values = np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset : arr.offset + len(arr)]
    return values.astype(np.int64)


def floats(column: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.float64]:
    """A non-null float64 array (e.g. a cast's result) as numpy, read from its buffer.

    Raises:
        ValueError: For nulls, or an array that is not of float64.
    """
    arr = _one(column)
    if arr.null_count or not pa.types.is_float64(arr.type):
        raise ValueError(f"expected a non-null float64 array, got {arr.type} with {arr.null_count} null(s)")
    return np.frombuffer(arr.buffers()[1], dtype=np.float64)[arr.offset : arr.offset + len(arr)]


def bools(column: pa.ChunkedArray | pa.Array) -> Bools:
    """A non-null boolean array (a compute result) as numpy, unpacked from its bit buffer.

    Raises:
        ValueError: For nulls.
    """
    arr = _one(column)
    if arr.null_count:
        raise ValueError("expected a non-null boolean array")
    bits = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
    return np.unpackbits(bits, bitorder="little")[arr.offset : arr.offset + len(arr)].astype(bool)


def strings(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A string column as one plain (large_)string array: no copy for a one-chunk plain column.

    Raises:
        ValueError: For nulls.
    """
    arr = _one(column)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.large_string())
    if arr.null_count:
        raise ValueError("string column contains nulls; BAMS3 record columns are non-null")
    return arr


def encoded(column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, I64]:
    """A string column as (distinct values, index of each row's value): as stored, or encoded here.

    A dictionary-encoded column (e.g. read with
    :func:`~bams3_spark.format.chunk.decode_chunk`'s ``dictionary``) gives its
    own dictionary and indices, no string per row made; a plain one is
    dictionary-encoded. The values may repeat or go unused.

    Raises:
        ValueError: For nulls.
    """
    if isinstance(column, pa.ChunkedArray) and column.num_chunks > 1:
        column = column.unify_dictionaries()  # one dictionary for all chunks
    arr = _one(column)
    if not pa.types.is_dictionary(arr.type):
        arr = strings(arr).dictionary_encode()
    if arr.null_count:
        raise ValueError("string column contains nulls; BAMS3 record columns are non-null")
    return strings(arr.dictionary), ints(arr.indices)


def int_array(values: npt.ArrayLike, type_: pa.DataType | None = None) -> pa.Array:
    """Integers as an Arrow array (int64 unless ``type_``) over a numpy buffer, e.g. indices for ``take``."""
    t = pa.int64() if type_ is None else type_
    a = np.ascontiguousarray(values, dtype=np.dtype(f"i{t.bit_width // 8}"))
    return pa.Array.from_buffers(t, len(a), [None, pa.py_buffer(a)])


def bool_array(mask: Bools) -> pa.Array:
    """A numpy mask as an Arrow boolean array, e.g. for ``filter``."""
    return pa.Array.from_buffers(
        pa.bool_(), len(mask), [None, pa.py_buffer(np.packbits(mask, bitorder="little"))]
    )


def string_array(values: Sequence[str]) -> pa.Array:
    """Python strings as an Arrow string array (for ``is_in`` value sets and constants)."""
    encoded = [v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return pa.Array.from_buffers(
        pa.string(), len(values), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(encoded))]
    )


def int_scalar(value: int, type_: pa.DataType | None = None) -> pa.Scalar:
    """An integer scalar (int64 unless ``type_``; ``pa.scalar`` would load pandas), e.g. an operand."""
    return int_array([value], type_)[0]


def string_scalar(text: str, type_: pa.DataType | None = None) -> pa.Scalar:
    """A string scalar (``pa.scalar`` of a Python value would load pandas), e.g. a join separator."""
    arr = string_array([text])
    return (arr if type_ is None or type_ == pa.string() else arr.cast(type_))[0]


__all__ = [
    "bool_array", "bools", "floats", "int_array", "int_scalar", "ints",
    "string_array", "string_scalar", "strings",
]
