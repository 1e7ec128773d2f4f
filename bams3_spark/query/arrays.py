"""The query engine's arrays: record columns as numpy, filter constants as Arrow, without pandas.

Built on :mod:`bams3_spark.arrays` (converting with ``pa.scalar`` /
``pa.array`` / ``to_numpy`` makes pyarrow import pandas, which costs a cold
``bams3 query --count`` 0.3-1 s).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from bams3_spark.arrays import bool_array, int_array, ints, string_array
from bams3_spark.exceptions import CorruptDatasetError

#: Kinds of filter values: Arrow int64, string and bool.
INT, STR, BOOL = "int", "str", "bool"


def int_values(column: pa.ChunkedArray | pa.Array, where: str) -> npt.NDArray[np.int64]:
    """Return an integer record column as an int64 numpy array; ``where`` names the chunk in errors."""
    try:
        return ints(column)
    except ValueError as exc:
        raise CorruptDatasetError(f"{where}: {exc}") from None


def const_array(values: Sequence[int | str | bool], kind: str) -> pa.Array:
    """Build an int64, string or bool array from Python values."""
    if kind == BOOL:
        return bool_array(np.array(values, dtype=bool))
    if kind == INT:
        return int_array(np.array(values, dtype=np.int64))
    return string_array([str(v) for v in values])
