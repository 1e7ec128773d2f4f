"""The local coverage engine: datasets in, depth slices, tables and mosdepth's files out.

* :func:`iter_depths` computes the depth of every reference of datasets (or
  of one region), one task per reference, in worker processes
  (:func:`bams3_spark.parallel.process_map`), results in header order.
* :func:`coverage_table` returns the result as an Arrow table (per-base
  run-length intervals, window means or BED-region means), one or many samples.
* :func:`write_coverage` writes mosdepth's files: workers count, summarize and
  compress each reference; this process writes the results in ``@SQ`` order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from bams3_spark.coverage.mosdepth import MosdepthPlan, MosdepthWriter, ReferenceSummary
from bams3_spark.coverage.options import ByArg, CoverageOptions, resolve_by
from bams3_spark.coverage.slices import DepthSlice, compute_slice, slice_regions, slice_table
from bams3_spark.coverage.stats import per_base_text
from bams3_spark.coverage.streaming import can_stream, stream_summary
from bams3_spark.dataset.reader import DatasetReader, check_distinct_samples
from bams3_spark.exceptions import InvalidArgumentError, RegionError
from bams3_spark.format.regions import Region
from bams3_spark.io.bed import BedRegion
from bams3_spark.io.bgzf import BgzfConcatenator, BgzfWriter
from bams3_spark.parallel import (
    ProgressCallback,
    caller_shared_map,
    keep_freed_memory,
    process_map,
    resolve_workers,
)


def open_datasets(
    datasets: DatasetReader | str | Sequence[DatasetReader | str], storage_options: Mapping[str, Any]
) -> list[DatasetReader]:
    """Open datasets given as URLs (or already open); sample names must be distinct.

    Raises:
        InvalidArgumentError: For no dataset.
        DatasetError: For two datasets of one sample.
        Bams3Error, OSError: For a path that is not a usable dataset.
    """
    items: Sequence[DatasetReader | str] = (
        [datasets] if isinstance(datasets, (DatasetReader, str)) else datasets
    )
    if not items:
        raise InvalidArgumentError("no dataset given")
    out = [d if isinstance(d, DatasetReader) else DatasetReader.open(d, **storage_options) for d in items]
    check_distinct_samples(out)
    return out


def parse_coverage_region(ds: DatasetReader, text: str) -> Region:
    """Parse a samtools region for coverage (unplaced reads ``*`` have none).

    Raises:
        RegionError: For a malformed region, an unknown reference or ``*``.
    """
    region = ds.parse_region(text)
    if region.unplaced:
        raise RegionError(f"region {text!r}: unplaced reads have no coverage")
    return region


@contextmanager
def system_arrow_pool() -> Iterator[None]:
    """Let Arrow allocate with the C library's malloc meanwhile (its default, mimalloc, is restored).

    Counting reads Parquet and builds small Arrow arrays chunk after chunk;
    mimalloc keeps about 70 MB more of such freed memory per process than
    glibc does (measured on the bench dataset), which counts twice with two
    processes. Buffers remember their pool, so switching is safe.
    """
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def _lean_worker() -> None:
    """Initializer of write_coverage's worker processes: glibc keeps freed memory, Arrow uses glibc."""
    keep_freed_memory()
    pa.set_memory_pool(pa.system_memory_pool())


@dataclass(frozen=True)
class _Task:
    """One slice to compute in a worker, and what to send back."""

    ds: DatasetReader
    rname: str
    region: Region | None
    options: CoverageOptions
    keep_depth: bool = False
    table_by: int | list[BedRegion] | None | bool = False  # False: no table
    per_base_path: str | None = None
    plan: MosdepthPlan | None = None  # summarize for a MosdepthWriter
    by: int | list[BedRegion] | None = None  # the regions a region summary reports
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
    """Write a slice's per-base lines as a BGZF file (level 1, like mosdepth's per-base file)."""
    with BgzfWriter(path, level=1) as out:
        out.write(per_base_text(sl.depth, sl.start))


def _run_task(task: _Task) -> _Result:
    if (
        task.plan is not None and task.region is None and task.reduce is None and not task.keep_depth
        and task.table_by is False and can_stream(task.plan, task.options)
    ):
        # The files of a whole reference, in bounded memory (coverage.streaming).
        summary = stream_summary(task.ds, task.rname, task.options, task.plan, task.per_base_path)
        if summary is not None:
            return _Result(task.ds.sample, task.rname, per_base_path=task.per_base_path, summary=summary)
    sl = compute_slice(task.ds, task.rname, task.options, task.region)
    res = _Result(sl.sample, sl.rname)
    if task.per_base_path is not None:
        _write_per_base_part(sl, task.per_base_path)
        res.per_base_path = task.per_base_path
    if task.table_by is not False:
        res.table = slice_table(sl, task.table_by)  # type: ignore[arg-type]
    if task.plan is not None:
        if task.plan.region:
            regions = slice_regions(sl, task.by) if task.by is not None else []
            res.summary = task.plan.summarize(sl.depth, regions=regions, offset=sl.start)
        else:
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
    yield from process_map(_run_task, tasks, min(workers, len(tasks)), initializer=keep_freed_memory)


