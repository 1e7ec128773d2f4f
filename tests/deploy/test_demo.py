"""``make demo`` end to end (``python -m bams3_spark.demo``): the simulated sample looks real, and
everything the demo makes is right by the real tools (samtools, mosdepth), including the Spark
coverage job it runs in local mode."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pysam
import pytest

from bams3_spark.demo import WINDOW, _current_sample
from tests.support.oracles import ROOT, samtools

pytestmark = [
    pytest.mark.slow,
    pytest.mark.spark,
    pytest.mark.skipif(
        shutil.which("samtools") is None or shutil.which("mosdepth") is None,
        reason="needs samtools and mosdepth",
    ),
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run the demo as ``make demo`` does (from the repository, stdout not a terminal)."""
    root = tmp_path_factory.mktemp("demo") / "demo-data"
    proc = subprocess.run(
        [sys.executable, "-m", "bams3_spark.demo", str(root)], cwd=ROOT, capture_output=True, text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, proc.stdout


def test_the_sample_looks_like_sequencing_data(demo: tuple[Path, str]) -> None:
    root, _ = demo
    bam = root / "sample.bam"
    quals: set[int] = set()
    cigars: set[str] = set()
    with pysam.AlignmentFile(str(bam)) as f:
        for n, rec in enumerate(f):
            quals.update(rec.query_qualities or ())
            cigars.add("".join(c for c in rec.cigarstring or "*" if c.isalpha()))
            if n == 20_000:
                break
    assert len(quals) >= 30 and min(quals) <= 10 and max(quals) >= 38  # not all 'F'
    assert {"M", "MDM", "MIM", "MS"} <= cigars
    flagstat = samtools("flagstat", str(bam))
    assert " duplicates" in flagstat and "200000 + 0 in total" in flagstat
    assert int(samtools("view", "-c", "-f", "1024", str(bam))) > 0
    assert int(samtools("view", "-c", str(bam), "*")) > 0
    # A real-looking sample compresses like one: the dataset is smaller than the BAM, not 10x.
    ds_bytes = sum(p.stat().st_size for p in (root / "sample.bams3").rglob("*") if p.is_file())
    assert 0.5 < ds_bytes / bam.stat().st_size < 1.0


def test_demo_outputs_match_the_tools(demo: tuple[Path, str], tmp_path: Path) -> None:
    root, out = demo
    bam, ds = root / "sample.bam", root / "sample.bams3"
    # The region query shown: samtools' records, and the demo says so.
    assert "identical to 'samtools view" in out
    first = next(line for line in out.splitlines() if line.startswith("A00123:"))
    assert first == samtools("view", str(bam), "chr1:1,000,000-1,000,400").splitlines()[0]
    assert "OK (200,000 records" in out
    # The local coverage: mosdepth's files.
    prefix = tmp_path / "md"
    subprocess.run(["mosdepth", "--by", str(WINDOW), str(prefix), str(bam)], check=True, capture_output=True)
    for suffix in (".regions.bed.gz", ".per-base.bed.gz"):
        with gzip.open(f"{prefix}{suffix}", "rt") as theirs:
            with gzip.open(f"{root}/coverage/sample{suffix}", "rt") as ours:
                assert ours.read() == theirs.read(), suffix
    assert (root / "coverage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The Spark job's windows: mosdepth's values.
    table = pq.read_table(root / "spark-coverage")
    spark = {
        (r, s, e): f"{v:.2f}"
        for r, s, e, v in zip(*(table.column(c).to_pylist() for c in ("rname", "start", "end", "mean_depth")),
                              strict=True)
    }
    with gzip.open(f"{prefix}.regions.bed.gz", "rt") as fh:
        mosdepth = {(f[0], int(f[1]), int(f[2])): f[3] for f in (line.split() for line in fh)}
    assert spark == mosdepth
    assert "the same values as bams3 coverage" in out
    # The closing summary: what was made where, and what to try next.
    summary = out[out.index("What was made:"):]
    for made in ("sample.bam", "sample.bams3", "coverage.png", "spark-coverage", "Next, try"):
        assert made in summary
    assert ds.is_dir()


def test_demo_reruns_reusing_the_bam(demo: tuple[Path, str]) -> None:
    """``make demo`` twice: the sample is kept, the dataset replaced; the Spark step is exercised above."""
    root, _ = demo
    assert _current_sample(root / "sample.bam")
    before = (root / "sample.bam").stat().st_mtime_ns
    code = (
        "import sys\n"
        "import bams3_spark.demo as d\n"
        "d._spark_coverage = lambda *a: 'skipped in this test'\n"
        f"sys.exit(d.run({str(root)!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "simulating" not in proc.stdout and (root / "sample.bam").stat().st_mtime_ns == before


def test_a_sample_from_another_demo_is_simulated_again(tmp_path: Path) -> None:
    """A BAM the demo did not write (or an older demo's, all qualities 'F') is not reused."""
    sam, other = tmp_path / "old.sam", tmp_path / "sample.bam"
    sam.write_text(
        "@HD\tVN:1.6\tSO:coordinate\n@SQ\tSN:chr1\tLN:1000\n@PG\tID:simulate\tPN:bams3_spark.demo\n"
        "r1\t0\tchr1\t10\t60\t4M\t*\t0\t0\tACGT\tFFFF\n"
    )
    pysam.sort("-o", str(other), str(sam))
    pysam.index(str(other))
    assert not _current_sample(other) and not _current_sample(tmp_path / "missing.bam")
