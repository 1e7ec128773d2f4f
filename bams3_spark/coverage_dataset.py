"""Coverage of BAMS3 datasets: the local engine over chunks, and its chunk-parallel form.

This module runs :mod:`bams3_spark.coverage` (the counting rules of mosdepth and
``samtools depth``) over datasets:

* :func:`iter_depths` computes the depth of every reference of a dataset (or of
  one region) from its chunk objects, reading only the columns the counting
  mode needs (:func:`~bams3_spark.coverage.required_columns`), in worker
  processes, one task per reference. Within a reference, chunks are added in
  order to one :class:`~bams3_spark.coverage.DepthAccumulator`, so reads that
  straddle chunks and mates in different chunks are exact by construction.
* :func:`coverage_table` returns the result as an Arrow table (per-base
  run-length intervals, window means or BED-region means), one or many samples.
* :func:`write_coverage` writes mosdepth's files.
* :func:`chunk_partial` and :func:`mate_corrections` are the chunk-parallel
  form used by the Spark job (:mod:`bams3_spark.spark.coverage_job`): each chunk
  is counted on its own, and the few mate pairs whose overlap correction
  depends on an earlier chunk are resolved afterwards, exactly (see
  :func:`chunk_partial`).

Coordinates follow FORMAT.md: ``pos`` is 1-based, ``end`` 1-based inclusive;
tables and regions here are 0-based half-open (BED).
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from bams3_spark.coverage import (
    MATE_COLUMNS,
    BedRegion,
    CoverageOptions,
    DepthAccumulator,
    MosdepthPlan,
    MosdepthWriter,
    ReferenceDepth,
    ReferenceSummary,
    read_bed,
    region_means_table,
    required_columns,
    thresholds_table,
    window_means_table,
)
from bams3_spark.dataset import ChunkRef, Dataset, open_dataset
from bams3_spark.exceptions import InvalidArgumentError, RegionError
from bams3_spark.format.regions import Region
from bams3_spark.parallel import ordered_map

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

#: ``by`` argument: a window size, a BED file, or BED regions (None: per-base).
By = Union[int, str, "os.PathLike[str]", Sequence[BedRegion], None]  # noqa: UP007

#: Columns of the per-base table.
INTERVAL_COLUMNS = ("sample", "rname", "start", "end", "depth")
#: Columns of the window / region means table.
MEAN_COLUMNS = ("sample", "rname", "start", "end", "mean_depth")

_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
# Same text layout as MosdepthWriter's per-base file: "chr\tstart\tend\tdepth".
_TSV = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------


def resolve_by(by: By) -> int | list[BedRegion] | None:
    """Normalise a ``by`` argument: window size, BED regions, or None.

    Args:
        by: A positive window size (int or digit string), a BED path, BED
            regions, or None.

    Returns:
        The window size, the BED regions (file order), or None.

    Raises:
        InvalidArgumentError: For a non-positive window or an unreadable BED.
    """
    if by is None:
        return None
    if isinstance(by, bool):
        raise InvalidArgumentError("by must be a window size or a BED file")
    if isinstance(by, (int, np.integer)):
        if by <= 0:
            raise InvalidArgumentError(f"window size must be positive; got {by}")
        return int(by)
    if isinstance(by, str) and by.strip().isdigit():
        return resolve_by(int(by))
    if isinstance(by, (str, os.PathLike)):
        try:
            return read_bed(by)
        except FileNotFoundError:
            raise FileNotFoundError(f"{os.fspath(by)}: no such BED file") from None
        except UnicodeDecodeError:
            raise InvalidArgumentError(f"{os.fspath(by)}: not a BED text file") from None
        except ValueError as exc:
            raise InvalidArgumentError(f"{os.fspath(by)}: {exc}") from None
    return list(by)


def open_datasets(
    datasets: Dataset | str | Sequence[Dataset | str], storage_options: Mapping[str, Any]
) -> list[Dataset]:
    """Open datasets given as URLs (or already open); sample names must be distinct.

    Raises:
        InvalidArgumentError: For no dataset, or two datasets of one sample.
        Bams3Error, OSError: For a path that is not a usable dataset.
    """
    items: Sequence[Dataset | str] = [datasets] if isinstance(datasets, (Dataset, str)) else datasets
    if not items:
        raise InvalidArgumentError("no dataset given")
    out = [d if isinstance(d, Dataset) else open_dataset(d, **storage_options) for d in items]
    seen: dict[str, str] = {}
    for ds in out:
        if ds.sample in seen:
            raise InvalidArgumentError(
                f"sample {ds.sample!r} appears twice ({seen[ds.sample]} and {ds.url}); "
                "each dataset must have its own sample name"
            )
        seen[ds.sample] = ds.url
    return out


def parse_coverage_region(ds: Dataset, text: str) -> Region:
    """Parse a samtools region for coverage (unplaced reads ``*`` have none).

    Raises:
        RegionError: For a malformed region, an unknown reference or ``*``.
    """
    region = ds.parse_region(text)
    if region.unplaced:
        raise RegionError(f"region {text!r}: unplaced reads have no coverage")
    return region


def _keep_freed_memory() -> None:
    """Ask glibc to reuse freed memory instead of returning it to the system.

    Counting allocates and frees arrays of a few MB per chunk; with glibc's
    default, each is a fresh ``mmap`` whose pages fault in again, which cost
    about a fifth of the CPU time. Worker processes only; no-op elsewhere.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_trim_threshold, 1 << 30)
    mallopt(m_mmap_threshold, 64 << 20)


