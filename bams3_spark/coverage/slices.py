"""Depth slices: the depth of one reference (or one region of it) of a dataset, from its chunks.

:func:`compute_slice` reads only the chunks a reference or region needs, with
only the columns the counting mode needs
(:func:`~bams3_spark.coverage.options.required_columns`), and adds them in
order to one :class:`~bams3_spark.coverage.depth.DepthAccumulator`, so reads
that straddle chunks and mates in different chunks are exact by
construction. The rest of the module turns slices into tables.

Coordinates follow FORMAT.md: ``pos`` is 1-based, ``end`` 1-based inclusive;
tables and regions here are 0-based half-open (BED).
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bams3_spark.arrays import int_scalar
from bams3_spark.coverage.depth import DepthAccumulator, ReferenceDepth
from bams3_spark.coverage.options import CoverageOptions, required_columns
from bams3_spark.coverage.stats import region_means_table, repeat_name, window_means_table
from bams3_spark.dataset.chunks import ChunkRef
from bams3_spark.dataset.reader import DatasetReader
from bams3_spark.format.regions import Region
from bams3_spark.io.bed import BedRegion

#: Columns of the per-base table.
INTERVAL_COLUMNS = ("sample", "rname", "start", "end", "depth")
#: Columns of the window / region means table.
MEAN_COLUMNS = ("sample", "rname", "start", "end", "mean_depth")


@dataclass
class DepthSlice:
    """The depth of one reference of a sample, or of a region of it.

    Attributes:
        sample: Sample name of the dataset.
        rname: Reference name.
        ref_length: Length of the reference.
        start: Reference position (0-based) of the first value of ``depth``:
            0 for a whole reference, the region start otherwise.
        depth: The depth. For a whole reference, exactly what
            :func:`~bams3_spark.coverage.reference_depth` gives; for a region,
            a :class:`ReferenceDepth` in region coordinates (its ``length``
            is the region length, position ``i`` is reference position
            ``start + i``), exact inside the region.
        whole: True when the slice is the whole reference.
    """

    sample: str
    rname: str
    ref_length: int
    start: int
    depth: ReferenceDepth
    whole: bool

    @property
    def end(self) -> int:
        """0-based exclusive end of the slice on the reference."""
        return self.start + self.depth.length


#: Columns counting takes dictionary-encoded, as chunks store them: few
#: distinct values, and no string per record is decoded.
DICTIONARY_COLUMNS = ("cigar", "rnext")


def read_ahead_tables(chunks: Sequence[ChunkRef], columns: Sequence[str]) -> Iterator[pa.Table]:
    """Yield the chunks' tables in order, reading the next one in a thread.

    Decoding a chunk (pyarrow, outside the GIL) then overlaps the counting of
    the previous one. The :data:`DICTIONARY_COLUMNS` among ``columns`` come
    dictionary-encoded.
    """
    if not chunks:
        return
    cols = list(columns)
    dictionary = [c for c in DICTIONARY_COLUMNS if c in cols]
    with cf.ThreadPoolExecutor(1, thread_name_prefix="bams3-coverage-read") as pool:
        nxt = pool.submit(chunks[0].read, cols, None, dictionary)
        for i in range(len(chunks)):
            table = nxt.result()
            if i + 1 < len(chunks):
                nxt = pool.submit(chunks[i + 1].read, cols, None, dictionary)
            yield table


def shift_positions(table: pa.Table, offset: int) -> pa.Table:
    """Move ``pos``, ``end`` and ``pnext`` ``offset`` bases to the left.

    Counting is translation-invariant (the mate rules compare positions of the
    same read pair), so a region or a chunk is counted in an array starting at
    ``offset`` instead of one as long as the reference.
    """
    if offset == 0:
        return table
    for name in ("pos", "end", "pnext"):
        if name in table.column_names:
            i = table.column_names.index(name)
            shifted = pc.subtract(table.column(name), int_scalar(offset, pa.int32()))
            table = table.set_column(i, name, shifted)
    return table


def compute_slice(
    ds: DatasetReader, rname: str, options: CoverageOptions, region: Region | None = None
) -> DepthSlice:
    """Compute the depth of one reference, or of a region, of a dataset.

    Only the chunks that can hold reads overlapping the region are read
    (FORMAT.md §6), with only :func:`required_columns`. For a region, the reads
    of those chunks are counted in an array starting at the first chunk's
    first read, so memory follows the region, not the reference; the depth
    inside the region is that of the whole reference (reads starting before
    the region or ending after it, and mate overlaps with mates outside it,
    are counted). A chunk that is not read ends before the region, so its
    stored mates' overlap corrections fall outside it too; the one exception
    is a mosdepth artefact for read names with three or more records (depth
    added between a stored read and a later record of the same name that
    does not overlap it), which is not reproduced across the region start.

    Args:
        ds: The dataset.
        rname: Reference name.
        options: Counting options.
        region: A region of ``rname`` (0-based half-open), or None for the
            whole reference.

    Returns:
        The depth slice.
    """
    length = ds.lengths[rname]
    if region is None:
        # Every chunk of the reference: reads placed past its end count too
        # (samtools depth prints them), so no region filter here.
        chunks = [ChunkRef(ds.storage, rname, info) for info in ds.index(rname).chunks]
        if not chunks:
            rd = ReferenceDepth.empty(rname, length, options)
        else:
            acc = DepthAccumulator(length, options, name=rname)
            for table in read_ahead_tables(chunks, required_columns(options)):
                acc.add(table)
            rd = acc.finish()
        return DepthSlice(ds.sample, rname, length, 0, rd, True)

    start, end = region.start, region.end
    chunks = ds.chunks(region)
    if not chunks:
        rd = ReferenceDepth.empty(rname, end - start, options)
        return DepthSlice(ds.sample, rname, length, start, rd, start == 0 and end == length)
    offset = min(start, min(c.info.min_start for c in chunks) - 1)
    # Events past the region end are clipped to it, as events past the
    # reference end are clipped to the reference end: depth inside is exact.
    acc = DepthAccumulator(end - offset, options, name=rname)
    for table in read_ahead_tables(chunks, required_columns(options)):
        acc.add(shift_positions(table, offset))
    full = acc.finish()
    local = full.depth[start - offset : end - offset]
    rd = ReferenceDepth(
        rname, end - start, local, has_records=full.has_records, n_passing=full.n_passing, options=options
    )
    return DepthSlice(ds.sample, rname, length, start, rd, start == 0 and end == length)


# --------------------------------------------------------------------------
# Tables from slices
# --------------------------------------------------------------------------


def intervals_of(sl: DepthSlice) -> pa.Table:
    """Per-base depth of a slice as maximal runs of equal depth.

    Returns:
        Columns ``sample``, ``rname``, ``start``, ``end`` (int32, BED
        coordinates on the reference), ``depth`` (int32); the runs cover the
        slice, 0-depth runs included, like mosdepth's ``per-base.bed.gz``.
    """
    starts, ends, depth = sl.depth.intervals()
    n = len(starts)
    return pa.table(
        {
            "sample": repeat_name(sl.sample, n),
            "rname": repeat_name(sl.rname, n),
            "start": pa.array((starts + sl.start).astype(np.int32)),
            "end": pa.array((ends + sl.start).astype(np.int32)),
            "depth": pa.array(depth.astype(np.int32)),
        }
    )


def local_regions(sl: DepthSlice, regions: Iterable[BedRegion]) -> list[BedRegion]:
    """BED regions of the slice's reference clipped to the slice, in slice coordinates."""
    out = []
    for r in regions:
        if r.chrom != sl.rname:
            continue
        if sl.whole:
            out.append(BedRegion(r.chrom, r.start, r.end, r.name))
            continue
        s, e = max(r.start, sl.start), min(r.end, sl.end)
        if s < e or (r.start == r.end and sl.start <= r.start <= sl.end):
            out.append(BedRegion(r.chrom, s - sl.start, max(s, e) - sl.start, r.name))
    return out


