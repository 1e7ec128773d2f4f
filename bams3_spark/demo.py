"""``make demo``: generate a sample BAM, convert it, and show what BAMS3 gives you.

Usage: ``python -m bams3_spark.demo [WORKDIR]``. The sample is simulated with
pysam (paired 150 bp reads on two contigs plus a small HLA-like contig), so
the demo needs nothing but the package.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pysam

from bams3_spark.cli.main import main as bams3

CONTIGS = (("chr1", 3_000_000), ("chr2", 2_000_000), ("HLA-A*01:01:01:01", 3_503))


def make_sample_bam(path: Path, pairs: int = 40_000, seed: int = 1) -> Path:
    """Write a coordinate-sorted, indexed, paired-end sample BAM at ``path``."""
    rng = random.Random(seed)
    header = {
        "HD": {"VN": "1.6", "SO": "coordinate"},
        "SQ": [{"SN": n, "LN": ln} for n, ln in CONTIGS],
        "RG": [{"ID": "demo", "SM": "demo-sample", "PL": "ILLUMINA"}],
    }
    unsorted = path.with_suffix(".unsorted.bam")
    qual = pysam.qualitystring_to_array("F" * 150)
    with pysam.AlignmentFile(str(unsorted), "wb", header=header) as out:
        for i in range(pairs):
            tid = rng.choices(range(len(CONTIGS)), weights=[ln for _, ln in CONTIGS])[0]
            length = CONTIGS[tid][1]
            start = rng.randint(0, length - 600)
            mate = start + rng.randint(0, 300)
            for first, (pos, mpos) in enumerate(((start, mate), (mate, start))):
                a = pysam.AlignedSegment(out.header)
                a.query_name = f"pair{i}"
                a.flag = (99 if first == 0 else 147) | (1024 if rng.random() < 0.02 else 0)
                a.reference_id = a.next_reference_id = tid
                a.reference_start, a.next_reference_start = pos, mpos
                a.mapping_quality = rng.choice((0, 20, 60, 60, 60))
                a.cigarstring = "150M" if rng.random() < 0.9 else "70M5D80M"
                a.query_sequence = "".join(rng.choices("ACGT", k=150))
                a.query_qualities = qual
                a.template_length = (mpos - pos + 150) * (1 if first == 0 else -1)
                a.set_tags([("RG", "demo"), ("NM", rng.randint(0, 3))])
                out.write(a)
    pysam.sort("-o", str(path), str(unsorted))
    unsorted.unlink()
    pysam.index(str(path))
    return path


def run(workdir: str = "demo-data") -> int:
    """Build the sample, convert it, and print info, a region count and the first records."""
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    bam = root / "sample.bam"
    if not bam.exists():
        print(f"== generating {bam} with pysam")
        make_sample_bam(bam)
    dataset = str(root / "sample.bams3")
    print(f"== bams3 convert {bam} {dataset} --workers auto --overwrite")
    steps = [
        ["convert", str(bam), dataset, "--workers", "auto", "--overwrite", "--quiet"],
        ["info", dataset],
        ["validate", dataset],
    ]
    for args in steps:
        if args[0] != "convert":
            print(f"== bams3 {' '.join(args)}")
        rc = bams3(args)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(run(*sys.argv[1:2]))
