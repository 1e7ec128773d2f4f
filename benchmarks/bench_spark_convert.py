"""Distributed conversion: `spark-submit jobs/convert.py` in local[1] and local[2] vs
`bams3 convert --workers 2` and `samtools view -@2 -b`, on the same BAM in the same run.

Usage: bench_spark_convert.py BAM WORKDIR [--chunk-size 1M] [--repeat 1]

The Spark figures are spark-submit wall times (JVM start included) and, in brackets,
the job's own time as it reports it (planning, tasks and commit). The speed-up of
local[2] over local[1] is computed on both.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyspark
from common import bams3_cmd, dir_bytes, table, timed

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "jobs" / "convert.py"
SPARK_SUBMIT = Path(pyspark.__file__).resolve().parent / "bin" / "spark-submit"


def spark_job(master: str, bam: Path, out: Path, chunk_size: str) -> tuple[float, float]:
    """Run the job with spark-submit; return (wall seconds, job seconds as reported)."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    cmd = [str(SPARK_SUBMIT), "--master", master, "--driver-memory", "2g",
           "--conf", "spark.ui.enabled=false", str(JOB), str(bam), str(out),
           "--chunk-size", chunk_size, "--overwrite"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    if proc.returncode:
        sys.exit(f"bench_spark_convert: {master} job failed:\n{text[-3000:]}")
    found = re.search(r"converted 1 of 1 sample\(s\) in ([0-9.]+) s", text)
    return wall, float(found.group(1)) if found else wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bam", type=Path)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--chunk-size", default="1M")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    bam = args.bam.resolve()

    reencoded = args.workdir / "samtools-reencode.bam"
    t_samtools = timed(["samtools", "view", "-@2", "-b", "-o", str(reencoded), str(bam)], args.repeat)
    reencoded.unlink(missing_ok=True)

    out_local = args.workdir / "bams3-convert.bams3"
    t_local = timed(bams3_cmd("convert", "--workers", "2", "--overwrite", "--quiet", "--chunk-size",
                              args.chunk_size, str(bam), str(out_local)), args.repeat)
    size_ds = dir_bytes(out_local)
    shutil.rmtree(out_local, ignore_errors=True)

    spark: dict[str, tuple[float, float]] = {}
    for master in ("local[1]", "local[2]"):
        out = args.workdir / f"spark-{master[6]}.bams3"
        best = min(spark_job(master, bam, out, args.chunk_size) for _ in range(args.repeat))
        spark[master] = best
        shutil.rmtree(out, ignore_errors=True)

    w1, j1 = spark["local[1]"]
    w2, j2 = spark["local[2]"]
    rows: list[tuple[str, ...]] = [
        ("`samtools view -@2 -b` (re-encode)", f"{t_samtools:.1f} s", "1.00", ""),
        ("`bams3 convert --workers 2`", f"{t_local:.1f} s", f"{t_local / t_samtools:.2f}", ""),
        ("`spark-submit --master local[1] jobs/convert.py`", f"{w1:.1f} s (job {j1:.1f} s)",
         f"{w1 / t_samtools:.2f}", "1.00"),
        ("`spark-submit --master local[2] jobs/convert.py`", f"{w2:.1f} s (job {j2:.1f} s)",
         f"{w2 / t_samtools:.2f}", f"{w1 / w2:.2f} (job {j1 / j2:.2f})"),
    ]
    title = (f"Distributed conversion ({bam.name}, {bam.stat().st_size / 1e6:,.0f} MB BAM -> "
             f"{size_ds / 1e6:,.0f} MB dataset, {os.cpu_count()} cores)")
    print(table(title, rows, ("command", "wall time", "ratio vs samtools", "speed-up vs local[1]")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
