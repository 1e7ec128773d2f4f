"""Distributed coverage: mosdepth's numbers over one or many BAMS3 datasets with Spark.

:func:`coverage_dataframe` returns a DataFrame ``sample, rname, start, end,
depth`` (per-base depth as run-length intervals) or ``... mean_depth`` (mean
depth per ``by``-base window), row for row the table of the local engine
(:func:`bams3_spark.coverage.engine.coverage_table`). :func:`run_coverage`
writes it as Parquet, CSV or bedGraph; ``jobs/coverage.py`` is its command line.

How the work is split (and why it stays exact):

1. **Map, one task per chunk.** Each task reads one chunk object itself, in
   Python, with only the columns the counting mode needs
   (:func:`~bams3_spark.coverage.options.required_columns`), and counts it alone
   (:func:`~bams3_spark.coverage.chunked.chunk_partial`): the depth
   contribution of its reads, cut into fixed genomic *buckets* (1 Mbp, a
   multiple of the window) and run-length encoded, plus its mate state.
   Reads crossing chunk or bucket edges simply contribute to several buckets:
   depth is additive. The records never become Spark rows: going through the
   ``bams3`` data source cost more than the counting (Arrow to rows and back
   to Arrow for 4 M reads: ~14 s of a 2-core machine, against ~5 s of CPU to
   read and count them), and kept both cores busy even in ``local[1]``.
2. **Mates across chunks, on the driver.** mosdepth counts the overlap of a
   proper pair once, with a per-read-name state machine that runs in file
   order. A chunk counted alone is exact except for names stored at the end of
   an earlier chunk; those names (the chunks' ``pending`` rows: pairs
   straddling a chunk edge, and mates whose partner never passes the filters)
   are collected, the chunks' per-name rows are filtered to them on the
   executors, and the driver replays the state machine over the chunks in
   order (:func:`~bams3_spark.coverage.chunked.mate_corrections`), producing
   small depth corrections. The chunk order (datasets, references in header
   order, windows, parts) is numbered on the driver and travels with each
   task's chunk. The map output is locally checkpointed, so chunks are read
   once.
3. **Reduce, one group per bucket.** Contributions and corrections are
   grouped by ``(sample, reference, bucket)`` (``groupBy().applyInArrow``);
   each group rebuilds the bucket's per-base depth and emits its windows
   (means computed exactly as mosdepth does, so windows never straddle
   buckets) or its runs. Runs that continue across a bucket edge are merged
   with window functions (gaps and islands over the edge runs only).

Partitioning by chunk rather than by (sample, reference) keeps every core busy
whatever the number and sizes of references, and no read record is shuffled:
only run-length pieces and a few mate rows leave the tasks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bams3_spark.coverage.options import CoverageOptions, required_columns
from bams3_spark.exceptions import InvalidArgumentError
from bams3_spark.format.layout import UNPLACED_NAME

if TYPE_CHECKING:
    import pyarrow as pa

    from bams3_spark.dataset.chunks import ChunkRef

#: Default bucket (reduce unit), about one chunk window.
DEFAULT_BUCKET = 1 << 20
#: Output formats of :func:`run_coverage`.
FORMATS = ("parquet", "csv", "bedgraph")

_MAP_SCHEMA = (
    "sample string, sidx int, rname string, tid int, length int, chunk long, bucket long, "
    "piece_end int, run_starts binary, run_values binary, pending binary, groups binary"
)
_MATES_BUCKET = -1  # map rows carrying mate state instead of a depth piece


@dataclass(frozen=True)
class _Ref:
    sidx: int
    tid: int
    length: int


def bucket_size(window: int | None, base: int = DEFAULT_BUCKET) -> int:
    """The reduce bucket: ``base`` rounded down to a multiple of the window (at least one window)."""
    if window is None:
        return base
    return max(window, base // window * window)


def _pieces(contribution: np.ndarray, offset: int, bsize: int) -> Iterator[tuple[int, int, bytes, bytes]]:
    """Cut a depth contribution at bucket edges; yield (bucket, end, run starts, run values).

    Runs are maximal stretches of equal value (absolute 0-based starts); an
    all-zero stretch adds nothing and is skipped.
    """
    n = len(contribution)
    pos = offset
    while pos < offset + n:
        b = pos // bsize
        hi = min(offset + n, (b + 1) * bsize)
        seg = contribution[pos - offset: hi - offset]
        if seg.any():
            change = np.flatnonzero(seg[1:] != seg[:-1]) + 1
            starts = np.concatenate(([0], change)).astype(np.int32)
            values = seg[starts].astype(np.int32)
            yield b, hi, (starts + pos).astype(np.int32).tobytes(), values.tobytes()
        pos = hi


def _map_chunks(
    refs: Mapping[tuple[str, str], _Ref], options: CoverageOptions, bsize: int
) -> Any:
    """The map function (executors): each item is one chunk object, with its place in the order."""

    def run(items: Iterator[tuple[int, str, ChunkRef]]) -> Iterator[tuple[Any, ...]]:
        from bams3_spark.coverage.chunked import chunk_partial, table_to_ipc
        from bams3_spark.dataset.chunks import ChunkRef
        from bams3_spark.io.storage import shared_storage

        columns = list(required_columns(options))
        for chunk_id, sample, given in items:
            # Read in this Python task, only the columns counting needs: no
            # record ever becomes a Spark row (see the module notes).
            storage = shared_storage(given.storage.url, **given.storage.options)
            table = ChunkRef(storage, given.rname, given.info).read(columns)
            if table.num_rows == 0:
                continue
            rname = given.rname
            ref = refs[(sample, rname)]
            head = (sample, ref.sidx, rname, ref.tid, ref.length, chunk_id)
            partial = chunk_partial(table, rname, ref.length, options)
            for b, end, starts, values in _pieces(partial.contribution, partial.offset, bsize):
                yield (*head, b, end, starts, values, None, None)
            if partial.groups.num_rows:
                # Every chunk with mate candidates: a later chunk's take must be
                # seen even when this chunk leaves nothing pending.
                yield (*head, _MATES_BUCKET, None, None, None, table_to_ipc(partial.pending),
                       table_to_ipc(partial.groups))

    return run


def _filter_groups(names: Mapping[tuple[str, str], list[str]]) -> Any:
    """Keep, in each chunk's group rows, only the names some chunk leaves pending (executors)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        import pyarrow.compute as pc

        from bams3_spark.coverage.chunked import table_from_ipc, table_to_ipc

        for batch in batches:
            out: dict[str, list[Any]] = {"sample": [], "rname": [], "chunk": [], "groups": []}
            for row in batch.to_pylist():
                wanted = names.get((row["sample"], row["rname"]))
                if not wanted:
                    continue
                groups = table_from_ipc(row["groups"])
                wanted_names = pa.array(wanted, pa.string())
                kept = groups.filter(pc.is_in(groups.column("qname"), value_set=wanted_names))
                if kept.num_rows:
                    out["sample"].append(row["sample"])
                    out["rname"].append(row["rname"])
                    out["chunk"].append(row["chunk"])
                    out["groups"].append(table_to_ipc(kept))
            if out["sample"]:
                yield pa.RecordBatch.from_pydict(
                    out,
                    schema=pa.schema([("sample", pa.string()), ("rname", pa.string()),
                                      ("chunk", pa.int64()), ("groups", pa.binary())]),
                )

    return run


