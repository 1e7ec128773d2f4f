"""The BAMS3 record schema: the single source of truth for chunk columns.

Every chunk object stores one record per row with the columns below, in this
order. Names and coordinates are SAM's (see FORMAT.md, "Record schema"):
``pos`` is 1-based (0 = no position), ``end`` is the last reference base
covered, 1-based inclusive, computed exactly as htslib's ``bam_endpos``
(an unmapped or zero-length alignment covers one base at ``pos``).

All integer columns are signed 32-bit so that the same schema is valid in
Arrow, Parquet and Spark (Spark has no unsigned types).
"""

from __future__ import annotations

import pyarrow as pa

#: Columns in SAM order, plus ``end`` after ``pos``. ``tags`` holds the SAM
#: optional fields exactly as ``samtools view`` prints them (tab-separated),
#: except that ``f`` and ``B:f`` values keep every bit (see FORMAT.md).
RECORD_FIELDS: tuple[pa.Field, ...] = (
    pa.field("qname", pa.string(), nullable=False),
    pa.field("flag", pa.int32(), nullable=False),
    pa.field("rname", pa.string(), nullable=False),
    pa.field("pos", pa.int32(), nullable=False),
    pa.field("end", pa.int32(), nullable=False),
    pa.field("mapq", pa.int32(), nullable=False),
    pa.field("cigar", pa.string(), nullable=False),
    pa.field("rnext", pa.string(), nullable=False),
    pa.field("pnext", pa.int32(), nullable=False),
    pa.field("tlen", pa.int32(), nullable=False),
    pa.field("seq", pa.string(), nullable=False),
    pa.field("qual", pa.string(), nullable=False),
    pa.field("tags", pa.string(), nullable=False),
)

RECORD_SCHEMA: pa.Schema = pa.schema(list(RECORD_FIELDS))
COLUMNS: tuple[str, ...] = tuple(f.name for f in RECORD_FIELDS)

#: The eleven mandatory SAM fields in SAM order (``end`` is derived, not SAM).
SAM_COLUMNS: tuple[str, ...] = (
    "qname",
    "flag",
    "rname",
    "pos",
    "mapq",
    "cigar",
    "rnext",
    "pnext",
    "tlen",
    "seq",
    "qual",
)

#: Columns a positional job (count, coverage without mate correction) needs.
POSITION_COLUMNS: tuple[str, ...] = ("rname", "pos", "end", "flag", "mapq")

INT_COLUMNS: frozenset[str] = frozenset(f.name for f in RECORD_FIELDS if pa.types.is_integer(f.type))


def project(columns: list[str] | tuple[str, ...] | None) -> list[str]:
    """Validate a column projection and return it in schema order.

    Args:
        columns: Wanted column names, or None for every column.

    Returns:
        The names, deduplicated and in schema order.

    Raises:
        ValueError: If a name is not a record column.
    """
    if columns is None:
        return list(COLUMNS)
    unknown = sorted(set(columns) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(unknown)}; columns are {', '.join(COLUMNS)}")
    wanted = set(columns)
    return [c for c in COLUMNS if c in wanted]


def subschema(columns: list[str] | tuple[str, ...]) -> pa.Schema:
    """Return the record schema restricted to ``columns`` (schema order kept)."""
    return pa.schema([RECORD_SCHEMA.field(c) for c in project(columns)])
