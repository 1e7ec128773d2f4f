"""Coverage speed: `bams3 coverage` and the Spark job vs `mosdepth`, same data, same run.

Usage: bench_coverage.py DATASET BAM WORKDIR [--repeat N] [--no-spark]

DATASET is the BAMS3 conversion of BAM (converted into WORKDIR with
`bams3 convert --workers 2` if it does not exist). Both tools use 2 threads:
`mosdepth -n --by 1000 -t 2` vs `bams3 coverage -n --by 1000 -t 2`, and the
per-base output (`mosdepth -t 2` vs `bams3 coverage -t 2`), run alternately
--repeat times: medians of wall time, CPU time (user + system of the command
and its worker processes) and peak memory (summed PSS of the process tree,
common.measured), with the ratios to mosdepth and the targets of issue 17
(windows: half mosdepth's time; per-base: no slower, at most twice its
memory). Every output file is compared after `zcat` (the values must be
identical; the script fails otherwise). Then `jobs/coverage.py --by 1000` in
Spark local[1] and local[2]: its wall time (best of --repeat, JVM start
included), the speed-up from 1 to 2 cores, and its window means checked
against mosdepth's.
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common import BIN, bams3_cmd, measured, table

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: Sequence[str], repeat: int) -> tuple[float, float]:
    """Run a command ``repeat`` times; return (best wall time, CPU time of that run)."""
    best, best_cpu = float("inf"), 0.0
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if wall < best:
            best, best_cpu = wall, cpu
    return best, best_cpu


def text_of(path: Path) -> bytes:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            return fh.read()
    return path.read_bytes()


def same_files(expected_prefix: Path, got_prefix: Path) -> str:
    """Compare every mosdepth output file (``.csi`` excluded); return a short verdict or exit."""
    files = expected_prefix.parent.glob(expected_prefix.name + ".*")
    names = sorted(p.name[len(expected_prefix.name):] for p in files if not p.name.endswith(".csi"))
    for suffix in names:
        a = text_of(Path(str(expected_prefix) + suffix))
        b = text_of(Path(str(got_prefix) + suffix))
        if a != b:
            raise SystemExit(f"values differ: {expected_prefix}{suffix} vs {got_prefix}{suffix}")
    return f"identical ({len(names)} files)"


def spark_values_match(parquet_dir: Path, regions_bed_gz: Path) -> str:
    import pyarrow.parquet as pq

    t = pq.read_table(parquet_dir)
    lines = "".join(
        f"{r}\t{s}\t{e}\t{m:.2f}\n"
        for r, s, e, m in zip(*(t.column(c).to_pylist() for c in ("rname", "start", "end", "mean_depth")),
                              strict=True)
    )
    if lines.encode() != text_of(regions_bed_gz):
        raise SystemExit(f"Spark window means differ from {regions_bed_gz}")
    return "identical to mosdepth"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("bam", type=Path)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-spark", action="store_true", help="skip the Spark job")
    args = ap.parse_args(argv)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    if not (args.dataset / "bams3.json").exists():
        subprocess.run(bams3_cmd("convert", "--workers", "2", "--quiet", "--overwrite", str(args.bam),
                                 str(args.dataset)), check=True)

    rows = []
    # (label, arguments of both tools, target: max time ratio, max memory ratio)
    for label, tool_args, max_time, max_memory in (
        ("`--by 1000 -n`", ["-n", "--by", "1000"], 0.5, None),
        ("per-base", [], 1.0, 2.0),
    ):
        md_prefix, b3_prefix = work / f"md{len(tool_args)}", work / f"b3{len(tool_args)}"
        md_runs, b3_runs = [], []
        for _ in range(args.repeat):  # alternately, so that both see the same machine
            md_runs.append(measured(["mosdepth", *tool_args, "-t", "2", str(md_prefix), str(args.bam)]))
            b3_runs.append(measured(bams3_cmd("coverage", str(args.dataset), "-o", str(b3_prefix), *tool_args,
                                              "-t", "2")))
        md = [statistics.median(x) for x in zip(*md_runs, strict=True)]
        b3 = [statistics.median(x) for x in zip(*b3_runs, strict=True)]
        verdict = same_files(md_prefix, b3_prefix)
        time_ratio, memory_ratio = b3[0] / md[0], b3[2] / md[2]
        met = time_ratio <= max_time and (max_memory is None or memory_ratio <= max_memory)
        target = f"time <= {max_time}x" + (f", memory <= {max_memory}x" if max_memory else "")
        rows.append((f"{label}: `mosdepth -t 2`", f"{md[0]:.2f} s", f"{md[1]:.1f} s", f"{md[2]:.0f} MB",
                     "1.00", "1.00", "reference", ""))
        rows.append((f"{label}: `bams3 coverage -t 2`", f"{b3[0]:.2f} s", f"{b3[1]:.1f} s", f"{b3[2]:.0f} MB",
                     f"**{time_ratio:.2f}x**", f"**{memory_ratio:.2f}x**", verdict,
                     f"{target}: {'met' if met else 'not met'}"))

    if not args.no_spark:
        spark_times = {}
        for cores in (1, 2):
            out = work / f"spark{cores}.parquet"
            shutil.rmtree(out, ignore_errors=True)
            job = [str(BIN / "python"), str(ROOT / "jobs" / "coverage.py"), str(args.dataset),
                   "--by", "1000", "--out", str(out), "--master", f"local[{cores}]", "--overwrite"]
            spark_times[cores] = run(job, args.repeat)
        verdict = spark_values_match(work / "spark2.parquet", work / "md3.regions.bed.gz")
        t1, t2 = spark_times[1][0], spark_times[2][0]
        # The JVM and its Python workers are not waited-for children of this
        # process, so their CPU time is not measured: only wall times here.
        rows.append(("Spark job `--by 1000`, local[1]", f"{t1:.2f} s", "n/a", "", "", "", "", ""))
        rows.append(("Spark job `--by 1000`, local[2]", f"{t2:.2f} s", "n/a", "",
                     f"speed-up 1 -> 2 cores: {t1 / t2:.2f}x", "", verdict, ""))

    print(table(f"Coverage ({args.bam.name}, {os.cpu_count()} cores, median of {args.repeat})", rows,
                ("command", "wall time", "CPU time", "peak memory", "time vs mosdepth", "memory vs mosdepth",
                 "values", "")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