def slice_windows(sl: DepthSlice, window: int) -> list[BedRegion]:
    """The reference's ``--by N`` windows overlapping a region slice, clipped to it, in slice coordinates."""
    first = sl.start // window * window
    return [
        BedRegion(sl.rname, max(s, sl.start) - sl.start, min(s + window, sl.end, sl.ref_length) - sl.start)
        for s in range(first, sl.end, window)
    ]


def _with_sample(table: pa.Table, sl: DepthSlice, shift: int) -> pa.Table:
    n = table.num_rows
    return pa.table(
        {
            "sample": repeat_name(sl.sample, n),
            "rname": table.column("rname"),
            "start": pc.add(table.column("start"), pa.scalar(shift, pa.int32())),
            "end": pc.add(table.column("end"), pa.scalar(shift, pa.int32())),
            "mean_depth": table.column("mean_depth"),
        }
    )


def means_of(sl: DepthSlice, by: int | Sequence[BedRegion]) -> pa.Table:
    """Mean depth per window (``--by N``) or per BED region of a slice.

    For a whole reference these are mosdepth's values (its ``regions.bed.gz``
    before ``%.2f``). For a region, the reference's windows (or the BED
    regions) overlapping it, clipped to it.

    Returns:
        Columns ``sample``, ``rname``, ``start``, ``end``, ``mean_depth``.
    """
    if isinstance(by, int):
        if sl.whole:
            return _with_sample(window_means_table(sl.depth, by), sl, 0)
        return _with_sample(region_means_table(sl.depth, slice_windows(sl, by)), sl, sl.start)
    return _with_sample(region_means_table(sl.depth, local_regions(sl, by)), sl, sl.start)


def slice_table(sl: DepthSlice, by: int | Sequence[BedRegion] | None) -> pa.Table:
    """Per-base intervals (``by`` None) or means (window size / BED regions) of a slice."""
    return intervals_of(sl) if by is None else means_of(sl, by)


def slice_regions(sl: DepthSlice, by: int | Sequence[BedRegion]) -> list[BedRegion]:
    """The windows (``by`` a size) or BED regions overlapping a slice, clipped to it, in slice coordinates."""
    return slice_windows(sl, by) if isinstance(by, int) else local_regions(sl, by)