def _plan(
    datasets: Sequence[DatasetReader], region: str | None
) -> list[tuple[DatasetReader, str, Region | None]]:
    """(dataset, reference, region) of every slice, datasets in order, references in header order."""
    out: list[tuple[DatasetReader, str, Region | None]] = []
    for ds in datasets:
        if region is not None:
            r = parse_coverage_region(ds, region)
            out.append((ds, r.rname, r))
        else:
            out += [(ds, name, None) for name, _ in ds.references]
    return out


def _chunk_weights(ds: DatasetReader, rname: str, region: Region | None) -> tuple[int, int]:
    """(chunk objects, bytes) one slice reads, for progress: the reference's, or the region's."""
    if region is None:
        entry = ds.reference_entry(rname)
        return entry.chunks, entry.bytes
    chunks = ds.chunks(region)
    return len(chunks), sum(c.info.bytes for c in chunks)


def iter_depths(
    datasets: DatasetReader | str | Sequence[DatasetReader | str],
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
    opts = options or CoverageOptions()
    n = resolve_workers(workers)
    plan = _plan(open_datasets(datasets, storage_options), region)
    tasks = [_Task(ds, rname, reg, opts, keep_depth=True) for ds, rname, reg in plan]
    for res in _run_in_order(tasks, n):
        assert res.depth is not None
        yield res.depth


def coverage_table(
    datasets: DatasetReader | str | Sequence[DatasetReader | str],
    by: ByArg = None,
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


@dataclass
class CoverageRun:
    """What :func:`write_coverage` wrote.

    Attributes:
        paths: Files written per sample (dataset order), sorted by name.
    """

    paths: dict[str, list[str]] = field(default_factory=dict)


def reference_summary(
    ds: DatasetReader, rname: str, options: CoverageOptions, plan: MosdepthPlan, by: int | None,
    per_base_path: str | None,
) -> ReferenceSummary:
    """A whole reference's mosdepth summary (and per-base BGZF part), as :func:`write_coverage` makes it.

    Adding the summaries of a sample's references in header order to a
    :class:`MosdepthWriter` (with ``per_base=False``) and concatenating the
    parts gives the files of :func:`write_coverage` (the Spark job's
    ``--format mosdepth`` with references as units).
    """
    res = _run_task(_Task(ds, rname, None, options, per_base_path=per_base_path, plan=plan, by=by))
    assert res.summary is not None
    return res.summary


def sample_prefix(prefix: str, sample: str, n_datasets: int) -> str:
    """Output prefix of one sample: ``PREFIX`` alone, ``PREFIX.SAMPLE`` for several."""
    if n_datasets == 1:
        return prefix
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in sample)
    return f"{prefix}.{safe}"


def write_coverage(
    datasets: DatasetReader | str | Sequence[DatasetReader | str],
    prefix: str | os.PathLike[str] | None,
    *,
    by: ByArg = None,
    thresholds: Sequence[int] | None = None,
    per_base: bool = True,
    precision: int = 2,
    options: CoverageOptions | None = None,
    region: str | None = None,
    workers: int | str | None = 1,
    reduce_slice: Callable[[DepthSlice], Any] | None = None,
    on_reduced: Callable[[Any], None] | None = None,
    progress: ProgressCallback | None = None,
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
        progress: Called as each reference is done with (chunk objects
            done, chunk objects in all, bytes of those done).
        **storage_options: fsspec options for URLs.

    Returns:
        The files written.

    Raises:
        InvalidArgumentError: For bad arguments.
        RegionError, Bams3Error, OSError: For bad regions, datasets or storage.
    """
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

    writers: dict[str, MosdepthWriter] = {}
    bases: dict[str, BgzfConcatenator] = {}
    tasks: list[_Task] = []
    ok = False
    try:
        for sample, p in prefixes.items():
            # Per-base files are assembled from the workers' BGZF parts below.
            writers[sample] = MosdepthWriter(
                p, by=spec, thresholds=thr or None, per_base=False, precision=precision,
                region=region is not None,
            )
            if per_base:
                bases[sample] = BgzfConcatenator(p + ".per-base.bed.gz")
        for i, (ds, rname, reg) in enumerate(plan):
            w = writers.get(ds.sample)
            part = f"{prefixes[ds.sample]}.per-base.bed.gz.part{i:06d}" if w and per_base else None
            tasks.append(
                _Task(
                    ds,
                    rname,
                    reg,
                    opts,
                    per_base_path=part,
                    plan=w.plan() if w is not None else None,
                    by=spec,
                    reduce=reduce_slice,
                )
            )
        chunk_weights = [_chunk_weights(ds, rname, reg) for ds, rname, reg in plan] if progress else []
        total = sum(w[0] for w in chunk_weights)
        done = nbytes = 0
        # The summaries and per-base parts are small: this process counts its
        # share of the references too (one process fewer, less memory).
        weights = [ds.lengths[rname] for ds, rname, _ in plan]
        runs = caller_shared_map(_run_task, tasks, min(n_workers, len(tasks)), weights, _lean_worker)
        with system_arrow_pool():
            for i, res in enumerate(runs):
                if progress is not None:
                    done, nbytes = done + chunk_weights[i][0], nbytes + chunk_weights[i][1]
                    progress(done, total, nbytes)
                w = writers.get(res.sample)
                if w is not None:
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
