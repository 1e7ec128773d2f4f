"""Distributed coverage: mosdepth's numbers over a cohort of BAMS3 datasets with Spark.

:func:`coverage_dataframe` returns a DataFrame ``sample, rname, start, end,
depth`` (per-base depth as run-length intervals) or ``... mean_depth`` (mean
depth per ``by``-base window), row for row the table of the local engine
(:func:`bams3_spark.coverage.engine.coverage_table`). :func:`run_coverage`
writes it as Parquet, CSV or bedGraph, or writes each sample's mosdepth files
(``--format mosdepth``); ``jobs/coverage.py`` is its command line.

How the work is split (:mod:`bams3_spark.spark.cohort`), and why it is as
efficient per core as ``bams3 coverage``:

1. **Plan (driver, O(samples)).** Only manifests are read: a few numbers per
   sample. With at least three samples per core, a unit of work is a whole
   sample; with fewer, a reference of a sample, and a reference larger than
   its share of the work is cut into runs of consecutive chunks by the byte
   sizes in its index. Consecutive units are bundled into a few tasks per
   core of similar bytes, in cohort order.
2. **Count (executors).** Each task runs the local engine on its units
   (:mod:`bams3_spark.spark.coverage_tasks`): a sample or a reference is
   counted exactly as ``bams3 coverage`` counts it and leaves as finished
   Arrow rows (``mapInArrow``), so the part files are in cohort order with no
   shuffle and no sort. ``--format mosdepth`` writes each sample's files from
   the task that counted it.
3. **Split references only (few samples).** A run of chunks is counted alone;
   its contribution and mate state (a few rows per run) are grouped by
   (sample, reference) on the executors (``groupBy().applyInPandas``), where
   mate overlaps across run boundaries are resolved
   (:func:`~bams3_spark.coverage.chunked.mate_corrections`). Nothing per read
   ever reaches the driver: it receives a summary of a few integers per task.

Exact for every counting mode: the same engine, the same order of reads.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bams3_spark.coverage.options import CoverageOptions
from bams3_spark.exceptions import InvalidArgumentError

#: Output formats of :func:`run_coverage`.
FORMATS = ("parquet", "csv", "bedgraph", "mosdepth")
#: Tasks per core: enough for balance, few enough that start-up costs stay small.
TASKS_PER_CORE = 4


@dataclass
class CoverageResult:
    """What a coverage job did: where, and its :class:`~bams3_spark.spark.costs.JobCosts`."""

    out: str
    format: str
    costs: Any


def _check_by(by: int | None) -> None:
    if by is not None and (isinstance(by, bool) or not isinstance(by, int) or by <= 0):
        raise InvalidArgumentError(f"window size must be a positive integer; got {by!r}")


def _units_frame(spark: Any, groups: Sequence[Sequence[Any]]) -> Any:
    """A DataFrame with one row (a pickled list of units) per partition, in order."""
    rows = [(i, pickle.dumps(list(g))) for i, g in enumerate(groups)]
    rdd = spark.sparkContext.parallelize(rows, max(1, len(rows)))
    return spark.createDataFrame(rdd, "task int, units binary")


@dataclass
class _Plan:
    frame: Any  # finished rows, helper columns sidx, tid
    sorted: bool  # rows already in cohort order, partition by partition
    costs: Any
    accumulator: Any


def _plan(
    spark: Any, paths: Sequence[str], manifest: str | None, by: int | None, options: CoverageOptions,
    storage_options: Mapping[str, Any], split: bool = True, cores: int | None = None,
) -> _Plan:
    from pyspark.sql.types import StructType

    from bams3_spark.spark.cohort import bundle, plan_units, resolve_cohort
    from bams3_spark.spark.costs import JobCosts, accumulator, log_plan
    from bams3_spark.spark.coverage_tasks import (
        PARTIAL_SCHEMA,
        CoverageSpec,
        map_units,
        reduce_groups,
        row_schema,
    )

    _check_by(by)
    t0 = time.monotonic()
    cores = max(1, int(cores or spark.sparkContext.defaultParallelism))
    cohort = resolve_cohort(list(paths), manifest, storage_options, parallelism=cores)
    units = plan_units(cohort, cores, split_references=split)
    whole = [u for u in units if not u.split]
    runs = [u for u in units if u.split]
    groups = bundle(whole, TASKS_PER_CORE * cores)
    # Split references are resolved in one reduce task each, per (sample, reference).
    n_refs = len({(u.sample, u.rname) for u in runs})
    costs = JobCosts(samples=len(cohort), tasks=len(groups) + len(runs) + n_refs,
                     planning_seconds=time.monotonic() - t0)
    log_plan(costs, cohort, len(units))
    acc = accumulator(spark)
    spec = CoverageSpec(options, by, dict(storage_options))
    from pyspark.sql.pandas.types import from_arrow_schema

    schema: StructType = from_arrow_schema(row_schema(by))
    frame = _units_frame(spark, groups).mapInArrow(map_units(spec, "rows", acc), schema)
    if runs:
        partials = _units_frame(spark, [[u] for u in runs]).mapInArrow(
            map_units(spec, "partial", acc), from_arrow_schema(PARTIAL_SCHEMA)
        )
        reduced = (partials.repartition(n_refs, "sidx", "tid")
                   .groupBy("sample", "sidx", "tid", "rname").applyInPandas(reduce_groups(spec), schema))
        frame = frame.unionByName(reduced) if groups else reduced
    return _Plan(frame, not runs, costs, acc)


def coverage_dataframe(
    spark: Any,
    paths: str | Sequence[str],
    by: int | None = None,
    options: CoverageOptions | None = None,
    *,
    manifest: str | None = None,
    split: bool = True,
    cores: int | None = None,
    **storage_options: Any,
) -> Any:
    """Coverage of one or many datasets as a Spark DataFrame.

    Args:
        spark: The SparkSession.
        paths: Dataset path(s), URL(s) or glob(s) (one sample each).
        by: Window size for mean depth per window (``mosdepth --by N``);
            None for per-base depth as run-length intervals.
        options: Counting options (default: mosdepth's).
        manifest: A sample sheet (:func:`bams3_spark.spark.cohort.parse_sample_sheet`).
        split: Allow splitting a reference into runs of chunks (few samples).
        cores: Plan for this many cores (default: Spark's default parallelism).
        **storage_options: ``endpoint_url``, ``anon``, ``profile``...

    Returns:
        ``sample, rname, start, end, depth`` (per-base runs, 0-depth runs
        included, covering every reference) or ``sample, rname, start, end,
        mean_depth`` (every window of every reference); int32 coordinates,
        0-based half-open; sorted by dataset order, header order, start. The
        same rows as :func:`bams3_spark.coverage.engine.coverage_table`.

    Raises:
        InvalidArgumentError: For a bad window or options.
        Bams3Error, OSError: For unusable datasets (checked before any task).
    """
    plan = _plan(spark, [paths] if isinstance(paths, str) else list(paths), manifest, by,
                 options or CoverageOptions(), storage_options, split, cores)
    value = "mean_depth" if by is not None else "depth"
    return plan.frame.orderBy("sidx", "tid", "start").select("sample", "rname", "start", "end", value)


def _spark_path(out: str) -> str:
    import os

    # Spark resolves relative paths against its own working directory; the user meant ours.
    return out if "://" in out else os.path.abspath(out)


def run_coverage(
    spark: Any,
    paths: Sequence[str],
    out: str,
    *,
    by: int | None = None,
    fmt: str = "parquet",
    options: CoverageOptions | None = None,
    overwrite: bool = False,
    manifest: str | None = None,
    per_base: bool = True,
    thresholds: Sequence[int] = (),
    cores: int | None = None,
    **storage_options: Any,
) -> CoverageResult:
    """Compute coverage and write it to ``out``.

    Formats:

    - ``parquet``: the DataFrame of :func:`coverage_dataframe` (part files in order).
    - ``csv``: the same with a header line.
    - ``bedgraph``: ``out/sample=NAME/part-*.txt``, tab-separated
      ``rname start end value`` lines in genome order, no header.
    - ``mosdepth``: each sample's mosdepth files, ``out/SAMPLE.mosdepth.summary.txt``,
      ``out/SAMPLE.per-base.bed.gz`` (unless ``per_base`` is False),
      ``out/SAMPLE.regions.bed.gz`` (with ``by``)..., identical to
      ``bams3 coverage`` for that sample; written by the executors.

    ``cores`` plans for that many cores (default: Spark's default parallelism).

    Raises:
        InvalidArgumentError: For an unknown format or bad options.
        FileExistsError: If ``out`` exists and ``overwrite`` is False.
        Bams3Error, OSError: For unusable datasets or storage failures.
    """
    from bams3_spark.spark.costs import add_costs

    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown format {fmt!r}; formats are {', '.join(FORMATS)}")
    if thresholds and by is None:
        raise InvalidArgumentError("--thresholds needs --by")
    opts = options or CoverageOptions()
    _check_by(by)
    if fmt == "mosdepth":
        return _run_mosdepth(spark, paths, out, by, opts, overwrite, manifest, per_base, thresholds,
                             cores, storage_options)
    from bams3_spark.io.storage import Storage

    if not overwrite and Storage(out, **storage_options).exists():
        # Checked here: Spark would fail only after computing everything.
        raise FileExistsError(f"{out}: already exists (use --overwrite to replace it)")
    plan = _plan(spark, list(paths), manifest, by, opts, storage_options, cores=cores)
    value = "mean_depth" if by is not None else "depth"
    frame = plan.frame if plan.sorted else plan.frame.orderBy("sidx", "tid", "start")
    mode = "overwrite" if overwrite else "errorifexists"
    if fmt == "bedgraph":
        from pyspark.sql import functions as F  # noqa: N812 - Spark's convention

        lines = frame.select(
            "sample", "sidx", "tid", "start",
            F.concat_ws("\t", "rname", F.col("start").cast("string"), F.col("end").cast("string"),
                        F.col(value).cast("string")).alias("value"),
        )
        # A local sort that the writer's (sample) ordering accepts: no shuffle.
        lines = lines.sortWithinPartitions("sample", "sidx", "tid", "start").select("sample", "value")
        lines.write.mode(mode).partitionBy("sample").text(_spark_path(out))
    else:
        writer = frame.select("sample", "rname", "start", "end", value).write.mode(mode)
        if fmt == "csv":
            writer.option("header", True).csv(_spark_path(out))
        else:
            writer.parquet(_spark_path(out))
    return CoverageResult(out, fmt, add_costs(plan.costs, plan.accumulator.value))


def _run_mosdepth(
    spark: Any, paths: Sequence[str], out: str, by: int | None, options: CoverageOptions, overwrite: bool,
    manifest: str | None, per_base: bool, thresholds: Sequence[int], cores: int | None,
    storage_options: Mapping[str, Any],
) -> CoverageResult:
    """Each sample's mosdepth files, written by the executors (whole samples, or references assembled)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    from bams3_spark.spark.cohort import bundle, check_file_names, plan_units, resolve_cohort
    from bams3_spark.spark.costs import JobCosts, accumulator, add_costs, log_plan
    from bams3_spark.spark.coverage_tasks import (
        FILES_SCHEMA,
        PARTS_DIR,
        SUMMARY_SCHEMA,
        CoverageSpec,
        assemble_sample,
        map_units,
    )
    from bams3_spark.spark.outputs import abort_output, finish_output, prepare_output

    t0 = time.monotonic()
    cores = max(1, int(cores or spark.sparkContext.defaultParallelism))
    cohort = resolve_cohort(list(paths), manifest, storage_options, parallelism=cores)
    check_file_names(cohort.names)
    # Whole samples, or (fewer samples than cores) references: their
    # summaries and per-base parts are then assembled per sample.
    units = plan_units(cohort, cores, split_references=False)
    by_reference = any(u.rname is not None for u in units)
    groups = bundle(units, TASKS_PER_CORE * cores)
    storage = prepare_output(out, overwrite, storage_options)
    spec = CoverageSpec(options, by, dict(storage_options), out, per_base, tuple(sorted(set(thresholds))))
    acc = accumulator(spark)
    costs = JobCosts(samples=len(cohort), tasks=len(groups) + (len(cohort) if by_reference else 0),
                     planning_seconds=time.monotonic() - t0)
    log_plan(costs, cohort, len(units))
    try:
        frame = _units_frame(spark, groups)
        if by_reference:
            files = frame.mapInArrow(map_units(spec, "reference", acc), from_arrow_schema(SUMMARY_SCHEMA))
            files = files.repartition(len(cohort), "sidx").groupBy("sample").applyInPandas(
                assemble_sample(spec), "sample string, files int"
            )
        else:
            files = frame.mapInArrow(map_units(spec, "files", acc), from_arrow_schema(FILES_SCHEMA))
        files.write.format("noop").mode("overwrite").save()
        if by_reference:
            storage.delete_tree(PARTS_DIR)
        finish_output(storage)
    except BaseException:
        abort_output(storage)
        raise
    return CoverageResult(out, "mosdepth", add_costs(costs, acc.value))


__all__ = ["FORMATS", "CoverageResult", "coverage_dataframe", "run_coverage"]