def _reduce_bucket(bsize: int, window: int | None) -> Any:
    """The reduce function (executors): one group = one bucket of one reference of one sample."""

    def run(table: pa.Table) -> pa.Table:
        import pyarrow as pa

        from bams3_spark.coverage.depth import ReferenceDepth
        from bams3_spark.coverage.stats import window_means_table

        first = table.slice(0, 1).to_pylist()[0]
        bucket, length = int(first["bucket"]), int(first["length"])
        bstart = bucket * bsize
        blen = min(bsize, length - bstart)
        diff = np.zeros(blen + 1, dtype=np.int64)
        for starts_b, values_b, end in zip(table.column("run_starts").to_pylist(),
                                           table.column("run_values").to_pylist(),
                                           table.column("piece_end").to_pylist(), strict=True):
            if starts_b is None:
                continue
            starts = np.frombuffer(starts_b, dtype=np.int32).astype(np.int64) - bstart
            values = np.frombuffer(values_b, dtype=np.int32).astype(np.int64)
            # Run starts of one piece are distinct, so fancy-index += is exact.
            diff[starts] += np.diff(values, prepend=0)
            diff[int(end) - bstart] -= values[-1]
        depth = np.cumsum(diff[:blen]).astype(np.int32)
        rd = ReferenceDepth(first["rname"], blen, depth)
        if window is not None:
            w = window_means_table(rd, window)
            n = w.num_rows
            cols = {
                "start": pa.array(w.column("start").to_numpy() + bstart, pa.int32()),
                "end": pa.array(w.column("end").to_numpy() + bstart, pa.int32()),
                "mean_depth": w.column("mean_depth"),
            }
        else:
            s, e, d = rd.intervals()
            n = len(s)
            edge = np.zeros(n, dtype=bool)
            if n:
                edge[0] = edge[-1] = True
            cols = {
                "start": pa.array((s + bstart).astype(np.int32)),
                "end": pa.array((e + bstart).astype(np.int32)),
                "depth": pa.array(d.astype(np.int32)),
                "edge": pa.array(edge),
            }
        return pa.table({
            "sample": pa.array([first["sample"]] * n, pa.string()),
            "sidx": pa.array([first["sidx"]] * n, pa.int32()),
            "rname": pa.array([first["rname"]] * n, pa.string()),
            "tid": pa.array([first["tid"]] * n, pa.int32()),
            **cols,
        })

    return run


