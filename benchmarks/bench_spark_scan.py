"""Scan throughput of the ``bams3`` Spark data source (local[2]) vs the local engine and samtools.

Usage: bench_spark_scan.py BAM DATASET [--repeat N]

The dataset is converted from the BAM (1 Mbp windows, 2 workers) if it does
not exist. Every scan reads every record of the dataset; figures are reads per
second of wall time (best of ``--repeat``), in the same run:

- ``samtools view -c`` on the BAM (decompress and decode every record), and
  ``samtools view`` to /dev/null (also formats every field as SAM text);
- Spark, local[2]: ``spark.read.format("bams3")`` with a projected schema of
  the positional columns (``rname, pos, end, flag, mapq``), then with every
  column; ``count()`` forces the whole scan (the source cannot skip columns
  it was asked for: pyspark 4.3 has no column pruning for Python sources);
- the local query engine reading the same columns chunk by chunk
  (``Dataset.chunks()[i].read(columns)``), on one thread and on two.

Prints a Markdown table and exits 0. Counts are checked against samtools.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import table, timed  # noqa: E402

from bams3_spark import open_dataset  # noqa: E402
from bams3_spark.convert import convert  # noqa: E402
from bams3_spark.format.schema import COLUMNS, POSITION_COLUMNS  # noqa: E402
from bams3_spark.spark import bams3_schema  # noqa: E402
from bams3_spark.spark.session import get_session  # noqa: E402


def best_of(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    """Run ``fn`` ``repeat`` times; return (best seconds, its result)."""
    best, result = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bam", type=Path)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--repeat", type=int, default=1)
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

    t_count = timed(["samtools", "view", "-c", str(args.bam)], args.repeat)
    t_view = timed(["samtools", "view", "-o", "/dev/null", str(args.bam)], args.repeat)

    spark = get_session(master="local[2]", app_name="bench-spark-scan")
    positional = list(POSITION_COLUMNS)

    def spark_scan(columns: list[str] | None) -> Callable[[], int]:
        def run() -> int:
            reader = spark.read.format("bams3")
            if columns is not None:
                reader = reader.schema(bams3_schema(columns))
            return int(reader.load(str(args.dataset)).count())
        return run

    # Warm-up: JVM, Python workers and page cache.
    spark.read.format("bams3").option("region", "chrM").load(str(args.dataset)).count()

    chunks = ds.chunks()

    def local_scan(columns: list[str], threads: int) -> Callable[[], int]:
        def run() -> int:
            def one(chunk: Any) -> int:
                return int(chunk.read(columns).num_rows)
            if threads == 1:
                return sum(one(c) for c in chunks)
            with ThreadPoolExecutor(threads) as pool:
                return sum(pool.map(one, chunks))
        return run

    measured: list[tuple[str, str, float, int]] = []
    for label, cols, fn in (
        ("Spark local[2], bams3 source", "positional", spark_scan(positional)),
        ("Spark local[2], bams3 source", "all", spark_scan(None)),
        ("local engine, 1 thread", "positional", local_scan(positional, 1)),
        ("local engine, 2 threads", "positional", local_scan(positional, 2)),
        ("local engine, 1 thread", "all", local_scan(list(COLUMNS), 1)),
        ("local engine, 2 threads", "all", local_scan(list(COLUMNS), 2)),
    ):
        seconds, n = best_of(fn, args.repeat)
        if n != total:
            raise SystemExit(f"{label} ({cols}): {n} records, expected {total}")
        measured.append((label, cols, seconds, n))
    spark.stop()

    base = total / t_count
    rows = [
        ("`samtools view -c` (BAM)", "decode all", f"{t_count:.1f} s", f"{base:,.0f}", "1.00"),
        ("`samtools view` > /dev/null (BAM)", "all, as SAM text", f"{t_view:.1f} s", f"{total / t_view:,.0f}",
         f"{(total / t_view) / base:.2f}"),
    ]
    for label, cols, seconds, n in measured:
        rate = n / seconds
        rows.append((label, cols, f"{seconds:.1f} s", f"{rate:,.0f}", f"{rate / base:.2f}"))
    print(table(
        f"Scan throughput, {total:,} reads ({ds.manifest.chunk_count} chunks, positional = "
        f"{', '.join(positional)})",
        rows, ("reader", "columns", "wall time", "reads/s", "speed vs samtools view -c"),
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
