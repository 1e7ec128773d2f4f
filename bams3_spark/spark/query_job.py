"""Cohort region query on Spark (``spark-submit jobs/query.py``).

The seeds' case: the reads of one gene (BRCA1, ``chr17:43044295-43125364``)
across a thousand samples. The work is split by sample
(:mod:`bams3_spark.spark.cohort`): the driver reads only manifests and
bundles consecutive samples into a few tasks per core; each task runs the
local query engine (:mod:`bams3_spark.query`, what ``bams3 query`` runs) on
its samples and writes or returns their results:

- ``count``: per-sample record counts (``samtools view -c`` of each sample),
  one row per sample in cohort order, zero when a sample has no record
  there; chunks inside the region are counted from the index. Written as a
  one-file Parquet or CSV table and printed.
- ``bam`` / ``sam``: one file per sample, ``OUT/<sample>.bam`` (coordinate
  sorted like the dataset, indexable) or ``OUT/<sample>.sam`` (with header):
  the records ``bams3 query`` gives on that dataset, written by the task
  that read them, moved into ``OUT`` complete (local directory or S3 prefix).
- records as Parquet or CSV: the record columns plus ``sample``, written by
  the tasks, partitioned by sample (``OUT/sample=NAME/part-*``).

Several regions select the records overlapping any of them, each once, in
file order (``samtools view -M``). Everything is validated on the driver
before Spark starts: a bad dataset, region or output fails in about a
second. Nothing per record reaches the driver: only a count per sample.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from bams3_spark.exceptions import InvalidArgumentError
from bams3_spark.spark.cohort import Unit, safe_name

FORMATS = ("parquet", "csv", "bam", "sam")
#: Tasks per core.
TASKS_PER_CORE = 4
#: Concurrent chunk reads in one task (object stores: hide request latency).
TASK_READ_THREADS = 4
_COUNT_SCHEMA = pa.schema([("sample", pa.string()), ("count", pa.int64())])


@dataclass
class QueryResult:
    """What a query job wrote.

    Attributes:
        out: The output location.
        format: ``parquet``, ``csv``, ``bam`` or ``sam``.
        samples: Number of samples queried.
        counts: Per-sample record counts (``count``, ``bam`` and ``sam``
            outputs), in cohort order; None for Parquet/CSV records.
        costs: The job's :class:`~bams3_spark.spark.costs.JobCosts`.
    """

    out: str
    format: str
    samples: int
    counts: dict[str, int] | None = None
    costs: Any = field(default=None)

    @property
    def records(self) -> int | None:
        """Total records counted or written, when known."""
        return None if self.counts is None else sum(self.counts.values())


def sample_file_name(sample: str, fmt: str) -> str:
    """Return the output file name of a sample: unsafe characters become ``_``."""
    return f"{safe_name(sample)}.{fmt}"


@dataclass(frozen=True)
class _Spec:
    regions: tuple[str, ...]
    storage_options: Mapping[str, Any]
    kind: str  # count, bam, sam, records
    out: str | None = None


def _plan(unit: Unit, spec: _Spec) -> tuple[Any, Any]:
    from bams3_spark.query import Query, plan_query
    from bams3_spark.spark.cohort import open_counted

    ds = open_counted(unit, spec.storage_options)
    plan = plan_query(ds, list(spec.regions) or None, None, TASK_READ_THREADS, merge=True)
    return ds, Query(plan)


def _costs(ds: Any, query: Any) -> list[int]:
    from bams3_spark.spark.cohort import unit_costs

    return unit_costs(ds, len({t.chunk.info.path for t in query.plan.tasks}))


def _count_unit(unit: Unit, spec: _Spec) -> tuple[pa.RecordBatch, list[int]]:
    ds, query = _plan(unit, spec)
    n = query.count(TASK_READ_THREADS)
    batch = pa.RecordBatch.from_pydict({"sample": [unit.sample], "count": [n]}, schema=_COUNT_SCHEMA)
    costs = _costs(ds, query)
    # Chunks answered from the index are not read.
    costs[1] = len({t.chunk.info.path for t in query.plan.tasks if not t.whole})
    return batch, costs


def _file_unit(unit: Unit, spec: _Spec) -> tuple[pa.RecordBatch, list[int]]:
    from bams3_spark.bam.writer import write_bam
    from bams3_spark.query import write_sam
    from bams3_spark.spark.outputs import publish, staging

    assert spec.out is not None
    ds, query = _plan(unit, spec)
    name = sample_file_name(unit.sample, spec.kind)
    with staging(spec.out, spec.storage_options) as folder:
        path = os.path.join(folder, name)
        if spec.kind == "bam":
            n = write_bam(path, ds.header, query.tables(TASK_READ_THREADS))
        else:
            with open(path, "wb") as fh:
                n = write_sam(fh, query.tables(TASK_READ_THREADS), ds.header)
        publish(path, spec.out, name, spec.storage_options)
    batch = pa.RecordBatch.from_pydict({"sample": [unit.sample], "count": [n]}, schema=_COUNT_SCHEMA)
    return batch, _costs(ds, query)


def _record_batches(unit: Unit, spec: _Spec, schema: pa.Schema) -> tuple[list[pa.RecordBatch], list[int]]:
    ds, query = _plan(unit, spec)
    out = []
    for table in query.tables(TASK_READ_THREADS):
        if table.num_rows:
            table = table.append_column("sample", pa.array([unit.sample] * table.num_rows, pa.string()))
            out += table.cast(schema).to_batches()
    return out, _costs(ds, query)


def _map(spec: _Spec, acc: Any, schema: pa.Schema | None = None) -> Any:
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for payload in batch.column("units").to_pylist():
                for unit in pickle.loads(payload):
                    if spec.kind == "count":
                        one, figures = _count_unit(unit, spec)
                        yield one
                    elif spec.kind in ("bam", "sam"):
                        one, figures = _file_unit(unit, spec)
                        yield one
                    else:
                        assert schema is not None
                        many, figures = _record_batches(unit, spec, schema)
                        yield from many
                    acc.add(figures)

    return run


def _spark_path(out: str) -> str:
    # Spark resolves relative paths against its own working directory; the
    # user meant ours.
    return out if "://" in out else os.path.abspath(out)


def _check_regions(cohort: Any, regions: Sequence[str]) -> None:
    """Parse the regions against the first dataset, so a typo fails before Spark starts."""
    from bams3_spark.dataset.reader import DatasetReader
    from bams3_spark.exceptions import RegionError
    from bams3_spark.query.plan import parse_selections

    first = cohort.samples[0]
    try:
        parse_selections(DatasetReader.open(first.url, **cohort.storage_options), list(regions) or None)
    except RegionError as exc:
        raise RegionError(f"{first.url}: {exc}") from None


def run_query(
    datasets: Sequence[str],
    out: str,
    *,
    regions: Sequence[str] = (),
    fmt: str = "parquet",
    count: bool = False,
    overwrite: bool = False,
    manifest: str | None = None,
    storage_options: dict[str, Any] | None = None,
    spark: Any = None,
) -> QueryResult:
    """Run a cohort region query and write its result to ``out``.

    Args:
        datasets: Dataset paths, URLs or globs (a cohort).
        out: Output directory (a local directory or an object-store prefix).
        regions: samtools regions; none selects every record.
        fmt: ``parquet``, ``csv``, ``bam`` or ``sam``.
        count: Write per-sample counts instead of records (``parquet`` or ``csv``).
        overwrite: Replace an existing output.
        manifest: A sample sheet (:func:`bams3_spark.spark.cohort.parse_sample_sheet`).
        storage_options: ``endpoint_url``, ``anon``, ``profile``... for the
            datasets and the output.
        spark: A SparkSession; default: :func:`bams3_spark.spark.session.get_session`.

    Returns:
        What was written, with the job's costs.

    Raises:
        InvalidArgumentError: For a bad format, option or region.
        DatasetError: For an unusable dataset or two datasets of one sample.
        FileExistsError: If ``out`` exists and ``overwrite`` is false.
        OSError: For storage failures.
    """
    from bams3_spark.spark.cohort import bundle, check_file_names, resolve_cohort
    from bams3_spark.spark.costs import JobCosts, accumulator, add_costs, log_plan
    from bams3_spark.spark.outputs import abort_output, finish_output, prepare_output

    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")
    if count and fmt in ("bam", "sam"):
        raise InvalidArgumentError("--count writes a table: use --format parquet or csv")
    t0 = time.monotonic()
    opts = dict(storage_options or {})
    if spark is None:
        from bams3_spark.spark.session import get_session

        spark = get_session(app_name="bams3-query")
    cores = max(1, int(spark.sparkContext.defaultParallelism))
    cohort = resolve_cohort(list(datasets), manifest, opts, parallelism=cores)
    _check_regions(cohort, regions)
    if fmt in ("bam", "sam"):
        check_file_names(cohort.names)
    units = [Unit(s.sample, s.url, s.index, bytes=s.bytes) for s in cohort.samples]
    groups = bundle(units, TASKS_PER_CORE * cores)
    kind = "count" if count else fmt if fmt in ("bam", "sam") else "records"
    spec = _Spec(tuple(regions), opts, kind, out if kind in ("bam", "sam") else None)
    # Output checked before the plan is shown: a refused output is the job's only line.
    storage = None
    if kind in ("bam", "sam"):
        storage = prepare_output(out, overwrite, opts)
    else:
        _check_output(out, overwrite, opts)
    acc = accumulator(spark)
    costs = JobCosts(samples=len(cohort), tasks=len(groups), planning_seconds=time.monotonic() - t0)
    log_plan(costs, cohort, len(units))
    from pyspark.sql.pandas.types import from_arrow_schema

    rows = [(i, pickle.dumps(g)) for i, g in enumerate(groups)]
    frame = spark.createDataFrame(spark.sparkContext.parallelize(rows, max(1, len(rows))),
                                  "task int, units binary")
    mode = "overwrite" if overwrite else "errorifexists"
    counts: dict[str, int] | None = None
    if kind == "records":
        from bams3_spark.format.schema import RECORD_SCHEMA

        schema = pa.schema([*RECORD_SCHEMA, pa.field("sample", pa.string(), nullable=False)])
        records = frame.mapInArrow(_map(spec, acc, schema), from_arrow_schema(schema))
        writer = records.write.mode(mode).partitionBy("sample")
        if fmt == "csv":
            # RFC 4180 quoting (a quote doubles): QUAL strings hold '"' and '\'.
            (writer.option("header", "true").option("escape", '"')
             .option("ignoreLeadingWhiteSpace", "false").option("ignoreTrailingWhiteSpace", "false")
             .csv(_spark_path(out)))
        else:
            writer.parquet(_spark_path(out))
    else:
        try:
            found = frame.mapInArrow(_map(spec, acc), from_arrow_schema(_COUNT_SCHEMA)).collect()
        except BaseException:
            if storage is not None:
                abort_output(storage)
            raise
        by_sample = {r["sample"]: int(r["count"]) for r in found}
        counts = {s: by_sample.get(s, 0) for s in cohort.names}
        if kind == "count":
            table = spark.createDataFrame(list(counts.items()), "sample string, count long")
            writer = table.coalesce(1).write.mode(mode)
            if fmt == "csv":
                writer.option("header", "true").csv(_spark_path(out))
            else:
                writer.parquet(_spark_path(out))
        elif storage is not None:
            finish_output(storage)
    return QueryResult(out, fmt, len(cohort), counts, add_costs(costs, acc.value))


def _check_output(out: str, overwrite: bool, storage_options: dict[str, Any]) -> None:
    from bams3_spark.io.storage import Storage

    storage = Storage(out, **storage_options)
    if storage.protocol not in ("file", "s3"):
        return  # hdfs:// and friends: Spark's own writer refuses existing paths
    if storage.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (use --overwrite to replace it)")


def report(prog: str, result: QueryResult) -> int:
    """Print a job's summary on stderr (and per-sample counts on stdout); return 0."""
    what = f"{result.records:,} records" if result.records is not None else "records"
    print(f"{prog}: {result.samples:,} sample(s), {what} -> {result.out} ({result.format})", file=sys.stderr)
    if result.costs is not None:
        print(f"{prog}: {result.costs.line()}", file=sys.stderr)
    if result.counts is not None and result.format not in ("bam", "sam"):
        sys.stdout.write("".join(f"{sample}\t{n}\n" for sample, n in result.counts.items()))
    return 0


__all__ = ["FORMATS", "QueryResult", "report", "run_query", "sample_file_name"]
