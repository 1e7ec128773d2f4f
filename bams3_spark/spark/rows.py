"""Rows of planned chunks as Arrow batches of a Spark schema: the Python side of Spark scans.

Used in tasks by the ``bams3`` data source's ``read()`` and by
:func:`~bams3_spark.spark.read.read_bams3`'s Python scan path (``mapInArrow``
over chunk descriptions, for stores Spark's own Parquet reader cannot open).
Chunks are read through :class:`~bams3_spark.dataset.chunks.ChunkRef`, so the
integrity rules (size, SHA-256, page CRCs, record count) are the dataset's own.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bams3_spark.spark.schema import SAMPLE_COLUMN

if TYPE_CHECKING:
    import pyarrow as pa

    from bams3_spark.query.filter import Predicate
    from bams3_spark.spark.scan import PlannedChunk

#: The one column of the DataFrame of chunk descriptions the Python path maps over.
PAYLOAD_COLUMN = "chunk"


def chunk_table(
    chunk: PlannedChunk,
    columns: Sequence[str],
    arrow_schema: pa.Schema,
    storage_options: Mapping[str, Any],
    predicates: Sequence[Predicate] = (),
) -> pa.Table | None:
    """Read a planned chunk's matching rows with the output columns (``sample`` included).

    Args:
        chunk: The chunk and the region intervals its rows must overlap.
        columns: Output column names (record columns and ``sample``), one per
            field of ``arrow_schema``.
        arrow_schema: The output schema (the Spark schema's Arrow form).
        storage_options: fsspec options.
        predicates: Row filters still to apply (the data source's pushed filters).

    Returns:
        The rows, or None when none matches.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from bams3_spark.dataset.chunks import ChunkRef
    from bams3_spark.format.regions import overlap_mask
    from bams3_spark.format.schema import COLUMNS
    from bams3_spark.io.storage import shared_storage

    needed = {c for c in columns if c != SAMPLE_COLUMN}
    needed |= {p.column for p in predicates}
    if chunk.intervals is not None:
        needed |= {"pos", "end"}
    table: pa.Table | None = None
    if needed:
        storage = shared_storage(chunk.dataset_url, **storage_options)
        table = ChunkRef(storage, chunk.rname, chunk.info).read([c for c in COLUMNS if c in needed])
        mask = None
        for pred in predicates:
            m = pred.mask(table.column(pred.column))
            mask = m if mask is None else pc.and_(mask, m)
        if chunk.intervals is not None:
            pos = table.column("pos").to_numpy().astype(np.int64)
            end = table.column("end").to_numpy().astype(np.int64)
            inside = pa.array(overlap_mask(pos, end, chunk.intervals))
            mask = inside if mask is None else pc.and_(mask, inside)
        if mask is not None:
            table = table.filter(mask)
        rows = table.num_rows
    else:
        # Only the sample column, and every row matches: the index's record
        # count (checked against the manifest) is the answer.
        rows = chunk.info.records
    if rows == 0:
        return None
    arrays = []
    for name in columns:
        if name == SAMPLE_COLUMN:
            arrays.append(pa.chunked_array([pa.repeat(pa.scalar(chunk.sample, pa.string()), rows)]))
        else:
            assert table is not None
            arrays.append(table.column(name))
    return pa.Table.from_arrays(arrays, schema=arrow_schema)


def chunk_batches(
    chunk: PlannedChunk,
    columns: Sequence[str],
    arrow_schema: pa.Schema,
    storage_options: Mapping[str, Any],
    batch_rows: int,
    predicates: Sequence[Predicate] = (),
) -> Iterator[pa.RecordBatch]:
    """:func:`chunk_table` as record batches of at most ``batch_rows`` rows."""
    table = chunk_table(chunk, columns, arrow_schema, storage_options, predicates)
    if table is not None:
        yield from table.to_batches(max_chunksize=batch_rows)


def encode_payloads(chunks: Iterable[PlannedChunk]) -> list[bytes]:
    """Chunk descriptions as bytes, the rows of the DataFrame the Python scan maps over."""
    return [pickle.dumps(c, protocol=pickle.HIGHEST_PROTOCOL) for c in chunks]


class PayloadReader:
    """The ``mapInArrow`` function of the Python scan path: descriptions in, records out.

    Holds configuration only (pickled into every task); storage clients are
    opened in the task.
    """

    def __init__(
        self,
        columns: Sequence[str],
        arrow_schema: pa.Schema,
        storage_options: Mapping[str, Any],
        batch_rows: int,
    ) -> None:
        self.columns = tuple(columns)
        self.arrow_schema = arrow_schema
        self.storage_options = dict(storage_options)
        self.batch_rows = batch_rows

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for payload in batch.column(0).to_pylist():
                chunk = pickle.loads(payload)  # noqa: S301 - written by this package's driver
                yield from chunk_batches(
                    chunk, self.columns, self.arrow_schema, self.storage_options, self.batch_rows
                )
