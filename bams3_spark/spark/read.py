"""``read_bams3``: BAMS3 datasets as a Spark DataFrame, planned with our metadata, scanned by Spark.

What Delta Lake and Iceberg do on Spark: the driver reads the manifests and
indexes (:mod:`bams3_spark.spark.scan`), resolves samples and regions, and picks
the chunk objects the regions need; then

* **Spark's own Parquet reader** (``scan="spark"``) reads exactly those objects
  when the cluster's Hadoop can open the dataset URLs (local files, ``s3://`` on
  EMR, ``gs://`` on Dataproc, ``hdfs://``, ``s3a://`` with hadoop-aws). Column
  pruning, Parquet filter pushdown, packing small files into tasks and page CRC
  checks are Spark's. The ``sample`` column comes from each row's file path
  (``_metadata.file_path``), the region filter is htslib's overlap rule.
* **Python tasks** (``scan="python"``) read the same chunk list elsewhere: an
  fsspec-only store (storage options such as ``endpoint_url``), a scheme the
  cluster's Hadoop lacks, or FORMAT 1.0 chunks on Spark 3.5 (whose vectorized
  reader cannot decode them). ``mapInArrow`` over chunk descriptions, which
  works on pyspark 3.5+; integrity is checked as in every local read.

The path taken is logged (logger ``bams3_spark``, INFO) and shows in
``df.explain()`` (``FileScan parquet`` or ``MapInArrow``). Both paths return the
same schema (:func:`read_schema`) and rows.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bams3_spark.exceptions import InvalidArgumentError
from bams3_spark.spark.compat import check_pyspark, vectorized_reads_format_1_0
from bams3_spark.spark.scan import (
    DEFAULT_BATCH_ROWS,
    DatasetEntry,
    PlannedChunk,
    ScanConfig,
    plan_scan,
    resolve_scan,
    scan_options,
)
from bams3_spark.spark.schema import SAMPLE_COLUMN, record_columns

logger = logging.getLogger("bams3_spark")

#: ``scan=`` values: choose, Spark's Parquet reader, Python tasks.
SCAN_MODES = ("auto", "spark", "python")
#: Up to this many datasets, ``sample`` is looked up in a map literal; above, a broadcast join.
MAP_LITERAL_MAX = 64
#: The Hadoop option that makes parquet-mr verify page CRCs (FORMAT.md §5 "Integrity").
VERIFY_CHECKSUMS = "parquet.page.verify-checksum.enabled"
#: Characters Spark's file source would expand as a glob pattern.
_GLOB_CHARS = frozenset("*?[]{}\\")
#: A chunk object's path under its dataset (FORMAT.md §2): the prefix is what precedes it.
_CHUNK_SUFFIX = r"^(.*)/data/[^/]+/[^/]+$"
_DATASET_COLUMN = "__bams3_dataset"


@dataclass(frozen=True)
class ScanChoice:
    """Which scan path a read takes, and why (logged)."""

    path: str
    reason: str
    vectorized_off: bool = False


def read_schema(columns: Sequence[str] | None = None) -> Any:
    """The schema of :func:`read_bams3`'s DataFrame: :func:`bams3_schema`, every field nullable.

    Spark's file sources make every column nullable, so both scan paths return this.
    """
    from pyspark.sql.types import StructField, StructType

    from bams3_spark.spark.schema import bams3_schema

    return StructType([StructField(f.name, f.dataType, True) for f in bams3_schema(columns).fields])


def read_bams3(
    spark: Any,
    paths: str | Sequence[str],
    *,
    region: str | None = None,
    regions: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    scan: str = "auto",
    batch_rows: int | None = None,
    **storage: Any,
) -> Any:
    """Load BAMS3 datasets (one sample each) as a DataFrame of records plus ``sample``.

    Works on pyspark 3.5 to 4.3. Everything is checked here, on the driver:
    a bad argument, a path that is not a dataset, a region no dataset has,
    mixed format versions or an unreadable URL raise one clear error now,
    never as a failed task.

    Args:
        spark: The SparkSession.
        paths: Dataset path(s), URL(s) or glob(s) of dataset prefixes.
        region: A samtools region (``chr1:1,000-2,000``, ``{HLA-A*01:01}``, ``*``).
        regions: Several regions: records overlapping any of them, once each.
        columns: Columns to read (record columns and/or ``sample``); None for all.
            Only these columns are read from storage.
        scan: ``auto`` (default), ``spark`` (Spark's Parquet reader) or ``python``
            (Python tasks through fsspec); see the module docstring.
        batch_rows: Rows per Arrow batch on the Python path (default 32768).
        **storage: fsspec storage options (``endpoint_url``, ``anon``, ``profile``,
            ``key``, ``secret``, ``token``, ``requester_pays``); with any of them the
            read takes the Python path (Spark's Hadoop does not see them).

    Returns:
        A DataFrame with the record columns (or ``columns``) and ``sample``.

    Raises:
        UnsupportedSparkError: For a pyspark outside 3.5-4.3.
        InvalidArgumentError, RegionError, DatasetError, OSError: For bad input.
    """
    check_pyspark()
    if scan not in SCAN_MODES:
        raise InvalidArgumentError(f"read_bams3: scan must be one of {', '.join(SCAN_MODES)}, not {scan!r}")
    names, _ = record_columns(columns)  # a bad column list fails here
    options = scan_options(paths, region, regions, **storage)
    if batch_rows is not None:
        options["batch_rows"] = str(batch_rows)
    config = resolve_scan(options)
    chunks = plan_scan(config)
    schema = read_schema(columns)
    choice = choose_scan(spark, config, scan)
    logger.info(
        "read_bams3: %d chunk(s) of %d dataset(s), %s scan (%s)",
        len(chunks), len(config.datasets), choice.path, choice.reason,
    )
    if choice.path == "python":
        return python_scan(spark, chunks, schema, config.storage_options, config.batch_rows)
    return spark_scan(spark, config, chunks, schema, choice)


def choose_scan(spark: Any, config: ScanConfig, mode: str = "auto") -> ScanChoice:
    """Pick the scan path for a validated scan (see the module docstring).

    Raises:
        InvalidArgumentError: If ``scan="spark"`` is forced where Spark cannot read the URLs.
    """
    old_format = config.datasets[0].format_version == "1.0" and not vectorized_reads_format_1_0()
    if mode == "python":
        return ScanChoice("python", "scan='python'")
    problem = _spark_cannot_read(spark, config)
    if mode == "spark":
        if problem:
            raise InvalidArgumentError(f"read_bams3: scan='spark' impossible: {problem}")
        if old_format:
            logger.warning(
                "read_bams3: FORMAT 1.0 chunks on Spark %s: spark.sql.parquet.enableVectorizedReader is "
                "turned off for this session (the vectorized reader cannot decode them)",
                _version(),
            )
            return ScanChoice("spark", "scan='spark', vectorized reader off for FORMAT 1.0", True)
        return ScanChoice("spark", "scan='spark'")
    if problem:
        return ScanChoice("python", problem)
    if old_format:
        reason = f"FORMAT 1.0 chunks, which Spark {_version()}'s vectorized reader cannot decode"
        return ScanChoice("python", reason)
    return ScanChoice("spark", "Spark's Parquet reader can open the dataset URLs")


def _version() -> str:
    from bams3_spark.spark.compat import installed_version

    return installed_version()


def _spark_cannot_read(spark: Any, config: ScanConfig) -> str | None:
    """Why Spark's own Parquet reader cannot read these datasets, or None if it can."""
    if config.storage_options:
        return "storage options are given, which Spark's Hadoop file systems do not see"
    for entry in config.datasets:
        if _GLOB_CHARS & set(entry.url):
            return f"{entry.url}: path has glob characters Spark would expand"
    try:
        _hadoop_prefixes(spark, [e.url for e in config.datasets])
    except _NoHadoopFileSystem as exc:
        return str(exc)
    return None


class _NoHadoopFileSystem(Exception):
    pass


def _hadoop_prefixes(spark: Any, urls: Sequence[str]) -> list[str]:
    """Each dataset URL as Spark spells the file paths under it (qualified, URL-encoded).

    Raises:
        _NoHadoopFileSystem: If the cluster's Hadoop has no file system for a URL's scheme.
    """
    cached = getattr(spark, "_bams3_prefixes", None)
    if cached is None:
        cached = {}
        try:
            spark._bams3_prefixes = cached
        except AttributeError:  # a session object that takes no attributes: no cache
            pass
    missing = [u for u in urls if u not in cached]
    if missing:
        jvm = spark.sparkContext._jvm
        conf = spark.sparkContext._jsc.hadoopConfiguration()
        systems: dict[str, Any] = {}
        for url in missing:
            path = jvm.org.apache.hadoop.fs.Path(url)
            scheme = url.split("://", 1)[0] if "://" in url else "file"
            authority = url.split("://", 1)[1].split("/", 1)[0] if "://" in url else ""
            key = f"{scheme}://{authority}"
            if key not in systems:
                try:
                    systems[key] = path.getFileSystem(conf)
                except Exception as exc:  # noqa: BLE001 - Py4JJavaError: no FileSystem class for the scheme
                    raise _NoHadoopFileSystem(
                        f"Spark's Hadoop has no file system for {scheme}:// ({_java_message(exc)})"
                    ) from None
            cached[url] = _normalize(str(systems[key].makeQualified(path).toUri().toString()))
    return [cached[u] for u in urls]


def _java_message(exc: BaseException) -> str:
    text = str(getattr(exc, "java_exception", "") or exc)
    return " ".join(text.strip().splitlines()[0].split()) if text.strip() else type(exc).__name__


def _normalize(url: str) -> str:
    """``file:///x`` and ``file:/x`` are the same file; Spark spells both, depending on the version."""
    url = url.rstrip("/")
    return re.sub(r"^file:/+", "file:/", url)


def python_scan(
    spark: Any,
    chunks: Sequence[PlannedChunk],
    schema: Any,
    storage_options: Mapping[str, Any],
    batch_rows: int,
) -> Any:
    """The chunks read in Python tasks: ``mapInArrow`` over their descriptions, one per task, in order."""
    from bams3_spark.spark.rows import PAYLOAD_COLUMN, PayloadReader, encode_payloads
    from bams3_spark.spark.schema import arrow_schema

    payloads = encode_payloads(chunks)
    rdd = spark.sparkContext.parallelize([(p,) for p in payloads], max(1, len(payloads)))
    descriptions = spark.createDataFrame(rdd, f"{PAYLOAD_COLUMN} binary")
    reader = PayloadReader(schema.fieldNames(), arrow_schema(schema), storage_options,
                           batch_rows or DEFAULT_BATCH_ROWS)
    return descriptions.mapInArrow(reader, schema)


def spark_scan(
    spark: Any, config: ScanConfig, chunks: Sequence[PlannedChunk], schema: Any, choice: ScanChoice
) -> Any:
    """The chunks read by Spark's Parquet reader, with ``sample`` and the exact region filter."""
    from pyspark.sql import functions as F  # noqa: N812 - Spark's convention

    if not chunks:
        return spark.createDataFrame([], schema)
    if choice.vectorized_off:
        spark.conf.set("spark.sql.parquet.enableVectorizedReader", "false")
    prefixes = dict(
        zip((e.url for e in config.datasets), _hadoop_prefixes(spark, [e.url for e in config.datasets]),
            strict=True)
    )
    records = read_schema(None)
    file_schema = type(records)([f for f in records.fields if f.name != SAMPLE_COLUMN])
    df = (
        spark.read.option(VERIFY_CHECKSUMS, "true")
        .schema(file_schema)
        .parquet(*[c.url for c in chunks])
    )
    prefix = F.regexp_extract(F.col("_metadata.file_path"), _CHUNK_SUFFIX, 1)
    path = F.regexp_replace(prefix, "^file:/+", "file:/")
    df = df.select("*", path.alias(_DATASET_COLUMN))
    condition = _region_condition(config, prefixes)
    if condition is not None:
        df = df.filter(condition)
    wanted = schema.fieldNames()
    if SAMPLE_COLUMN in wanted:
        df = _with_sample(spark, df, config.datasets, prefixes)
    return df.select(*wanted)


def _with_sample(spark: Any, df: Any, datasets: Sequence[DatasetEntry], prefixes: Mapping[str, str]) -> Any:
    from pyspark.sql import functions as F  # noqa: N812

    if len(datasets) <= MAP_LITERAL_MAX:
        pairs = [x for e in datasets for x in (F.lit(prefixes[e.url]), F.lit(e.sample))]
        return df.withColumn(SAMPLE_COLUMN, F.create_map(*pairs)[F.col(_DATASET_COLUMN)])
    table = spark.createDataFrame(
        [(prefixes[e.url], e.sample) for e in datasets], f"{_DATASET_COLUMN} string, {SAMPLE_COLUMN} string"
    )
    # A left join: a path spelled unexpectedly shows as a null sample, never as lost rows.
    return df.join(F.broadcast(table), on=_DATASET_COLUMN, how="left")


def _region_condition(config: ScanConfig, prefixes: Mapping[str, str]) -> Any:
    """The exact row filter of the regions (htslib's overlap rule, FORMAT.md §9), or None."""
    from pyspark.sql import functions as F  # noqa: N812

    if not config.region_texts:
        return None
    groups: dict[tuple[Any, ...], list[str]] = {}
    for entry in config.datasets:
        groups.setdefault(entry.regions, []).append(prefixes[entry.url])
    conditions = []
    for regions, members in groups.items():
        cond = _regions_expr(regions)
        if len(groups) > 1:
            cond = F.col(_DATASET_COLUMN).isin(members) & cond
        conditions.append(cond)
    out = conditions[0]
    for cond in conditions[1:]:
        out = out | cond
    return out


def _regions_expr(regions: Sequence[Any]) -> Any:
    from pyspark.sql import functions as F  # noqa: N812

    from bams3_spark.format.regions import merge_intervals

    if not regions:
        return F.lit(False)
    by_ref: dict[str, list[tuple[int, int]]] = {}
    for r in regions:
        by_ref.setdefault(r.rname, []).append((r.start, r.end))
    out = None
    for rname, intervals in by_ref.items():
        if rname == "*":
            cond = F.col("rname") == F.lit("*")
        else:
            # 1-based pos, end: overlaps 0-based [s, e) when pos <= e and end > s.
            spans = [
                (F.col("pos") <= F.lit(e)) & (F.col("end") > F.lit(s)) for s, e in merge_intervals(intervals)
            ]
            either = spans[0]
            for span in spans[1:]:
                either = either | span
            cond = (F.col("rname") == F.lit(rname)) & either
        out = cond if out is None else out | cond
    return out
