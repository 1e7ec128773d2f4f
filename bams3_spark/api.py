"""The library API: :func:`open_dataset` and :class:`Dataset`, a dataset with the engines on it.

This module sits above the engines (it imports :mod:`bams3_spark.query`),
so the dataset layer below never needs to know about them; the engines work
on :class:`~bams3_spark.dataset.reader.DatasetReader`, of which
:class:`Dataset` is a subclass.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

import pyarrow as pa

from bams3_spark.bam.writer import write_bam
from bams3_spark.dataset.reader import DatasetReader
from bams3_spark.genotype.engine import genotype_table
from bams3_spark.genotype.options import GenotypeOptions
from bams3_spark.genotype.sites import Sites
from bams3_spark.io.storage import replacing
from bams3_spark.query.engine import Query
from bams3_spark.query.output import write_sam
from bams3_spark.query.plan import QueryPlan, RegionsArg, plan_query

__all__ = ["Dataset", "genotype", "open_dataset"]


class Dataset(DatasetReader):
    """An open BAMS3 dataset: its records, regions and metadata, with region queries.

    Use :func:`open_dataset` to create one. Instances pickle (configuration
    only), so they can be shipped to Spark executors.
    """

    def plan(
        self, regions: RegionsArg = None, *, regions_file: str | None = None, workers: int = 16
    ) -> QueryPlan:
        """Plan a region query without reading any chunk (see :meth:`QueryPlan.explain`).

        Args:
            regions: Region strings (``chr1:1,000-2,000``, ``{HLA-A*01:01}``,
                ``*``), :class:`Region` objects, or None / ``.`` for every record.
            regions_file: BED file, as ``samtools view --regions-file``.
            workers: Threads used to fetch the reference indexes.
        """
        # A remote BED file is read with the dataset's storage options.
        remote = regions_file is not None and "://" in regions_file
        return plan_query(self, regions, regions_file, workers, **(self.storage.options if remote else {}))

    def query_batches(
        self,
        regions: RegionsArg = None,
        columns: Sequence[str] | None = None,
        filter: str | None = None,
        workers: int = 16,
        *,
        regions_file: str | None = None,
    ) -> Iterator[pa.Table]:
        """Yield the records of a region query chunk by chunk, in ``samtools view`` order.

        Several regions are answered one after the other, in the given order;
        a record overlapping two regions comes twice, as with ``samtools view``.
        Chunks are read by ``workers`` threads; tables still come in order.

        Args:
            regions: See :meth:`plan`.
            columns: Columns to return (None: every record column).
            filter: Filter expression such as ``"mapq >= 30 and flag & 1024 == 0"``
                (see :func:`bams3_spark.query.filter.compile_filter`).
            workers: Concurrent chunk reads.
            regions_file: BED file, as ``samtools view --regions-file``.

        Raises:
            RegionError: For a malformed region or an unknown reference.
            FilterError: For a bad filter expression.
            ChecksumError, CorruptDatasetError: For damaged chunks.
            OSError: For storage failures.
        """
        plan = self.plan(regions, regions_file=regions_file, workers=workers)
        _warn_all(plan.warnings)
        return Query(plan, columns, filter).tables(workers)

    def query(
        self,
        regions: RegionsArg = None,
        columns: Sequence[str] | None = None,
        filter: str | None = None,
        workers: int = 16,
        *,
        regions_file: str | None = None,
    ) -> pa.Table:
        """Return the records of a region query as one Arrow table.

        Same arguments and order as :meth:`query_batches`.
        """
        plan = self.plan(regions, regions_file=regions_file, workers=workers)
        _warn_all(plan.warnings)
        return Query(plan, columns, filter).table(workers)

    def count(
        self,
        regions: RegionsArg = None,
        filter: str | None = None,
        workers: int = 16,
        *,
        regions_file: str | None = None,
    ) -> int:
        """Count the records of a region query, as ``samtools view -c`` does.

        Chunks lying entirely inside a region are counted from the index;
        the others are read for ``pos`` and ``end`` only (plus the filter's columns).
        """
        plan = self.plan(regions, regions_file=regions_file, workers=workers)
        _warn_all(plan.warnings)
        return Query(plan, None, filter).count(workers)

    def to_sam(
        self,
        out: str | os.PathLike[str] | IO[str] | IO[bytes],
        regions: RegionsArg = None,
        *,
        header: bool = True,
        filter: str | None = None,
        workers: int = 16,
        regions_file: str | None = None,
    ) -> int:
        """Write the records of a query (default: all) as SAM text; return how many.

        Args:
            out: Output path, or a text or binary stream (e.g. ``sys.stdout``).
            regions: See :meth:`plan`.
            header: Write the SAM header first (``samtools view -h --no-PG``).
            filter: See :meth:`query_batches`.
            workers: Concurrent chunk reads.
            regions_file: BED file, as ``samtools view --regions-file``.
        """
        tables = self.query_batches(regions, None, filter, workers, regions_file=regions_file)
        text = self.header if header else None
        if isinstance(out, (str, os.PathLike)):
            with replacing(out) as tmp, open(tmp, "wb") as fh:
                return write_sam(fh, tables, text)
        return write_sam(out, tables, text)

    def to_bam(
        self,
        path: str | os.PathLike[str],
        regions: RegionsArg = None,
        *,
        filter: str | None = None,
        workers: int = 16,
        regions_file: str | None = None,
    ) -> int:
        """Write the records of a query (default: all) as a BAM file; return how many.

        The BAM has the dataset's header; the export of a whole dataset, or of
        regions given in coordinate order without overlaps, is coordinate
        sorted and can be indexed with ``samtools index``.
        """
        tables = self.query_batches(regions, None, filter, workers, regions_file=regions_file)
        return write_bam(os.fspath(path), self.header, tables)

    def genotype(
        self,
        sites: str | Sites,
        options: GenotypeOptions | None = None,
        *,
        others: Sequence[DatasetReader | str] = (),
        workers: int | str | None = 1,
        **counting: Any,
    ) -> pa.Table:
        """Allele counts at sites, as ``samtools mpileup -B`` counts them (see :func:`genotype`).

        Args:
            sites: BED or VCF file (or :class:`Sites`).
            options: Counting options; or give them as keywords
                (``min_base_quality=20``, ``ignore_overlaps=True``...).
            others: More datasets counted in the same call (rows follow this one's).
            workers: Worker processes (``"auto"``: one per core).
        """
        return genotype([self, *others], sites, options, workers=workers, **counting)


def open_dataset(url: str, **storage_options: Any) -> Dataset:
    """Open a BAMS3 dataset.

    Args:
        url: Dataset prefix: local path, ``file://``, ``s3://bucket/prefix``...
        **storage_options: fsspec options (``endpoint_url``, ``anon``, ``profile``...).

    Returns:
        The dataset (only its manifest has been read).

    Raises:
        NotADatasetError, IncompleteDatasetError, UnsupportedVersionError,
        CorruptDatasetError: For a missing, incomplete, newer or damaged dataset.
        OSError: For storage failures.
    """
    return Dataset.open(url, **storage_options)


def genotype(
    datasets: DatasetReader | str | Sequence[DatasetReader | str],
    sites: str | Sites,
    options: GenotypeOptions | None = None,
    *,
    workers: int | str | None = 1,
    storage_options: dict[str, Any] | None = None,
    **counting: Any,
) -> pa.Table:
    """Allele counts of one or many datasets at sites (BED bases or VCF records), as one Arrow table.

    Counts are those read off ``samtools mpileup -B`` (options and defaults:
    :class:`~bams3_spark.genotype.options.GenotypeOptions`). Columns:
    ``sample chrom pos depth A C G T N del ins`` and per strand
    (``A_fwd``, ``A_rev``, ...); ``pos`` is 1-based; ``depth`` counts bases and
    deletions. Rows: datasets in order, then sites in file order. Sites past a
    reference's end are kept (no reads) with a warning.

    Raises:
        SitesError: For an unsorted or malformed sites file, or an unknown reference (file and line named).
        Bams3Error, OSError: For unusable datasets or storage failures.
    """
    opts = options or GenotypeOptions(**counting)
    return genotype_table(datasets, sites, opts, workers=workers, **(storage_options or {}))


def _warn_all(messages: Iterable[str]) -> None:
    """Issue each plan warning as a Python warning (library use)."""
    for msg in messages:
        warnings.warn(msg, stacklevel=3)
