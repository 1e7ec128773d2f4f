"""Query output: records as SAM text (exactly ``samtools view``'s), and the output format of a path.

BAM output goes through :func:`bams3_spark.bam.writer.write_bam`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import IO, Any

import pyarrow as pa

from bams3_spark.arrays import string_scalar
from bams3_spark.exceptions import InvalidArgumentError
from bams3_spark.format.sam import sam_lines

#: Records formatted at a time by :func:`write_sam`.
SAM_SLICE_ROWS = 16_384


def sam_bytes(table: pa.Table) -> bytes | memoryview:
    """Format records as SAM text (one line per record, newline-terminated)."""
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return b""
    lines = sam_lines(table)
    newline, nothing = string_scalar("\n", lines.type), string_scalar("", lines.type)
    with_nl = pc.binary_join_element_wise(lines, newline, nothing)
    if isinstance(with_nl, pa.ChunkedArray):
        with_nl = with_nl.combine_chunks()
    offsets = with_nl.buffers()[1]
    data = with_nl.buffers()[2]
    width = 8 if pa.types.is_large_string(with_nl.type) else 4
    off = memoryview(offsets).cast("q" if width == 8 else "i")
    first, last = off[with_nl.offset], off[with_nl.offset + len(with_nl)]
    return memoryview(data)[first:last]


def write_sam(out: IO[bytes] | IO[str], tables: Iterable[pa.Table], header: str | None = None) -> int:
    """Write SAM text (optional header, then records) to a stream; return the record count."""
    binary = not isinstance(out, io.TextIOBase)
    target: Any = out
    if not binary and hasattr(out, "buffer"):
        out.flush()
        target, binary = out.buffer, True

    def put(data: bytes | memoryview | str) -> None:
        if binary:
            target.write(data.encode() if isinstance(data, str) else data)
        else:
            target.write(data if isinstance(data, str) else bytes(data).decode())

    if header:
        put(header)
    n = 0
    for table in tables:
        # Formatting makes several text-sized intermediates: in slices they
        # stay in cache and a chunk never needs them all at once.
        for offset in range(0, table.num_rows, SAM_SLICE_ROWS):
            put(sam_bytes(table.slice(offset, SAM_SLICE_ROWS)))
        n += table.num_rows
    target.flush()
    return n


def output_format(path: str) -> str:
    """Return ``sam`` or ``bam`` from an output path's extension.

    Raises:
        InvalidArgumentError: For another extension.
    """
    lower = path.lower()
    if lower == "-" or lower.endswith(".sam"):
        return "sam"
    if lower.endswith(".bam"):
        return "bam"
    raise InvalidArgumentError(f"{path}: unsupported output format (use a .sam or .bam file name)")
