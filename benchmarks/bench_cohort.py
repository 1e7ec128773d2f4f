"""Cohort scale: the Spark jobs against `bams3 coverage` and mosdepth on cohorts of hard-linked datasets.

Usage: bench_cohort.py BAM DATASET WORKDIR [--sizes 100,1000,3000] [--reads 80000] [--full-max 1000]

A small sample is cut from BAM (``samtools view -s``, about --reads reads of
its three largest references), converted once with 4 Mbp chunks, and
hard-linked under N distinct sample names (the manifest's ``sample``) for
each cohort size N: chunk objects are shared, so a 3,000-sample cohort costs
a few MB. For each N:

- planning alone (manifests, units, bundles) in a fresh process, for
  ``local[2]``: its time and the process's peak RSS (the driver's planning
  memory; it must stay under 1 GB and grow linearly);
- up to --full-max samples, ``jobs/coverage.py --by 1000`` and
  ``jobs/query.py --count`` in Spark local[2] (wall time with JVM start, peak
  PSS of the whole process tree, tasks and planning time from the job's
  summary line), against ``bams3 coverage --by 1000 -n -t 2`` on the same
  datasets and mosdepth on the source BAM (times N);
- the Spark output of the smallest cohort is compared with `bams3 coverage`'s.

Then the bench dataset (one sample, DATASET) with ``jobs/coverage.py --by
1000`` logic in local[1] and local[2], timed inside the driver after the
session started (JVM start-up excluded): the 1 -> 2 core speed-up. Each
session runs the job four times: the first run (Python workers forked and
importing, the JVM loading and compiling the SQL and Arrow classes) and the
median of the next three. local[1] gives Spark one task slot, not one core
(pyarrow's decoding threads and the JVM still use the second), so it is also
run pinned to one CPU (``taskset -c 0``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common import bams3_cmd, measured, table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.cohort import hard_link_dataset  # noqa: E402 - one copy of the rule, shared with the tests

PY = sys.executable
JOBS = ROOT / "jobs"
_SUMMARY = re.compile(r"([\d,]+) sample\(s\), ([\d,]+) task\(s\), ([\d,]+) unit\(s\)"
                      r".*?([\d,]+) GET request\(s\), "
                      r"([\d,.]+) MB fetched; request cost ~\$([\d.]+).*planned in ([\d.]+) s")


def small_sample(bam: Path, work: Path, reads: int) -> Path:
    """About ``reads`` reads of the three largest references of ``bam``, sorted and indexed."""
    out = work / "small.bam"
    if out.exists():
        return out
    stats = [line.split("\t") for line in subprocess.run(
        ["samtools", "idxstats", str(bam)], check=True, capture_output=True, text=True).stdout.splitlines()]
    refs = sorted((s for s in stats if s[0] != "*"), key=lambda s: -int(s[2]))[:3]
    total = sum(int(s[2]) for s in refs)
    frac = min(0.999, reads / max(1, total))
    seed_frac = "7." + f"{frac:.6f}".split(".")[1]  # samtools -s SEED.FRACTION
    subprocess.run(["samtools", "view", "-b", "--no-PG", "-s", seed_frac,
                    "-o", str(out), str(bam), *(s[0] for s in refs)], check=True)
    subprocess.run(["samtools", "index", str(out)], check=True)
    return out


def cohort(source: Path, root: Path, n: int) -> list[str]:
    """``n`` hard-linked copies of ``source`` under ``root``: samples S0000..."""
    paths = []
    for i in range(n):
        out = root / f"S{i:05d}.bams3"
        if not (out / "bams3.json").exists():
            hard_link_dataset(source, out, f"S{i:05d}")
        paths.append(str(out))
    return paths


_PLAN = """
import json, sys, time
t0 = time.perf_counter()
from bams3_spark.spark.cohort import bundle, plan_units, resolve_cohort
cohort = resolve_cohort([sys.argv[1]], parallelism=2)
units = plan_units(cohort, 2)
groups = bundle(units, 8)
# VmHWM: this process's own peak (ru_maxrss would inherit the parent's peak at fork).
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
print(json.dumps({"seconds": time.perf_counter() - t0, "units": len(units), "tasks": len(groups),
                  "rss_mb": hwm / 1024}))
"""


def plan_only(glob: str) -> dict[str, float]:
    proc = subprocess.run([PY, "-c", _PLAN, glob], check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def job(script: str, args: Sequence[str], work: Path) -> tuple[float, float, dict[str, str]]:
    """Run a job in local[2]; return (wall s, peak MB of the process tree, its summary figures)."""
    log = work / f"{script}.log"
    cmd = [PY, str(JOBS / script), *args, "--master", "local[2]", "--overwrite"]
    with open(log, "w") as fh:
        wall, _, peak = _measured_to(cmd, fh)
    found = _SUMMARY.search(log.read_text())
    keys = ("samples", "tasks", "units", "requests", "mb", "cost", "planning")
    return wall, peak, dict(zip(keys, found.groups(), strict=True)) if found else {}


def _measured_to(cmd: Sequence[str], fh: object) -> tuple[float, float, float]:
    # measured() discards stdout; the job's summary line is on stdout or stderr: merge both into the log.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    wrapped = ["sh", "-c", 'exec "$@" >>"$LOG" 2>&1', "sh", *cmd]
    env["LOG"] = fh.name  # type: ignore[attr-defined]
    return measured(wrapped, env=env)


def local_coverage(paths: Sequence[str], work: Path) -> tuple[float, float]:
    out = work / "b3"
    out.mkdir(exist_ok=True)
    wall, _, peak = measured(bams3_cmd("coverage", *paths, "--by", "1000", "-n", "-t", "2", "--quiet",
                                       "-o", str(out / "c")))
    return wall, peak


def check_same(parquet: Path, paths: Sequence[str], work: Path) -> str:
    """The Spark job's window means equal `bams3 coverage`'s regions files, sample by sample."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(parquet)
    samples = t.column("sample")
    for p in paths:
        sample = Path(p).name.removesuffix(".bams3")
        part = t.filter(pc.equal(samples, sample))
        cols = (part.column(c).to_pylist() for c in ("rname", "start", "end", "mean_depth"))
        text = "".join(f"{r}\t{a}\t{b}\t{m:.2f}\n" for r, a, b, m in zip(*cols, strict=True))
        with gzip.open(work / "b3" / f"c.{sample}.regions.bed.gz", "rt") as fh:
            if text != fh.read():
                raise SystemExit(f"{sample}: Spark window means differ from bams3 coverage")
    return f"identical ({len(paths)} samples)"