def _pool(workers: int) -> cf.ProcessPoolExecutor:
    # fork: workers start in milliseconds instead of re-importing numpy and
    # pyarrow (spawn costs about a second, as much as the counting of a small
    # dataset). fsspec and pyarrow reset their threads in the child.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return cf.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context(method), initializer=_keep_freed_memory
    )


# --------------------------------------------------------------------------
# Depth of one reference (or region) from its chunks
# --------------------------------------------------------------------------


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


def _read_ahead(chunks: Sequence[ChunkRef], columns: Sequence[str]) -> Iterator[pa.Table]:
    """Yield the chunks' tables in order, reading the next one in a thread.

    Decoding a chunk (pyarrow, outside the GIL) then overlaps the counting of
    the previous one.
    """
    if not chunks:
        return
    cols = list(columns)
    with cf.ThreadPoolExecutor(1, thread_name_prefix="bams3-coverage-read") as pool:
        nxt = pool.submit(chunks[0].read, cols)
        for i in range(len(chunks)):
            table = nxt.result()
            if i + 1 < len(chunks):
                nxt = pool.submit(chunks[i + 1].read, cols)
            yield table


def _shift(table: pa.Table, offset: int) -> pa.Table:
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
            shifted = pc.subtract(table.column(name), pa.scalar(offset, pa.int32()))
            table = table.set_column(i, name, shifted)
    return table


def compute_slice(
    ds: Dataset, rname: str, options: CoverageOptions, region: Region | None = None
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
            for table in _read_ahead(chunks, required_columns(options)):
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
    for table in _read_ahead(chunks, required_columns(options)):
        acc.add(_shift(table, offset))
    full = acc.finish()
    local = full.depth[start - offset : end - offset]
    rd = ReferenceDepth(
        rname, end - start, local, has_records=full.has_records, n_passing=full.n_passing, options=options
    )
    return DepthSlice(ds.sample, rname, length, start, rd, start == 0 and end == length)


# --------------------------------------------------------------------------
# Tables from slices
# --------------------------------------------------------------------------


def _strings(value: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype=np.int32)), pa.array([value], pa.string())
    ).cast(pa.string())


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
            "sample": _strings(sl.sample, n),
            "rname": _strings(sl.rname, n),
            "start": pa.array((starts + sl.start).astype(np.int32)),
            "end": pa.array((ends + sl.start).astype(np.int32)),
            "depth": pa.array(depth.astype(np.int32)),
        }
    )


def _local_regions(sl: DepthSlice, regions: Iterable[BedRegion]) -> list[BedRegion]:
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


def _window_regions(sl: DepthSlice, window: int) -> list[BedRegion]:
    """The reference's ``--by N`` windows overlapping a region slice, clipped to it."""
    first = sl.start // window * window
    return [
        BedRegion(sl.rname, max(s, sl.start) - sl.start, min(s + window, sl.end, sl.ref_length) - sl.start)
        for s in range(first, sl.end, window)
    ]


