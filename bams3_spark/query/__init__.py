"""Region queries on a BAMS3 dataset, with the semantics of ``samtools view``.

A query is planned from the manifest and the per-reference indexes alone
(FORMAT.md §6 and §9), then executed by reading only the chunk objects, and
only the columns, it needs, on a thread pool with results in region order.

Semantics, checked against samtools 1.16 by ``tests/test_query.py``:

* **Region strings** are parsed by :func:`bams3_spark.format.regions.parse_region`
  (samtools' rules; see its module for the coordinate glossary). A record
  matches a region ``[start, end)`` when its aligned span overlaps it:
  ``pos <= end and end_col > start`` (htslib's rule; unmapped placed reads
  cover one base).
* **Several regions** behave as ``samtools view`` without ``-M``: each region
  in the given order, records in file order within a region, and a record
  overlapping several regions is output (and counted) once per region.
* ``*`` selects the unplaced unmapped reads; ``.`` (or no region at all)
  selects every record of the dataset, in file order.
* **A BED file** (``regions_file``) behaves as ``samtools view --regions-file``
  (``-M -L``): the intervals of each reference are merged, each matching record
  is output once, in file order (header order of references). With region
  strings too, the selection is the intersection of the BED intervals with
  the regions, as samtools computes it.

Where samtools only warns and carries on (unknown reference, malformed
region), this module raises :class:`~bams3_spark.exceptions.RegionError`.

I/O: a chunk read for every column is one ranged GET of the whole object,
verified by size and SHA-256. A projection (``--count`` reads only ``pos`` and
``end``) is one GET of the object's tail (the Parquet footer) plus one GET per
run of adjacent needed column chunks, protected by the Parquet page CRCs. A
``count`` answers chunks lying entirely inside a region from the index alone.
"""

from bams3_spark.query.engine import Query
from bams3_spark.query.filter import Predicate, RecordFilter, compile_filter
from bams3_spark.query.output import output_format, sam_bytes, write_sam
from bams3_spark.query.plan import (
    ALL_RECORDS,
    DEFAULT_WORKERS,
    ChunkTask,
    QueryPlan,
    RegionsArg,
    Selection,
    plan_query,
    shard_indices,
)

__all__ = [
    "ALL_RECORDS",
    "DEFAULT_WORKERS",
    "ChunkTask",
    "Predicate",
    "Query",
    "QueryPlan",
    "RecordFilter",
    "RegionsArg",
    "Selection",
    "compile_filter",
    "output_format",
    "plan_query",
    "sam_bytes",
    "shard_indices",
    "write_sam",
]
