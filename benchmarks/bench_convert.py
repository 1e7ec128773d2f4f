"""Conversion speed and size: `bams3 convert --workers 2` vs `samtools view -@2 -b`.

Usage: bench_convert.py BAM WORKDIR [--repeat N]. Both commands run on the same
input in the same run, alternately; the figures are medians of --repeat runs:
wall time, CPU time (user + system of the command and its worker processes)
and peak memory (summed PSS of the process tree, see common.measured).
Target (issue 17): bams3 at most as slow as samtools.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from common import bams3_cmd, dir_bytes, measured, table

TARGET = 1.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bam", type=Path)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = args.workdir / "convert.bams3"
    reencoded = args.workdir / "samtools-reencode.bam"
    runs: dict[str, list[tuple[float, float, float]]] = {"samtools": [], "bams3": []}
    for _ in range(args.repeat):
        runs["samtools"].append(
            measured(["samtools", "view", "-@2", "-b", "-o", str(reencoded), str(args.bam)])
        )
        convert = bams3_cmd("convert", "--workers", "2", "--overwrite", "--quiet", str(args.bam), str(out))
        runs["bams3"].append(measured(convert))
    st = [statistics.median(x) for x in zip(*runs["samtools"], strict=True)]
    b3 = [statistics.median(x) for x in zip(*runs["bams3"], strict=True)]
    size_bam = args.bam.stat().st_size
    size_ds = dir_bytes(out)
    reencoded.unlink(missing_ok=True)
    ratio = b3[0] / st[0]
    rows = [
        ("`samtools view -@2 -b` (re-encode)", f"{st[0]:.1f} s", f"{st[1]:.1f} s", f"{st[2]:.0f} MB", "1.00",
         f"{size_bam / 1e6:,.0f} MB (input BAM)", ""),
        ("`bams3 convert --workers 2`", f"{b3[0]:.1f} s", f"{b3[1]:.1f} s", f"{b3[2]:.0f} MB",
         f"**{ratio:.2f}x**", f"{size_ds / 1e6:,.0f} MB ({size_ds / size_bam:.2f}x BAM)",
         f"target <= {TARGET:.1f}x: {'met' if ratio <= TARGET else 'not met'}"),
    ]
    print(table(f"Conversion ({args.bam.name}, median of {args.repeat})", rows,
                ("command", "wall time", "CPU time", "peak memory", "time vs samtools", "output size", "")))
    shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