def _coverage_frame(
    spark: Any, paths: Sequence[str], by: int | None, options: CoverageOptions, bsize: int | None,
    storage_options: Mapping[str, Any],
) -> Any:
    """The unsorted result with its helper columns ``sidx`` (dataset order) and ``tid``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812 - Spark's convention

    from bams3_spark.coverage.chunked import ChunkMates, mate_corrections, pending_names, table_from_ipc
    from bams3_spark.coverage.engine import open_datasets

    if by is not None and (isinstance(by, bool) or not isinstance(by, int) or by <= 0):
        raise InvalidArgumentError(f"window size must be a positive integer; got {by!r}")
    size = bucket_size(by) if bsize is None else bucket_size(by, bsize)
    datasets = open_datasets(list(paths), storage_options)
    refs: dict[tuple[str, str], _Ref] = {}
    for sidx, ds in enumerate(datasets):
        for tid, (name, length) in enumerate(ds.references):
            refs[(ds.sample, name)] = _Ref(sidx, tid, length)

    # One task per chunk object, numbered in file order (datasets, references
    # in header order, windows, parts): the order the mate pass replays.
    work = [
        (i, sample, chunk)
        for i, (sample, chunk) in enumerate((ds.sample, c) for ds in datasets for c in ds.chunks())
        if chunk.rname != UNPLACED_NAME and chunk.info.records
    ]
    tasks = spark.sparkContext.parallelize(work, max(1, len(work)))
    mapped = spark.createDataFrame(tasks.mapPartitions(_map_chunks(refs, options, size)), _MAP_SCHEMA)

    correction_rows: list[tuple[Any, ...]] = []
    if options.mode == "mosdepth":
        # Read every chunk once: the mate passes below and the reduce reuse it.
        mapped = mapped.localCheckpoint(eager=True)
        mates = mapped.where(F.col("bucket") == _MATES_BUCKET)
        by_ref: dict[tuple[str, str], list[ChunkMates]] = {}
        pending: dict[tuple[str, str], dict[int, pa.Table]] = {}
        for row in mates.select("sample", "rname", "chunk", "pending").collect():
            key = (row["sample"], row["rname"])
            pending.setdefault(key, {})[int(row["chunk"])] = table_from_ipc(bytes(row["pending"]))
        names = {
            key: pending_names(ChunkMates(k, t, t) for k, t in chunks.items()).to_pylist()
            for key, chunks in pending.items()
        }
        groups: dict[tuple[str, str], dict[int, pa.Table]] = {}
        names = {key: value for key, value in names.items() if value}
        filtered = mates.select("sample", "rname", "chunk", "groups").mapInArrow(
            _filter_groups(names), "sample string, rname string, chunk long, groups binary"
        )
        for row in filtered.collect() if names else []:
            groups.setdefault((row["sample"], row["rname"]), {})[int(row["chunk"])] = table_from_ipc(
                bytes(row["groups"])
            )
        for key, chunks in pending.items():
            empty = next(iter(chunks.values())).schema.empty_table()
            by_ref[key] = [ChunkMates(k, t, groups.get(key, {}).get(k, empty)) for k, t in chunks.items()]
            # Chunks with groups but nothing pending take part too.
            for k, g in groups.get(key, {}).items():
                if k not in chunks:
                    by_ref[key].append(ChunkMates(k, empty, g))
        for (sample, rname), chunk_mates in by_ref.items():
            ref = refs[(sample, rname)]
            for offset, delta in mate_corrections(rname, ref.length, options, chunk_mates):
                for b, end, starts, values in _pieces(delta, offset, size):
                    correction_rows.append((sample, ref.sidx, rname, ref.tid, ref.length, -1, b, end,
                                            starts, values, None, None))

    grid = [
        (sample, ref.sidx, rname, ref.tid, ref.length, -2, b, None, None, None, None, None)
        for (sample, rname), ref in refs.items()
        for b in range((ref.length + size - 1) // size)
    ]
    pieces = mapped.where(F.col("bucket") >= 0).unionByName(
        spark.createDataFrame(grid + correction_rows, _MAP_SCHEMA)
    )
    cols = "sample string, sidx int, rname string, tid int, start int, end int"
    out_schema = f"{cols}, mean_depth double" if by is not None else f"{cols}, depth int, edge boolean"
    # An explicit partition count: adaptive execution would otherwise merge
    # the (small) pieces of every bucket into one task and serialize the reduce.
    keys = ("sample", "sidx", "rname", "tid", "bucket")
    n_parts = max(1, min(len(grid), 4 * int(spark.sparkContext.defaultParallelism)))
    result = pieces.repartition(n_parts, *keys).groupBy(*keys).applyInArrow(
        _reduce_bucket(size, by), out_schema
    )
    if by is not None:
        return result
    # Runs continuing across bucket edges: merge consecutive equal edge runs.
    w = Window.partitionBy("sidx", "tid").orderBy("start")
    edges = result.where("edge")
    prev_depth, prev_end = F.lag("depth").over(w), F.lag("end").over(w)
    island = (prev_depth.isNull() | (prev_depth != F.col("depth")) | (prev_end != F.col("start"))).cast("int")
    merged = (
        edges.withColumn("island", F.sum(island).over(w.rowsBetween(Window.unboundedPreceding, 0)))
        .groupBy("sample", "sidx", "rname", "tid", "island")
        .agg(F.min("start").alias("start"), F.max("end").alias("end"), F.first("depth").alias("depth"))
        .drop("island")
    )
    return result.where(~F.col("edge")).drop("edge").unionByName(merged)


def coverage_dataframe(
    spark: Any,
    paths: str | Sequence[str],
    by: int | None = None,
    options: CoverageOptions | None = None,
    *,
    bucket: int | None = None,
    **storage_options: Any,
) -> Any:
    """Coverage of one or many datasets as a Spark DataFrame.

    Args:
        spark: The SparkSession.
        paths: Dataset path(s) or URL(s) (one sample each).
        by: Window size for mean depth per window (``mosdepth --by N``);
            None for per-base depth as run-length intervals.
        options: Counting options (default: mosdepth's).
        bucket: Reduce bucket in bases (default 1 Mbp; rounded to whole windows).
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
    from pyspark.sql import functions as F  # noqa: N812

    opts = options or CoverageOptions()
    frame = _coverage_frame(spark, [paths] if isinstance(paths, str) else list(paths), by, opts, bucket,
                            storage_options)
    value = "mean_depth" if by is not None else "depth"
    return frame.orderBy("sidx", "tid", "start").select(
        "sample", "rname", "start", "end", F.col(value)
    )


def run_coverage(
    spark: Any,
    paths: Sequence[str],
    out: str,
    *,
    by: int | None = None,
    fmt: str = "parquet",
    options: CoverageOptions | None = None,
    overwrite: bool = False,
    **storage_options: Any,
) -> None:
    """Compute coverage and write it to ``out``.

    Formats (Spark writes ``out`` as a directory of part files):

    - ``parquet``: the DataFrame of :func:`coverage_dataframe`.
    - ``csv``: the same with a header line.
    - ``bedgraph``: ``out/sample=NAME/part-*.txt``, tab-separated
      ``rname start end value`` lines in genome order, no header.

    Raises:
        InvalidArgumentError: For an unknown format or bad options.
        FileExistsError: If ``out`` exists and ``overwrite`` is False.
        Bams3Error, OSError: For unusable datasets or storage failures.
    """
    from pyspark.sql import functions as F  # noqa: N812

    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown format {fmt!r}; formats are {', '.join(FORMATS)}")
    from bams3_spark.io.storage import Storage

    if not overwrite and Storage(out, **storage_options).exists():
        # Checked here: Spark would fail only after computing everything.
        raise FileExistsError(f"{out}: already exists (use --overwrite to replace it)")
    opts = options or CoverageOptions()
    frame = _coverage_frame(spark, list(paths), by, opts, None, storage_options)
    value = "mean_depth" if by is not None else "depth"
    mode = "overwrite" if overwrite else "errorifexists"
    if fmt == "bedgraph":
        # Sorted by sample first so that partitionBy needs no extra sort.
        lines = frame.orderBy("sample", "tid", "start").select(
            "sample",
            F.concat_ws("\t", "rname", F.col("start").cast("string"), F.col("end").cast("string"),
                        F.col(value).cast("string")).alias("value"),
        )
        lines.write.mode(mode).partitionBy("sample").text(out)
    else:
        sorted_frame = frame.orderBy("sidx", "tid", "start").select("sample", "rname", "start", "end", value)
        writer = sorted_frame.write.mode(mode)
        if fmt == "csv":
            writer.option("header", True).csv(out)
        else:
            writer.parquet(out)


__all__ = ["DEFAULT_BUCKET", "FORMATS", "bucket_size", "coverage_dataframe", "run_coverage"]
