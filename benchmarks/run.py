"""`make bench`: every benchmark, on the same bench BAM and dataset, in one run.

Builds the bench BAM with ../shared/bench/make_bench_bam.sh when it is missing
(needs samtools, minimap2 and dwgsim), converts it once, then runs each
benchmark script; their Markdown tables go to stdout and BENCH_OUT/results.md.

Environment: BENCH_BAM (default bench-out/bench.bam), BENCH_OUT (bench-out),
BENCH_REPEAT (3: the conversion and coverage comparisons are medians of so
many alternate runs). The machine's load averages are printed before and after.
Benchmarks only talk to 127.0.0.1 (a moto S3 server and a latency proxy).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "bench" / "make_bench_bam.sh"


def _load() -> str:
    """The load averages (1, 5, 15 min) and core count: the neighbours the figures shared the machine with."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min) on {os.cpu_count()} cores"


def main() -> int:
    out = Path(os.environ.get("BENCH_OUT", ROOT / "bench-out")).resolve()
    bam = Path(os.environ.get("BENCH_BAM", out / "bench.bam")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not bam.exists():
        missing = [t for t in ("samtools", "minimap2", "dwgsim") if shutil.which(t) is None]
        if missing:
            print(
                f"bench: the bench BAM needs {', '.join(missing)} "
                f"(apt-get install -y samtools minimap2 dwgsim)",
                file=sys.stderr,
            )
            return 1
        subprocess.run(["bash", str(SHARED), str(bam.parent)], check=True)
    for tool in ("samtools", "mosdepth"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is needed for the comparisons", file=sys.stderr)
            return 1
    dataset = out / "bench.bams3"
    bams3 = Path(sys.executable).parent / "bams3"
    if not (dataset / "bams3.json").exists():
        subprocess.run(
            [str(bams3), "convert", "--workers", "2", "--overwrite", "--quiet", str(bam), str(dataset)],
            check=True,
        )
    py = sys.executable
    repeat = os.environ.get("BENCH_REPEAT", "3")
    runs = [
        [py, "bench_convert.py", str(bam), str(out / "convert"), "--repeat", repeat],
        [py, "bench_query.py", "--bam", str(bam), "--dataset", str(dataset)],
        [py, "bench_coverage.py", str(dataset), str(bam), str(out / "coverage"), "--repeat", repeat],
        [py, "bench_genotype.py", str(dataset), str(bam), str(out / "genotype"), "--repeat", repeat],
        [py, "bench_spark_scan.py", str(bam), str(dataset)],
        [py, "bench_spark_convert.py", str(bam), str(out / "spark-convert")],
        [py, "bench_cohort.py", str(bam), str(dataset), str(out / "cohort")],
    ]
    results = [f"machine load before the run: {_load()}\n"]
    print(results[0], flush=True)
    failed = 0
    for cmd in runs:
        print(f"== {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}", flush=True)
        proc = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True)
        sys.stdout.write(proc.stdout)
        if proc.returncode:
            failed += 1
            sys.stderr.write(proc.stderr[-4000:])
        results.append(proc.stdout)
    results.append(f"machine load after the run: {_load()}\n")
    print(results[-1])
    (out / "results.md").write_text("\n".join(results))
    print(f"tables written to {out / 'results.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
