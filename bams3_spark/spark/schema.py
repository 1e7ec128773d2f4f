"""The Spark schema of BAMS3 records: the record schema (FORMAT.md §4) plus ``sample``.

One definition for every Spark reader (``read_bams3``'s two scan paths and the
``bams3`` data source). pyspark's SQL types exist in every supported release;
nothing here needs a newer API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bams3_spark.exceptions import InvalidArgumentError

if TYPE_CHECKING:
    import pyarrow as pa

#: The column added to the record schema: the dataset's sample name.
SAMPLE_COLUMN = "sample"


def record_columns(columns: Sequence[str] | None) -> tuple[list[str], bool]:
    """Split a projection into record columns (schema order) and whether ``sample`` is wanted.

    Raises:
        InvalidArgumentError: For an empty list or an unknown name.
    """
    from bams3_spark.format.schema import COLUMNS, project

    if columns is None:
        return list(COLUMNS), True
    wanted = list(dict.fromkeys(columns))
    if not wanted:
        raise InvalidArgumentError("bams3: empty column list")
    records = [c for c in wanted if c != SAMPLE_COLUMN]
    try:
        names = project(records)
    except ValueError as exc:
        raise InvalidArgumentError(f"bams3: {exc}, {SAMPLE_COLUMN}") from None
    return names, SAMPLE_COLUMN in wanted


def bams3_schema(columns: Sequence[str] | None = None) -> Any:
    """Return the Spark schema of BAMS3 records, or of a projection of it.

    The record columns come from ``RECORD_SCHEMA`` (FORMAT.md, "Record schema")
    converted with pyspark's own Arrow mapping, followed by ``sample``.

    Args:
        columns: Column names to keep (record columns and/or ``sample``), in
            any order; None for every column. The result is in schema order.

    Returns:
        A ``pyspark.sql.types.StructType``.

    Raises:
        InvalidArgumentError: If a name is not a column.
    """
    from pyspark.sql.pandas.types import from_arrow_schema
    from pyspark.sql.types import StringType, StructField

    from bams3_spark.format.schema import subschema

    records, with_sample = record_columns(columns)
    schema = from_arrow_schema(subschema(records))
    if with_sample:
        schema = schema.add(StructField(SAMPLE_COLUMN, StringType(), nullable=False))
    return schema


def arrow_schema(schema: Any) -> pa.Schema:
    """The Arrow schema Spark expects of batches for a Spark ``schema`` (string, int32, nullability)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema, timezone="UTC") if _takes_timezone() else to_arrow_schema(schema)


def _takes_timezone() -> bool:
    import inspect

    from pyspark.sql.pandas.types import to_arrow_schema

    return "timezone" in inspect.signature(to_arrow_schema).parameters
