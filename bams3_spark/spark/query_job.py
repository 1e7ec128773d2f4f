"""Cohort region query on Spark (``spark-submit jobs/query.py``).

The seeds' case: the reads of one gene (BRCA1, ``chr17:43044295-43125364``)
across a thousand samples. Every dataset is read through the ``bams3`` data
source, so the work is one Spark task per chunk object overlapping the
region, in every sample at once:

- ``count``: per-sample record counts (``samtools view -c`` of each sample),
  one row per sample in dataset order, zero when a sample has no record there.
  Only ``pos``/``end`` are read, and only for chunks the region cuts;
  chunks inside the region are counted from the index.
- records as Parquet or CSV: the record columns plus ``sample``, written by
  Spark to a directory of part files.
- ``sam``: one SAM file per sample (``OUT/<sample>.sam``): the dataset's
  header, then its records in ``samtools view`` order. Executors format SAM
  text; the driver streams it, partition by partition, into the files, so
  ``OUT`` may be a local directory or an S3 prefix.

Several regions select the records overlapping any of them, each once
(``samtools view -M``). Everything is validated on the driver before Spark
starts: a bad dataset, region or output fails in about a second.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bams3_spark.exceptions import InvalidArgumentError
from bams3_spark.spark.scan import ScanConfig, resolve_scan, scan_options

FORMATS = ("parquet", "csv", "sam")
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class QueryResult:
    """What a query job wrote.

    Attributes:
        out: The output location.
        format: ``parquet``, ``csv`` or ``sam``.
        samples: Number of samples queried.
        counts: Per-sample record counts (``count`` and ``sam`` outputs), in
            dataset order; None for Parquet/CSV records.
    """

    out: str
    format: str
    samples: int
    counts: dict[str, int] | None = None

    @property
    def records(self) -> int | None:
        """Total records counted or written, when known."""
        return None if self.counts is None else sum(self.counts.values())


def sam_file_name(sample: str) -> str:
    """Return the SAM file name of a sample: unsafe characters become ``_``."""
    return _UNSAFE_FILE_CHARS.sub("_", sample)[:200] + ".sam"


def _check_output(out: str, overwrite: bool, storage_options: dict[str, Any]) -> None:
    from bams3_spark.io.storage import Storage

    storage = Storage(out, **storage_options)
    if storage.protocol not in ("file", "s3"):
        return  # hdfs:// and friends: Spark's own writer refuses existing paths
    if storage.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (use --overwrite to replace it)")


def run_query(
    datasets: Sequence[str],
    out: str,
    *,
    regions: Sequence[str] = (),
    fmt: str = "parquet",
    count: bool = False,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    spark: Any = None,
) -> QueryResult:
    """Run a cohort region query and write its result to ``out``.

    Args:
        datasets: Dataset paths, URLs or globs (a cohort).
        out: Output directory (Parquet/CSV: a Spark output path; SAM: a local
            directory or object-store prefix).
        regions: samtools regions; none selects every record.
        fmt: ``parquet``, ``csv`` or ``sam``.
        count: Write per-sample counts instead of records (not with ``sam``).
        overwrite: Replace an existing output.
        storage_options: ``endpoint_url``, ``anon``, ``profile``... for the
            datasets (and a SAM output on S3).
        spark: A SparkSession; default: :func:`bams3_spark.spark.session.get_session`.

    Returns:
        What was written.

    Raises:
        InvalidArgumentError: For a bad format, option or region.
        DatasetError: For an unusable dataset (not one, incomplete...).
        FileExistsError: If ``out`` exists and ``overwrite`` is false.
        OSError: For storage failures.
    """
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")
    if count and fmt == "sam":
        raise InvalidArgumentError("--count writes a table: use --format parquet or csv")
    opts = dict(storage_options or {})
    options = scan_options(list(datasets), regions=list(regions), **opts)
    scan = resolve_scan(options)
    # Spark plans the datasets validated here (globs expanded once).
    options["paths"] = json.dumps([d.url for d in scan.datasets])
    if fmt == "sam":
        names = [sam_file_name(s) for s in scan.samples]
        if len(set(names)) != len(names):
            raise InvalidArgumentError("two samples map to the same SAM file name; rename one (SM tag)")
    _check_output(out, overwrite, opts)

    if spark is None:
        from bams3_spark.spark.session import get_session

        spark = get_session(app_name="bams3-query")
    if count:
        return _write_counts(spark, scan, options, out, fmt, overwrite)
    if fmt == "sam":
        return _write_sam(spark, scan, options, out, overwrite, opts)
    from bams3_spark.spark.datasource import load_bams3  # pyspark 4.0+ only

    df = load_bams3(spark, options)
    writer = df.write.mode("overwrite" if overwrite else "errorifexists")
    if fmt == "csv":
        # RFC 4180 quoting (a quote doubles): QUAL strings hold '"' and '\'.
        (writer.option("header", "true").option("escape", '"')
         .option("ignoreLeadingWhiteSpace", "false").option("ignoreTrailingWhiteSpace", "false")
         .csv(_spark_path(out)))
    else:
        writer.parquet(_spark_path(out))
    return QueryResult(out, fmt, len(scan.datasets))


def _spark_path(out: str) -> str:
    # Spark resolves relative paths against its own working directory; the
    # user meant ours.
    return out if "://" in out else os.path.abspath(out)


def _write_counts(spark: Any, scan: ScanConfig, options: dict[str, str], out: str, fmt: str,
                  overwrite: bool) -> QueryResult:
    from bams3_spark.spark.datasource import load_bams3  # pyspark 4.0+ only

    df = load_bams3(spark, options, columns=["sample"])
    found = {row["sample"]: int(row["count"]) for row in df.groupBy("sample").count().collect()}
    counts = {s: found.get(s, 0) for s in scan.samples}
    table = spark.createDataFrame(list(counts.items()), "sample string, count long")
    writer = table.coalesce(1).write.mode("overwrite" if overwrite else "errorifexists")
    if fmt == "csv":
        writer.option("header", "true").csv(_spark_path(out))
    else:
        writer.parquet(_spark_path(out))
    return QueryResult(out, fmt, len(counts), counts)


def _sam_text(batches: Iterator[Any]) -> Iterator[Any]:
    """mapInArrow function (executors): record batches -> (sample, SAM text) rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from bams3_spark.query.output import sam_bytes

    for batch in batches:
        if batch.num_rows == 0:
            continue
        samples = batch.column("sample")
        sample = samples[0].as_py()
        # One partition is one chunk of one dataset, so a batch has one sample.
        if not pc.all(pc.equal(samples, sample)).as_py():
            raise RuntimeError("bams3 query: a batch mixes samples")
        text = bytes(sam_bytes(pa.Table.from_batches([batch])))
        yield pa.RecordBatch.from_arrays(
            [pa.array([sample], pa.string()), pa.array([text], pa.binary())], names=["sample", "text"]
        )


