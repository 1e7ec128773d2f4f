"""Spark scans of a BAMS3 dataset: ``read_bams3`` vs ``spark.read.parquet`` on the same chunk files.

Usage: bench_spark_scan.py BAM DATASET [--repeat N] [--skip-source]

The dataset is converted from the BAM (2 workers) if it does not exist. In one
run, Spark local[2], one session:

- three queries (``count()``; ``groupBy(rname).agg(count, sum(mapq))``;
  ``sum(length(seq))``), each timed as the median of ``--repeat`` alternate
  runs of ``spark.read.parquet`` over exactly the dataset's chunk files (the
  floor: Spark's own reader with no planning) and ``bams3_spark.read_bams3``
  (planning from the manifest and indexes included), and once with
  ``spark.read.format("bams3")`` (the Python data source, pyspark 4.0+; with a
  projected schema for the last two);
- ``samtools view -c`` on the BAM, the local reference for a whole-file scan;
- the dataset's size under FORMAT 1.1 (as written), FORMAT 1.0 (the same
  records re-encoded with 1.0's encodings, in memory) and the BAM's.

Every result is checked against samtools (counts) or against the other
reader (aggregates). Prints Markdown tables and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import table, timed  # noqa: E402

from bams3_spark import open_dataset, read_bams3  # noqa: E402
from bams3_spark.convert import convert  # noqa: E402
from bams3_spark.format.chunk import decode_chunk, encode_chunk  # noqa: E402
from bams3_spark.spark.compat import has_data_source_api  # noqa: E402
from bams3_spark.spark.schema import bams3_schema  # noqa: E402
from bams3_spark.spark.session import get_session  # noqa: E402


def _seconds(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def queries(F: Any) -> dict[str, Callable[[Any], Any]]:  # noqa: N803 - Spark's convention
    """The three queries, as functions of a DataFrame returning a comparable result."""
    return {
        "count": lambda df: df.count(),
        "groupBy(rname).agg(count, sum(mapq))": lambda df: sorted(
            tuple(r) for r in df.groupBy("rname").agg(F.count(F.lit(1)), F.sum("mapq")).collect()
        ),
        "sum(length(seq))": lambda df: df.agg(F.sum(F.length("seq"))).collect()[0][0],
    }


#: Columns each query needs (the projected schema of the Python data source).
NEEDED = {"count": ["rname"], "groupBy(rname).agg(count, sum(mapq))": ["rname", "mapq"],
          "sum(length(seq))": ["seq"]}


def sizes(dataset: Path, bam: Path) -> list[tuple[str, ...]]:
    """Size of the dataset's chunks under FORMAT 1.1 and 1.0, and of the BAM."""
    ds = open_dataset(str(dataset))
    new = old = 0
    for chunk in ds.chunks():
        raw = (dataset / chunk.info.path).read_bytes()
        new += len(raw)
        table_ = decode_chunk(raw, chunk.url)
        meta_window = (chunk.info.window_start, chunk.info.window_end)
        old += len(encode_chunk(table_, chunk.rname, meta_window, chunk.info.part, format_version="1.0"))
    size = bam.stat().st_size
    return [
        ("BAM", f"{size / 1e6:,.1f} MB", "1.000"),
        ("BAMS3, FORMAT 1.1 (portable encodings)", f"{new / 1e6:,.1f} MB", f"{new / size:.3f}"),
        ("BAMS3, FORMAT 1.0 encodings", f"{old / 1e6:,.1f} MB", f"{old / size:.3f}"),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bam", type=Path)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-source", action="store_true", help="do not time format('bams3')")
    args = ap.parse_args()
    if not (args.dataset / "bams3.json").exists():
        print(f"converting {args.bam} -> {args.dataset} ...", file=sys.stderr)
        convert(str(args.bam), str(args.dataset), workers=2, overwrite=True)
    ds = open_dataset(str(args.dataset))
    total = ds.manifest.records
    want = int(subprocess.run(["samtools", "view", "-c", str(args.bam)], check=True, capture_output=True,
                              text=True).stdout)
    if want != total:
        raise SystemExit(f"dataset has {total} records, samtools counts {want}")
    t_samtools = timed(["samtools", "view", "-c", str(args.bam)], 1)

    from pyspark.sql import functions as F  # noqa: N812

    spark = get_session(master="local[2]", app_name="bench-spark-scan")
    files = [str(args.dataset / c.info.path) for c in ds.chunks()]
    readers: dict[str, Callable[[str], Any]] = {
        "spark.read.parquet": lambda q: spark.read.parquet(*files),
        "read_bams3": lambda q: read_bams3(spark, str(args.dataset)),
    }
    work = queries(F)
    # Warm-up: JVM, page cache, Python workers.
    for make in readers.values():
        make("count").count()

    rows: list[tuple[str, ...]] = []
    for name, query in work.items():
        times: dict[str, list[float]] = {k: [] for k in readers}
        results: dict[str, Any] = {}
        for _ in range(args.repeat):
            for label, make in readers.items():
                seconds, results[label] = _seconds(lambda: query(make(name)))  # noqa: B023
                times[label].append(seconds)
        if len({repr(r) for r in results.values()}) != 1:
            raise SystemExit(f"{name}: readers disagree: {results}")
        if name == "count" and results["read_bams3"] != total:
            raise SystemExit(f"count: {results['read_bams3']} records, samtools counts {total}")
        base = statistics.median(times["spark.read.parquet"])
        mine = statistics.median(times["read_bams3"])
        source = "n/a (pyspark < 4.0)"
        if has_data_source_api() and not args.skip_source:
            frame = spark.read.format("bams3").schema(bams3_schema(NEEDED[name])).load(str(args.dataset))
            seconds, got = _seconds(lambda: query(frame))  # noqa: B023
            if repr(got) != repr(results["read_bams3"]):
                raise SystemExit(f"{name}: format('bams3') disagrees")
            source = f"{seconds:.2f} s ({seconds / base:.2f}x)"
        rows.append((name, f"{base:.2f} s", f"{mine:.2f} s", f"{mine / base:.2f}x", source))
    spark.stop()

    print(table(
        f"Spark scans, local[2], {total:,} reads in {len(files)} chunks (median of {args.repeat} "
        f"alternate runs; `samtools view -c` on the BAM: {t_samtools:.2f} s)",
        rows,
        ("query", "spark.read.parquet (same files)", "read_bams3", "read_bams3 / parquet", "format('bams3')"),
    ))
    print(table("Dataset size vs BAM", sizes(args.dataset, args.bam), ("stored as", "size", "vs BAM")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