def _with_sample(table: pa.Table, sl: DepthSlice, shift: int) -> pa.Table:
    n = table.num_rows
    return pa.table(
        {
            "sample": _strings(sl.sample, n),
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
        return _with_sample(region_means_table(sl.depth, _window_regions(sl, by)), sl, sl.start)
    return _with_sample(region_means_table(sl.depth, _local_regions(sl, by)), sl, sl.start)


def slice_table(sl: DepthSlice, by: int | Sequence[BedRegion] | None) -> pa.Table:
    """Per-base intervals (``by`` None) or means (window size / BED regions) of a slice."""
    return intervals_of(sl) if by is None else means_of(sl, by)


# --------------------------------------------------------------------------
# Running slices in worker processes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    """One slice to compute in a worker, and what to send back."""

    ds: Dataset
    rname: str
    region: Region | None
    options: CoverageOptions
    keep_depth: bool = False
    table_by: int | list[BedRegion] | None | bool = False  # False: no table
    per_base_path: str | None = None
    plan: MosdepthPlan | None = None  # summarize for a MosdepthWriter
    reduce: Callable[[DepthSlice], Any] | None = None


@dataclass
class _Result:
    sample: str
    rname: str
    depth: DepthSlice | None = None
    table: pa.Table | None = None
    per_base_path: str | None = None
    summary: ReferenceSummary | None = None
    reduced: Any = None


def _write_per_base_part(sl: DepthSlice, path: str) -> None:
    """Write a slice's per-base text as a BGZF file (htslib's, level 1 like mosdepth's per-base)."""
    from pysam.libcbgzf import BGZFile

    starts, ends, depth = sl.depth.intervals()
    table = pa.table(
        {
            "rname": _strings(sl.rname, len(starts)),
            "start": pa.array((starts + sl.start).astype(np.int32)),
            "end": pa.array((ends + sl.start).astype(np.int32)),
            "depth": pa.array(depth.astype(np.int32)),
        }
    )
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, _TSV)
    # htslib's bgzf_open reads a digit in the mode as the zlib level.
    out = BGZFile(path, "wb1", None)  # type: ignore[arg-type]
    try:
        out.write(sink.getvalue().to_pybytes())
    finally:
        out.close()


def _run_task(task: _Task) -> _Result:
    sl = compute_slice(task.ds, task.rname, task.options, task.region)
    res = _Result(sl.sample, sl.rname)
    if task.per_base_path is not None:
        _write_per_base_part(sl, task.per_base_path)
        res.per_base_path = task.per_base_path
    if task.table_by is not False:
        res.table = slice_table(sl, task.table_by)  # type: ignore[arg-type]
    if task.plan is not None:
        res.summary = task.plan.summarize(sl.depth)
    if task.reduce is not None:
        res.reduced = task.reduce(sl)
    if task.keep_depth:
        res.depth = sl
    return res


def _run_in_order(tasks: Sequence[_Task], workers: int) -> Iterator[_Result]:
    """Run tasks in worker processes; yield results in task order.

    At most ``2 * workers`` tasks are in flight, so the results waiting for a
    slow earlier reference stay bounded in memory.
    """
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield _run_task(t)
        return
    yield from ordered_map(_run_task, tasks, _pool(min(workers, len(tasks))), workers)


def _plan(datasets: Sequence[Dataset], region: str | None) -> list[tuple[Dataset, str, Region | None]]:
    """(dataset, reference, region) of every slice, datasets in order, references in header order."""
    out: list[tuple[Dataset, str, Region | None]] = []
    for ds in datasets:
        if region is not None:
            r = parse_coverage_region(ds, region)
            out.append((ds, r.rname, r))
        else:
            out += [(ds, name, None) for name, _ in ds.references]
    return out


def iter_depths(
    datasets: Dataset | str | Sequence[Dataset | str],
    options: CoverageOptions | None = None,
    *,
    region: str | None = None,
    workers: int | str | None = 1,
    **storage_options: Any,
) -> Iterator[DepthSlice]:
    """Yield the depth of every reference (or of one region) of datasets.

    References come in header order (every ``@SQ``, with or without reads, as
    mosdepth iterates them), datasets in the given order. With ``workers`` > 1
    references are counted in parallel by worker processes.

    Args:
        datasets: Dataset(s): open :class:`Dataset` objects or URLs.
        options: Counting options (default: mosdepth's defaults).
        region: A samtools region (``chr1:10,000-20,000``): only its
            reference, restricted to it.
        workers: Worker processes, ``"auto"`` for one per core.
        **storage_options: fsspec options for URLs (``endpoint_url``...).

    Yields:
        One :class:`DepthSlice` per reference (or the region's).

    Raises:
        RegionError: For a bad region.
        Bams3Error, OSError: For unusable datasets or storage failures.
    """
    from bams3_spark.convert import resolve_workers

    opts = options or CoverageOptions()
    n = resolve_workers(workers)
    plan = _plan(open_datasets(datasets, storage_options), region)
    tasks = [_Task(ds, rname, reg, opts, keep_depth=True) for ds, rname, reg in plan]
    for res in _run_in_order(tasks, n):
        assert res.depth is not None
        yield res.depth


def coverage_table(
    datasets: Dataset | str | Sequence[Dataset | str],
    by: By = None,
    options: CoverageOptions | None = None,
    *,
    region: str | None = None,
    workers: int | str | None = 1,
    **storage_options: Any,
) -> pa.Table:
    """Coverage of one or many datasets as one Arrow table.

    Args:
        datasets: Dataset(s): open :class:`Dataset` objects or URLs.
        by: None for per-base depth as run-length intervals; a window size
            for mean depth per window (``mosdepth --by N``); a BED file or
            BED regions for mean depth per region (``--by regions.bed``).
        options: Counting options (default: mosdepth's defaults).
        region: A samtools region: only that part of its reference (windows
            and BED regions overlapping it are clipped to it).
        workers: Worker processes (``"auto"``: one per core).
        **storage_options: fsspec options for URLs.

    Returns:
        Per-base: ``sample``, ``rname``, ``start``, ``end`` (int32, 0-based
        half-open), ``depth`` (int32), covering every reference (0-depth runs
        included). Means: ``sample``, ``rname``, ``start``, ``end``,
        ``mean_depth`` (float64, mosdepth's value before ``%.2f``). Rows are
        in dataset order, then header order, then position (BED regions
        sorted by start within a reference, as mosdepth does).
    """
    from bams3_spark.convert import resolve_workers

    opts = options or CoverageOptions()
    spec = resolve_by(by)
    plan = _plan(open_datasets(datasets, storage_options), region)
    tasks = [_Task(ds, rname, reg, opts, table_by=spec) for ds, rname, reg in plan]
    tables = [res.table for res in _run_in_order(tasks, resolve_workers(workers)) if res.table is not None]
    if not tables:
        return empty_coverage_table(spec is None)
    return pa.concat_tables(tables).combine_chunks()


def empty_coverage_table(per_base: bool) -> pa.Table:
    """An empty table with the schema of :func:`coverage_table`."""
    value = ("depth", pa.int32()) if per_base else ("mean_depth", pa.float64())
    return pa.schema(
        [("sample", pa.string()), ("rname", pa.string()), ("start", pa.int32()), ("end", pa.int32()), value]
    ).empty_table()


# --------------------------------------------------------------------------
# mosdepth files
# --------------------------------------------------------------------------


class _PerBaseFile:
    """``PREFIX.per-base.bed.gz`` assembled from BGZF parts written by workers."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh = open(path, "wb")

    def append_part(self, part: str) -> None:
        with open(part, "rb") as src:
            data = src.read()
        os.unlink(part)
        # Each part is a complete BGZF file: drop its end-of-file block so
        # that only the last block of the whole file is the EOF marker.
        if data.endswith(_BGZF_EOF):
            data = data[: -len(_BGZF_EOF)]
        self._fh.write(data)

    def close(self) -> None:
        self._fh.write(_BGZF_EOF)
        self._fh.close()


class _RegionFiles:
    """mosdepth-style files for one region (``--region``): per-base is
    handled by :class:`_PerBaseFile`; this writes the windows / BED regions,
    thresholds and a summary of the region."""

    def __init__(
        self, prefix: str, by: int | list[BedRegion] | None, thresholds: Sequence[int], precision: int
    ) -> None:
        from pysam.libcbgzf import BGZFile

        self.prefix = prefix
        self._by = by
        self._thresholds = sorted(int(t) for t in thresholds)
        self._precision = precision
        self._regions = BGZFile(prefix + ".regions.bed.gz", "wb", None) if by is not None else None
        self._thr = BGZFile(prefix + ".thresholds.bed.gz", "wb", None) if self._thresholds else None
        if self._thr is not None:
            self._thr.write(
                ("#chrom\tstart\tend\tregion" + "".join(f"\t{t}X" for t in self._thresholds) + "\n").encode()
            )
        self._summary = open(prefix + ".mosdepth.summary.txt", "w", encoding="utf-8")
        self._summary.write("chrom\tlength\tbases\tmean\tmin\tmax\n")
        self._length = 0
        self._bases = 0
        self._min: int | None = None
        self._max = 0

    def _fmt(self, v: float) -> str:
        return f"{v:.{self._precision}f}"

    def add(self, sl: DepthSlice) -> None:
        if self._by is not None:
            regs = (
                _window_regions(sl, self._by)
                if isinstance(self._by, int)
                else sorted(_local_regions(sl, self._by), key=lambda r: r.start)
            )
            means = region_means_table(sl.depth, regs).column("mean_depth").to_pylist()
            assert self._regions is not None
            self._regions.write(
                "".join(
                    f"{sl.rname}\t{r.start + sl.start}\t{r.end + sl.start}\t"
                    + (f"{r.name}\t" if r.name else "")
                    + self._fmt(m)
                    + "\n"
                    for r, m in zip(regs, means, strict=True)
                ).encode()
            )
            if self._thr is not None:
                thr = thresholds_table(sl.depth, regs, self._thresholds)
                rows = zip(*(thr.column(f"{t}X").to_pylist() for t in self._thresholds), strict=True)
                self._thr.write(
                    "".join(
                        f"{sl.rname}\t{r.start + sl.start}\t{r.end + sl.start}\t{r.name or 'unknown'}\t"
                        + "\t".join(map(str, row))
                        + "\n"
                        for r, row in zip(regs, rows, strict=True)
                    ).encode()
                )
        d = sl.depth.depth
        length = len(d)
        bases = int(d.sum(dtype=np.int64))
        lo = int(d.min()) if length else 0
        hi = int(d.max()) if length else 0
        self._row(sl.rname, length, bases, lo, hi)
        self._length += length
        self._bases += bases
        self._min = lo if self._min is None else min(self._min, lo)
        self._max = max(self._max, hi)

    def _row(self, name: str, length: int, bases: int, lo: int, hi: int) -> None:
        mean = bases / length if length else 0.0
        self._summary.write(f"{name}\t{length}\t{bases}\t{self._fmt(mean)}\t{lo}\t{hi}\n")

    def close(self) -> None:
        self._row("total", self._length, self._bases, self._min or 0, self._max)
        self._summary.close()
        for f in (self._regions, self._thr):
            if f is not None:
                f.close()

    def paths(self) -> list[str]:
        names = [".mosdepth.summary.txt"]
        if self._by is not None:
            names.append(".regions.bed.gz")
        if self._thresholds:
            names.append(".thresholds.bed.gz")
        return [self.prefix + n for n in names]


@dataclass
class CoverageRun:
    """What :func:`write_coverage` wrote.

    Attributes:
        paths: Files written per sample (dataset order), sorted by name.
    """

    paths: dict[str, list[str]] = field(default_factory=dict)


def sample_prefix(prefix: str, sample: str, n_datasets: int) -> str:
    """Output prefix of one sample: ``PREFIX`` alone, ``PREFIX.SAMPLE`` for several."""
    if n_datasets == 1:
        return prefix
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in sample)
    return f"{prefix}.{safe}"


def write_coverage(
    datasets: Dataset | str | Sequence[Dataset | str],
    prefix: str | os.PathLike[str] | None,
    *,
    by: By = None,
    thresholds: Sequence[int] | None = None,
    per_base: bool = True,
    precision: int = 2,
    options: CoverageOptions | None = None,
    region: str | None = None,
    workers: int | str | None = 1,
    reduce_slice: Callable[[DepthSlice], Any] | None = None,
    on_reduced: Callable[[Any], None] | None = None,
    **storage_options: Any,
) -> CoverageRun:
    """Write mosdepth's output files for one or many datasets.

    For a whole dataset the files are those of mosdepth 0.3.3 with the same
    options (text identical after ``zcat``; the ``.csi`` indexes are not
    written): ``PREFIX.mosdepth.global.dist.txt``,
    ``PREFIX.mosdepth.summary.txt``, ``PREFIX.per-base.bed.gz`` (unless
    ``per_base`` is False, mosdepth's ``-n``), ``PREFIX.regions.bed.gz`` and
    ``PREFIX.mosdepth.region.dist.txt`` (with ``by``),
    ``PREFIX.thresholds.bed.gz`` (with ``thresholds``). With several
    datasets, each sample gets ``PREFIX.SAMPLE.*``.

    Each reference is counted, summarized and its per-base text compressed
    in a worker; this process only writes the results in ``@SQ`` order.

    With ``region``, only that region is counted and the files describe it:
    per-base runs clipped to it, the reference's windows (or the BED regions)
    overlapping it clipped to it, and a summary of the region (a row named
    after the reference, then ``total``); no distribution files.

    Args:
        datasets: Dataset(s) or URLs.
        prefix: Output prefix; None to write nothing (e.g. only plot).
        by: Window size, BED file or BED regions (see :func:`coverage_table`).
        thresholds: ``--thresholds`` values (need ``by``).
        per_base: Write the per-base file.
        precision: Decimals of means (mosdepth's ``MOSDEPTH_PRECISION``).
        options: Counting options.
        region: A samtools region.
        workers: Worker processes (``"auto"``: one per core).
        reduce_slice: A picklable function run in the worker on every depth
            slice (e.g. binning for a plot); its results go to ``on_reduced``,
            in order.
        on_reduced: Receives the results of ``reduce_slice``.
        **storage_options: fsspec options for URLs.

    Returns:
        The files written.

    Raises:
        InvalidArgumentError: For bad arguments.
        RegionError, Bams3Error, OSError: For bad regions, datasets or storage.
    """
    from bams3_spark.convert import resolve_workers

    opts = options or CoverageOptions()
    spec = resolve_by(by)
    thr = sorted({int(t) for t in thresholds}) if thresholds else []
    if thr and spec is None:
        raise InvalidArgumentError("thresholds need --by (a window size or a BED file)")
    if any(t < 0 for t in thr):
        raise InvalidArgumentError("thresholds must be non-negative")
    if not isinstance(precision, int) or isinstance(precision, bool) or not 0 <= precision <= 20:
        raise InvalidArgumentError(f"precision must be an integer from 0 to 20; got {precision!r}")
    dss = open_datasets(datasets, storage_options)
    plan = _plan(dss, region)
    n_workers = resolve_workers(workers)
    run = CoverageRun()
    prefixes = (
        {ds.sample: sample_prefix(os.fspath(prefix), ds.sample, len(dss)) for ds in dss} if prefix else {}
    )
    for p in prefixes.values():
        parent = Path(p).parent
        if not parent.is_dir():
            raise FileNotFoundError(f"{p}: output directory {parent} does not exist")

    writers: dict[str, MosdepthWriter | _RegionFiles] = {}
    bases: dict[str, _PerBaseFile] = {}
    tasks: list[_Task] = []
    ok = False
    try:
        for sample, p in prefixes.items():
            writers[sample] = (
                _RegionFiles(p, spec, thr, precision)
                if region is not None
                else MosdepthWriter(p, by=spec, thresholds=thr or None, per_base=False, precision=precision)
            )
            if per_base:
                bases[sample] = _PerBaseFile(p + ".per-base.bed.gz")
        for i, (ds, rname, reg) in enumerate(plan):
            w = writers.get(ds.sample)
            part = f"{prefixes[ds.sample]}.per-base.bed.gz.part{i:06d}" if w and per_base else None
            tasks.append(
                _Task(
                    ds,
                    rname,
                    reg,
                    opts,
                    keep_depth=isinstance(w, _RegionFiles),
                    per_base_path=part,
                    plan=w.plan() if isinstance(w, MosdepthWriter) else None,
                    reduce=reduce_slice,
                )
            )
        for res in _run_in_order(tasks, n_workers):
            w = writers.get(res.sample)
            if isinstance(w, _RegionFiles):
                assert res.depth is not None
                w.add(res.depth)
            elif w is not None:
                assert res.summary is not None
                w.add_summary(res.summary)
            if res.per_base_path is not None:
                bases[res.sample].append_part(res.per_base_path)
            if on_reduced is not None and reduce_slice is not None:
                on_reduced(res.reduced)
        ok = True
    finally:
        for sample, w in writers.items():
            w.close()
            paths = w.paths()
            if sample in bases:
                bases[sample].close()
                paths.append(bases[sample].path)
            run.paths[sample] = sorted(paths)
        for t in tasks:
            if t.per_base_path and os.path.exists(t.per_base_path):
                os.unlink(t.per_base_path)
        if not ok:
            for paths in run.paths.values():
                for p in paths:
                    if os.path.exists(p):
                        os.unlink(p)
    return run


# --------------------------------------------------------------------------
# Chunk-parallel coverage (used by the Spark job)
# --------------------------------------------------------------------------

_MATE_FIELDS = MATE_COLUMNS
_S1, _S2, _E = 0, 1, 2  # mosdepth's store / store-if-unseen / take (see DepthAccumulator)


def mate_rows_schema() -> pa.Schema:
    """Schema of the mate rows of :class:`ChunkPartial` (pending and groups)."""
    return pa.schema(
        [
            ("qname", pa.string()),
            ("flag", pa.int32()),
            ("pos", pa.int32()),
            ("end", pa.int32()),
            ("mapq", pa.int32()),
            ("cigar", pa.string()),
            ("rnext", pa.string()),
            ("pnext", pa.int32()),
            ("row", pa.int32()),
            ("typ", pa.int8()),
        ]
    )


@dataclass
class ChunkPartial:
    """The depth contribution of one chunk counted alone, and its mate state.

    Attributes:
        offset: Reference position (0-based) of ``contribution[0]``.
        contribution: Depth added by the chunk's reads (blocks, minus the
            mate overlaps resolved inside the chunk), clipped to the
            reference; may extend past the chunk's window (reads straddling
            it). Empty when the chunk has no counted read.
        pending: Mate rows the chunk leaves stored (mode ``"mosdepth"``):
            the first mates still waiting for their mate when the chunk ends,
            had nothing been stored before it.
        groups: For every read name among the chunk's mate candidates, its
            first row, and all its rows when the first one is a
            store-if-unseen row (mates starting at the same position).
    """

    offset: int
    contribution: I32
    pending: pa.Table
    groups: pa.Table


def _mate_types(table: pa.Table, rname: str, options: CoverageOptions) -> tuple[I64, npt.NDArray[np.int8]]:
    """Rows that take part in mosdepth's mate rule, and their kind.

    The rule (see :class:`~bams3_spark.coverage.DepthAccumulator`): a read
    passing the filters with the proper-pair bit and not supplementary is
    stored (S1) if its mate is on the same reference, starts after it and
    before its end; stored if nothing is stored yet (S2) when the mate starts
    at the same position; otherwise (E) it takes the stored read, if any.
    """
    flag = table.column("flag").to_numpy().astype(np.int64)
    mapq = table.column("mapq").to_numpy()
    keep = (mapq >= options.mapq) & ((flag & options.flag_exclude) == 0)
    if options.flag_include:
        keep &= (flag & options.flag_include) != 0
    keep &= ((flag & 0x2) != 0) & ((flag & 0x800) == 0)
    keep &= table.column("pos").to_numpy() > 0
    rows = np.flatnonzero(keep)
    rnext = table.column("rnext").take(pa.array(rows))
    same = pc.or_(pc.equal(rnext, "="), pc.equal(rnext, rname)).to_numpy(zero_copy_only=False)
    st = table.column("pos").to_numpy()[rows].astype(np.int64) - 1
    sp = table.column("end").to_numpy()[rows].astype(np.int64)
    mpos = table.column("pnext").to_numpy()[rows].astype(np.int64) - 1
    base = same & (sp > mpos)
    typ = np.full(len(rows), _E, dtype=np.int8)
    typ[base & (st == mpos)] = _S2
    typ[base & (st < mpos)] = _S1
    return rows.astype(np.int64), typ


def _final_state(prior: int | None, typs: Sequence[int], rows: Sequence[int]) -> int | None:
    """mosdepth's stored read for one name after ``rows`` (None: nothing stored)."""
    state = prior
    for t, r in zip(typs, rows, strict=True):
        if t == _S1 or (t == _S2 and state is None):
            state = r
        elif state is not None:
            state = None
    return state


def chunk_partial(table: pa.Table, rname: str, ref_length: int, options: CoverageOptions) -> ChunkPartial:
    """Count one chunk of a reference on its own (the Spark job's map step).

    The depth of a reference is the sum of the :attr:`ChunkPartial.contribution`
    of its chunks plus the :func:`mate_corrections` computed from their
    :attr:`~ChunkPartial.pending` and :attr:`~ChunkPartial.groups` rows: this
    equals, base for base, :func:`~bams3_spark.coverage.reference_depth` over
    all the chunks in order.

    Why this is exact: block depth is additive. mosdepth's mate rule is a state
    machine per read name, so a chunk counted alone (nothing stored before it)
    differs from the sequential count only for names that are stored when an
    earlier chunk ends. A name stored at the end of some chunk in the
    sequential count is stored at the end of the first such chunk when that
    chunk is counted alone too, so the names that need correcting are among
    the :attr:`pending` rows of the chunks; for them, the groups of rows give
    what the sequential machine does next (a name whose first row in a chunk
    is a store overwrites the earlier read; a take takes it; a store-if-unseen
    row needs the whole group).

    Args:
        table: The chunk's records, at least :func:`required_columns` (and all
            of ``MATE_COLUMNS`` in mode ``"mosdepth"``).
        rname: Reference name.
        ref_length: Reference length.
        options: Counting options.

    Returns:
        The chunk's partial result.
    """
    schema = mate_rows_schema()
    empty = schema.empty_table()
    placed = table.filter(pc.greater(table.column("pos"), 0)) if table.num_rows else table
    if placed.num_rows == 0:
        return ChunkPartial(0, np.zeros(0, np.int32), empty, empty)
    offset = int(pc.min(placed.column("pos")).as_py()) - 1
    max_end = int(pc.max(placed.column("end")).as_py())
    span = max(0, min(ref_length, max_end) - offset)
    acc = DepthAccumulator(span, options, name=rname)
    acc.add(_shift(placed, offset))
    n_pending = acc.n_pending  # finish() clears it
    contribution = acc.finish().depth.copy()
    if options.mode != "mosdepth":
        return ChunkPartial(offset, contribution, empty, empty)

    rows, typ = _mate_types(placed, rname, options)
    if len(rows) == 0:
        if n_pending:
            raise RuntimeError(f"{rname}: mate state disagrees with the counting engine")
        return ChunkPartial(offset, contribution, empty, empty)
    qn = placed.column("qname").take(pa.array(rows))
    enc = pc.dictionary_encode(qn).combine_chunks()
    code = enc.indices.to_numpy().astype(np.int64)
    order = np.argsort(code, kind="stable")
    counts = np.bincount(code, minlength=len(enc.dictionary))
    ptr = np.concatenate(([0], np.cumsum(counts)))
    first = order[ptr[:-1]]
    # Final stored row of every name, vectorised for 1 or 2 rows (pairs).
    final = np.full(len(counts), -1, dtype=np.int64)
    one = np.flatnonzero(counts == 1)
    a = first[one]
    stores = typ[a] != _E
    final[one[stores]] = a[stores]
    two = np.flatnonzero(counts == 2)
    a, b = first[two], order[ptr[two] + 1]
    keep_b = (typ[b] == _S1) | ((typ[b] == _S2) & (typ[a] == _E))
    final[two[keep_b]] = b[keep_b]
    for g in np.flatnonzero(counts >= 3).tolist():
        members = order[ptr[g] : ptr[g + 1]].tolist()
        state = _final_state(None, typ[members].tolist(), members)
        final[g] = -1 if state is None else state
    stored = np.sort(final[final >= 0])
    if len(stored) != n_pending:
        raise RuntimeError(f"{rname}: mate state disagrees with the counting engine")
    s2_first = np.flatnonzero(typ[first] == _S2)
    group_rows = np.sort(np.concatenate([first] + [order[ptr[g] : ptr[g + 1]] for g in s2_first.tolist()]))
    group_rows = np.unique(group_rows)

    def mate_table(idx: I64) -> pa.Table:
        take = pa.array(rows[idx])
        cols = [placed.column(c).take(take) for c in _MATE_FIELDS]
        cols.append(pa.array(rows[idx].astype(np.int32)))
        cols.append(pa.array(typ[idx], pa.int8()))
        arrays = [c.cast(f.type) for c, f in zip(cols, schema, strict=True)]
        return pa.Table.from_arrays(arrays, schema=schema)

    return ChunkPartial(offset, contribution, mate_table(stored), mate_table(group_rows))


@dataclass(frozen=True)
class ChunkMates:
    """The mate rows of one chunk, for :func:`mate_corrections`.

    Attributes:
        key: Sort key giving the chunks' order in the reference.
        pending: :attr:`ChunkPartial.pending`.
        groups: :attr:`ChunkPartial.groups`, possibly only the rows whose name
            is among the pending rows of the reference's chunks (the others
            are not used).
    """

    key: int
    pending: pa.Table
    groups: pa.Table


def pending_names(chunks: Iterable[ChunkMates]) -> pa.Array:
    """Distinct read names among the chunks' pending rows."""
    names = [c.pending.column("qname") for c in chunks if c.pending.num_rows]
    if not names:
        return pa.array([], pa.string())
    return pc.unique(pa.chunked_array(names, pa.string()).combine_chunks())


def mate_corrections(
    rname: str, ref_length: int, options: CoverageOptions, chunks: Sequence[ChunkMates]
) -> list[tuple[int, I32]]:
    """Depth corrections for mate pairs whose reads are in different chunks.

    Replays mosdepth's per-name state machine over the chunks in order for
    the names some chunk leaves stored (see :func:`chunk_partial`); where a
    read stored in an earlier chunk meets a later row, the difference between
    counting them together and apart is computed with
    :class:`~bams3_spark.coverage.DepthAccumulator` itself (both mates
    together, minus the later group alone, minus the stored read's own
    blocks), so the overlap rule is the engine's, quirks included.

    Args:
        rname: Reference name.
        ref_length: Reference length.
        options: Counting options (mode ``"mosdepth"``; others need none).
        chunks: The reference's chunks (any order; sorted by ``key``).

    Returns:
        ``(offset, delta)`` pairs: add ``delta`` to the depth from ``offset``.
    """
    if options.mode != "mosdepth":
        return []
    ordered = sorted(chunks, key=lambda c: c.key)
    names = pending_names(ordered)
    if len(names) == 0:
        return []
    stored: dict[tuple[int, str], dict[str, Any]] = {}
    sequences: dict[str, list[tuple[int, list[dict[str, Any]]]]] = {}
    for ci, c in enumerate(ordered):
        for row in c.pending.filter(pc.is_in(c.pending.column("qname"), value_set=names)).to_pylist():
            stored[(ci, row["qname"])] = row
        groups = c.groups.filter(pc.is_in(c.groups.column("qname"), value_set=names))
        by_name: dict[str, list[dict[str, Any]]] = {}
        for row in sorted(groups.to_pylist(), key=lambda r: r["row"]):
            by_name.setdefault(row["qname"], []).append(row)
        for q, rows in by_name.items():
            sequences.setdefault(q, []).append((ci, rows))

    junctions: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for q, groups_of_q in sequences.items():
        state: dict[str, Any] | None = None
        for ci, rows in groups_of_q:
            t0 = rows[0]["typ"]
            if state is not None and t0 != _S1:
                junctions.append((state, rows if t0 == _S2 else rows[:1]))
            if state is not None and t0 == _S2:
                idx = _final_state(-1, [r["typ"] for r in rows], list(range(len(rows))))
                state = None if idx is None else state if idx < 0 else rows[idx]
            else:
                state = stored.get((ci, q))
    return _junction_deltas(rname, ref_length, options, junctions)


def _junction_deltas(
    rname: str,
    ref_length: int,
    options: CoverageOptions,
    junctions: Sequence[tuple[dict[str, Any], list[dict[str, Any]]]],
) -> list[tuple[int, I32]]:
    """Count every junction (stored read + later rows) apart, in disjoint slots of one array."""
    if not junctions:
        return []
    schema = pa.schema([f for f in mate_rows_schema() if f.name in _MATE_FIELDS])
    together: list[dict[str, Any]] = []
    later: list[dict[str, Any]] = []
    alone: list[dict[str, Any]] = []
    slots: list[tuple[int, int, int]] = []  # (reference offset, slot base, span)
    base = 0
    for i, (mate, rows) in enumerate(junctions):
        lo = int(mate["pos"]) - 1
        hi = max(int(r["end"]) for r in [mate, *rows])
        span = hi - lo + 1
        shift = base - lo

        def moved(r: dict[str, Any], i: int = i, shift: int = shift) -> dict[str, Any]:
            # A name per junction: junctions of one name must not meet.
            return {
                **{k: r[k] for k in _MATE_FIELDS},
                "qname": str(i),
                "pos": r["pos"] + shift,
                "end": r["end"] + shift,
                "pnext": r["pnext"] + shift,
            }

        together += [moved(mate)] + [moved(r) for r in rows]
        later += [moved(r) for r in rows]
        alone.append(moved(mate))
        slots.append((lo, base, span))
        base += span + 1
    total = base + 1
    blocks = CoverageOptions("samtools", options.mapq, options.flag_exclude, options.flag_include)

    def depth(rows: list[dict[str, Any]], opts: CoverageOptions) -> I64:
        acc = DepthAccumulator(total, opts, name=rname)
        acc.add(pa.Table.from_pylist(rows, schema=schema))
        return acc.finish().depth.astype(np.int64)

    delta = depth(together, options) - depth(later, options) - depth(alone, blocks)
    out: list[tuple[int, I32]] = []
    for lo, b, span in slots:
        n = min(span, ref_length - lo)
        if n <= 0:
            continue
        d = delta[b : b + n]
        if d.any():
            out.append((lo, d.astype(np.int32)))
    return out


def table_to_ipc(table: pa.Table) -> bytes:
    """Serialize a table as an LZ4-compressed Arrow IPC stream (to ship mate rows through Spark).

    Read names compress several times over; LZ4 costs about a millisecond per chunk.
    """
    sink = io.BytesIO()
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_stream(sink, table.schema, options=options) as w:
        w.write_table(table)
    return sink.getvalue()


def table_from_ipc(data: bytes) -> pa.Table:
    """Read a table written by :func:`table_to_ipc`."""
    return pa.ipc.open_stream(data).read_all()


__all__ = [
    "INTERVAL_COLUMNS",
    "MEAN_COLUMNS",
    "ChunkMates",
    "ChunkPartial",
    "CoverageRun",
    "DepthSlice",
    "chunk_partial",
    "compute_slice",
    "coverage_table",
    "empty_coverage_table",
    "intervals_of",
    "iter_depths",
    "mate_corrections",
    "means_of",
    "open_datasets",
    "parse_coverage_region",
    "pending_names",
    "resolve_by",
    "sample_prefix",
    "slice_table",
    "write_coverage",
]