def _write_sam(spark: Any, scan: ScanConfig, options: dict[str, str], out: str, overwrite: bool,
               storage_options: dict[str, Any]) -> QueryResult:
    from bams3_spark.dataset.reader import DatasetReader
    from bams3_spark.format.schema import SAM_COLUMNS
    from bams3_spark.io.storage import Storage
    from bams3_spark.parallel import thread_map

    headers: list[str] = list(
        thread_map(lambda d: DatasetReader.open(d.url, **storage_options).header, scan.datasets, 16)
    )
    storage = Storage(out, **storage_options)
    if overwrite:
        storage.delete_tree()
    from bams3_spark.spark.datasource import load_bams3  # pyspark 4.0+ only

    df = load_bams3(spark, options, columns=[*SAM_COLUMNS, "tags", "sample"])
    texts = df.mapInArrow(_sam_text, "sample string, text binary")
    counts = dict.fromkeys(scan.samples, 0)
    order = iter(zip(scan.samples, headers, strict=True))
    current: str | None = None
    fh: Any = None

    def open_next(until: str | None) -> Any:
        """Close the current file; write header-only files up to ``until``; open its file."""
        nonlocal fh, current
        if fh is not None:
            fh.close()
            fh = None
        for sample, header in order:
            f = _open_output(storage, sam_file_name(sample))
            f.write(header.encode())
            if sample == until:
                current, fh = sample, f
                return f
            f.close()
        if until is not None:
            raise RuntimeError(f"bams3 query: rows of sample {until!r} out of dataset order")
        return None

    try:
        for row in texts.toLocalIterator(prefetchPartitions=True):
            if row["sample"] != current:
                open_next(row["sample"])
            data = row["text"]
            fh.write(data)
            counts[row["sample"]] += data.count(b"\n")
        open_next(None)
    finally:
        if fh is not None:
            fh.close()
    return QueryResult(out, "sam", len(counts), counts)


def _open_output(storage: Any, name: str) -> Any:
    if storage.is_local:
        os.makedirs(storage.root, exist_ok=True)
        return open(storage.full_path(name), "wb")  # noqa: SIM115 - closed by the caller
    try:
        return storage.fs.open(storage.full_path(name), "wb")
    except Exception as exc:  # noqa: BLE001 - storage clients raise anything
        raise OSError(f"{storage.url_of(name)}: cannot write ({exc})") from exc


def report(prog: str, result: QueryResult) -> int:
    """Print a job's summary on stderr (and per-sample counts on stdout); return 0."""
    what = f"{result.records:,} records" if result.records is not None else "records"
    print(f"{prog}: {result.samples:,} sample(s), {what} -> {result.out} ({result.format})", file=sys.stderr)
    if result.counts is not None and result.format != "sam":
        for sample, n in result.counts.items():
            print(f"{sample}\t{n}")
    return 0


__all__ = ["FORMATS", "QueryResult", "report", "run_query", "sam_file_name"]
