"""Conversion speed and size: `bams3 convert --workers 2` vs `samtools view -@2 -b`.

Usage: bench_convert.py BAM WORKDIR. Both commands run on the same input in the
same run; the figures are wall times (best of --repeat) and their ratio.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from common import bams3_cmd, dir_bytes, table, timed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bam", type=Path)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = args.workdir / "convert.bams3"
    reencoded = args.workdir / "samtools-reencode.bam"
    t_samtools = timed(["samtools", "view", "-@2", "-b", "-o", str(reencoded), str(args.bam)], args.repeat)
    t_bams3 = timed(
        bams3_cmd("convert", "--workers", "2", "--overwrite", "--quiet", str(args.bam), str(out)), args.repeat
    )
    size_bam = args.bam.stat().st_size
    size_ds = dir_bytes(out)
    reencoded.unlink(missing_ok=True)
    rows = [
        (
            "`samtools view -@2 -b` (re-encode)",
            f"{t_samtools:.1f} s",
            "1.00",
            f"{size_bam / 1e6:,.0f} MB (input BAM)",
        ),
        (
            "`bams3 convert --workers 2`",
            f"{t_bams3:.1f} s",
            f"{t_bams3 / t_samtools:.2f}",
            f"{size_ds / 1e6:,.0f} MB ({size_ds / size_bam:.2f}x BAM)",
        ),
    ]
    print(table("Conversion (bench BAM)", rows, ("command", "wall time", "ratio vs samtools", "output size")))
    shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