_ONE = """
import sys, time
from bams3_spark.spark.session import get_session
from bams3_spark.spark.coverage_job import run_coverage
spark = get_session(master=sys.argv[1], app_name="bench")
spark.sparkContext.parallelize([0], 1).count()  # JVM and a Python worker up
for _ in range(4):
    t0 = time.perf_counter()
    run_coverage(spark, [sys.argv[2]], sys.argv[3], by=1000, overwrite=True)
    print(f"JOB {time.perf_counter() - t0:.3f}", flush=True)
"""


def one_sample(dataset: Path, work: Path) -> dict[str, tuple[float, float]]:
    """(first run, median of the next three) per configuration."""
    configs = [("local[1]", [], 1), ("local[2]", [], 2)]
    if shutil.which("taskset"):
        configs.insert(1, ("local[1], one CPU", ["taskset", "-c", "0"], 1))
    out = {}
    for name, prefix, cores in configs:
        proc = subprocess.run([*prefix, PY, "-c", _ONE, f"local[{cores}]", str(dataset), str(work / "one")],
                              check=True, capture_output=True, text=True, cwd=ROOT)
        times = [float(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("JOB")]
        out[name] = (times[0], sorted(times[1:])[1])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bam", type=Path)
    ap.add_argument("dataset", type=Path, help="the bench BAM's dataset (one-sample speed-up); '-' to skip")
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--sizes", default="100,1000,3000")
    ap.add_argument("--reads", type=int, default=80_000)
    ap.add_argument("--full-max", type=int, default=1000, help="run the jobs up to this cohort size")
    args = ap.parse_args(argv)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    for tool in ("samtools", "mosdepth"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench_cohort: needs {tool}")
    small = small_sample(args.bam, work, args.reads)
    source = work / "small.bams3"
    if not (source / "bams3.json").exists():
        subprocess.run(bams3_cmd("convert", "--chunk-size", "4M", "--quiet", "--overwrite", str(small),
                                 str(source)), check=True)
    t0 = time.perf_counter()
    subprocess.run(["mosdepth", "-n", "--by", "1000", "-t", "2", str(work / "md"), str(small)], check=True)
    mosdepth_one = time.perf_counter() - t0

    sizes = [int(s) for s in args.sizes.split(",")]
    plan_rows, job_rows = [], []
    for n in sizes:
        root = work / f"cohort{n}"
        paths = cohort(source, root, n)
        glob = str(root / "S*.bams3")
        p = plan_only(glob)
        plan_rows.append((f"{n:,}", f"{p['seconds']:.2f} s", f"{p['seconds'] / n * 1000:.2f} ms",
                          f"{p['rss_mb']:.0f} MB", f"{p['units']:,}", f"{p['tasks']:,}"))
        if n > args.full_max:
            continue
        cov_args = [glob, "--by", "1000", "--out", str(work / "cov.parquet")]
        cov_wall, cov_peak, cov = job("coverage.py", cov_args, work)
        q_wall, q_peak, q = job("query.py", [glob, "--count", "--region", "chr1:1000000-1100000",
                                             "--out", str(work / "counts")], work)
        b3_wall, b3_peak = local_coverage(paths, work)
        verdict = check_same(work / "cov.parquet", paths, work) if n == sizes[0] else ""
        job_rows.append((
            f"{n:,}", f"{cov_wall:.1f} s", f"{cov_peak:,.0f} MB", cov.get("planning", "?") + " s",
            cov.get("tasks", "?"), f"{b3_wall:.1f} s", f"{cov_wall / b3_wall:.2f}x",
            f"{mosdepth_one * n:.1f} s",
            f"{q_wall:.1f} s", q.get("tasks", "?"), q.get("requests", "?"), "$" + q.get("cost", "?"), verdict,
        ))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(table(f"Planning a cohort (fresh process, local[2]; load {load})", plan_rows,
                ("datasets", "planning time", "per dataset", "peak RSS", "units", "tasks")))
    print(table(
        f"Cohort jobs in Spark local[2] vs `bams3 coverage -t 2` (load {load})", job_rows,
        ("datasets", "coverage job", "job peak PSS", "planning", "tasks", "bams3 coverage", "job / bams3",
         "mosdepth x N", "query --count job", "tasks", "GETs", "request cost", "values"),
    ))
    if str(args.dataset) != "-":
        times = one_sample(args.dataset, work)
        two = times["local[2]"]
        rows = [(name, f"{first:.2f} s", f"{warm:.2f} s",
                 "" if name == "local[2]" else f"{first / two[0]:.2f}x",
                 "" if name == "local[2]" else f"{warm / two[1]:.2f}x")
                for name, (first, warm) in times.items()]
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(table(f"One sample (bench dataset), `--by 1000`, job time without JVM start-up (load {load})",
                    rows, ("session", "first job", "next jobs (median of 3)", "local[2] speed-up, first",
                           "local[2] speed-up, next")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
