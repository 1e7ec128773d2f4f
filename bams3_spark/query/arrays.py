"""Arrow arrays to and from numpy buffers, without pandas.

Converting Python or numpy values with ``pa.scalar`` / ``pa.array`` /
``to_numpy`` makes pyarrow import pandas (its pandas shim checks every value),
which costs a cold ``bams3 query --count`` 0.3-1 s. Masks and constants are
therefore built from raw buffers, and column values read as zero-copy views.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from bams3_spark.exceptions import CorruptDatasetError

#: Kinds of filter values: Arrow int64, string and bool.
INT, STR, BOOL = "int", "str", "bool"


def int_values(column: pa.ChunkedArray | pa.Array, where: str) -> npt.NDArray[np.int64]:
    """Return an int32 record column as an int64 numpy array, without pandas."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if arr.null_count:
        raise CorruptDatasetError(f"{where}: null values in a non-nullable column")
    raw = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr), offset=arr.offset * 4)
    return raw.astype(np.int64)


def bool_array(mask: npt.NDArray[np.bool_]) -> pa.Array:
    """Build an Arrow boolean array from a numpy mask."""
    return pa.Array.from_buffers(
        pa.bool_(), len(mask), [None, pa.py_buffer(np.packbits(mask, bitorder="little"))]
    )


def const_array(values: Sequence[int | str | bool], kind: str) -> pa.Array:
    """Build an int64, string or bool array from Python values."""
    if kind == BOOL:
        return bool_array(np.array(values, dtype=bool))
    if kind == INT:
        return pa.Array.from_buffers(
            pa.int64(), len(values), [None, pa.py_buffer(np.array(values, dtype=np.int64).tobytes())]
        )
    encoded = [str(v).encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return pa.Array.from_buffers(
        pa.string(), len(values), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(encoded))]
    )
