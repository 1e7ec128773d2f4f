"""``make demo``: simulate a sample BAM, convert it, query it, and run the coverage locally and with Spark.

Usage: ``python -m bams3_spark.demo [WORKDIR]`` (default ``demo-data``). The
sample is simulated with numpy and pysam (paired 150 bp reads from a random
genome, with sequencing errors, indels, clips, duplicates and an Illumina-like
base-quality profile), so the demo needs nothing but the package; the Spark
step needs Java and the repository's ``jobs/coverage.py``, and is skipped with
a reason when either is missing. Rerunning reuses the BAM.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pysam

from bams3_spark.cli.main import main as bams3

CONTIGS = (("chr1", 3_000_000), ("chr2", 2_000_000), ("HLA-A*01:01:01:01", 3_503))
READ_LEN = 150
#: Read pairs simulated: about 6x depth over the 5 Mbp.
PAIRS = 100_000
#: The window of the coverage steps, and the region the query step prints.
WINDOW = 10_000
REGION = "chr1:1,000,000-1,000,400"
REPO = Path(__file__).resolve().parents[1]
#: Written in the sample's @PG line: a sample from an older demo is simulated again.
SAMPLE_VERSION = "2"
_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


def _qualities(rng: np.random.Generator, n: int) -> np.ndarray:
    """Phred qualities (n x READ_LEN): high early in the read, falling and noisier towards its end,
    with a few low-quality runs, as an Illumina run looks before binning."""
    cycle = np.arange(READ_LEN) / READ_LEN
    mean = 37.5 - 9.0 * cycle**2
    q = mean + rng.normal(0, 1.5 + 4.0 * cycle, size=(n, READ_LEN))
    bad = rng.random(n) < 0.08  # reads whose tail collapses
    tail = rng.integers(READ_LEN // 2, READ_LEN, size=n)
    low = rng.normal(12, 5, size=(int(bad.sum()), READ_LEN))
    q[bad] = np.where(np.arange(READ_LEN) >= tail[bad, None], low, q[bad])
    return np.clip(np.rint(q), 2, 41).astype(np.uint8)


def _cigar_and_seq(
    rng: np.random.Generator, genome: np.ndarray, pos: int, quals: np.ndarray
) -> tuple[str, bytes, int, int]:
    """(CIGAR, read bases, reference bases spanned, NM) of one read starting at ``pos``."""
    kind = rng.random()
    if kind < 0.03:  # deletion
        a, d = int(rng.integers(30, 120)), int(rng.integers(1, 6))
        cigar, ref = f"{a}M{d}D{READ_LEN - a}M", np.concatenate(
            [genome[pos:pos + a], genome[pos + a + d:pos + d + READ_LEN]]
        )
        span, nm = READ_LEN + d, d
    elif kind < 0.06:  # insertion
        a, i = int(rng.integers(30, 120)), int(rng.integers(1, 4))
        ins = _BASES[rng.integers(0, 4, size=i)]
        cigar = f"{a}M{i}I{READ_LEN - a - i}M"
        ref = np.concatenate([genome[pos:pos + a], ins, genome[pos + a:pos + READ_LEN - i]])
        span, nm = READ_LEN - i, i
    elif kind < 0.09:  # adapter or chimeric soft clip at the end
        s = int(rng.integers(5, 40))
        cigar = f"{READ_LEN - s}M{s}S"
        ref = np.concatenate([genome[pos:pos + READ_LEN - s], _BASES[rng.integers(0, 4, size=s)]])
        span, nm = READ_LEN - s, 0
    else:
        cigar, ref, span, nm = f"{READ_LEN}M", genome[pos:pos + READ_LEN], READ_LEN, 0
    seq = ref.copy()
    # Substitutions at the rate the qualities promise.
    err = rng.random(READ_LEN) < 10.0 ** (-quals / 10.0)
    seq[err] = _BASES[(np.searchsorted(_BASES, seq[err]) + rng.integers(1, 4, size=int(err.sum()))) % 4]
    return cigar, seq.tobytes(), span, nm + int(err.sum())


def make_sample_bam(
    path: Path, pairs: int = PAIRS, seed: int = 1, contigs: tuple[tuple[str, int], ...] = CONTIGS
) -> Path:
    """Write a coordinate-sorted, indexed, paired-end sample BAM at ``path``.

    Reads are drawn from a random genome with errors at the rate their
    qualities say, about 6% of them with an indel or a soft clip, 2% marked
    duplicate, a spread of mapping qualities, and 0.5% of pairs unmapped
    (unplaced, ``*``). Names look like Illumina's. ``contigs`` are (name,
    length) pairs, each longer than 1 kbp; pairs fall on them by length.
    """
    rng = np.random.default_rng(seed)
    genomes = [_BASES[rng.integers(0, 4, size=ln)] for _, ln in contigs]
    weights = np.array([ln for _, ln in contigs], dtype=float)
    header = "@HD\tVN:1.6\tSO:unsorted\n" + "".join(f"@SQ\tSN:{n}\tLN:{ln}\n" for n, ln in contigs) + (
        "@RG\tID:demo\tSM:demo-sample\tPL:ILLUMINA\tLB:lib1\n"
        f"@PG\tID:simulate\tPN:bams3_spark.demo\tVN:{SAMPLE_VERSION}\n"
    )
    sam = path.with_suffix(".sam")
    quals = _qualities(rng, 2 * pairs)
    qual_text = (quals + 33).view(f"S{READ_LEN}").ravel()
    contig = rng.choice(len(contigs), size=pairs, p=weights / weights.sum())
    inserts = np.clip(rng.normal(380, 60, size=pairs), READ_LEN + 10, 700).astype(int)
    unmapped = rng.random(pairs) < 0.005
    dup = rng.random(pairs) < 0.02
    mapq = rng.choice([60, 60, 60, 60, 60, 60, 40, 27, 12, 0], size=pairs)
    tiles = rng.integers(1101, 2678, size=pairs)
    xy = rng.integers(1000, 32000, size=(pairs, 2))
    with open(sam, "w") as out:
        out.write(header)
        for i in range(pairs):
            name = f"A00123:8:H5KJ3DSXX:1:{tiles[i]}:{xy[i, 0]}:{xy[i, 1]}"
            q1, q2 = qual_text[2 * i].decode(), qual_text[2 * i + 1].decode()
            if unmapped[i]:
                s1 = _BASES[rng.integers(0, 4, size=READ_LEN)].tobytes().decode()
                s2 = _BASES[rng.integers(0, 4, size=READ_LEN)].tobytes().decode()
                out.write(f"{name}\t77\t*\t0\t0\t*\t*\t0\t0\t{s1}\t{q1}\tRG:Z:demo\n")
                out.write(f"{name}\t141\t*\t0\t0\t*\t*\t0\t0\t{s2}\t{q2}\tRG:Z:demo\n")
                continue
            tid = int(contig[i])
            rname, length = contigs[tid]
            genome = genomes[tid]
            insert = int(min(inserts[i], length - 10))
            start = int(rng.integers(0, length - insert - 10))
            c1, b1, span1, nm1 = _cigar_and_seq(rng, genome, start, quals[2 * i])
            mate = start + insert - READ_LEN
            c2, b2, span2, nm2 = _cigar_and_seq(rng, genome, mate, quals[2 * i + 1])
            tlen = mate + span2 - start
            reverse_first = rng.random() < 0.5
            f1, f2 = (83, 163) if reverse_first else (99, 147)
            if dup[i]:
                f1, f2 = f1 | 1024, f2 | 1024
            mq = int(mapq[i])
            as1, as2 = READ_LEN - 4 * nm1, READ_LEN - 4 * nm2
            out.write(
                f"{name}\t{f1}\t{rname}\t{start + 1}\t{mq}\t{c1}\t=\t{mate + 1}\t{tlen}\t{b1.decode()}\t{q1}"
                f"\tNM:i:{nm1}\tAS:i:{as1}\tRG:Z:demo\n"
                f"{name}\t{f2}\t{rname}\t{mate + 1}\t{mq}\t{c2}\t=\t{start + 1}\t{-tlen}\t{b2.decode()}\t{q2}"
                f"\tNM:i:{nm2}\tAS:i:{as2}\tRG:Z:demo\n"
            )
    pysam.sort("-o", str(path), str(sam))
    sam.unlink()
    pysam.index(str(path))
    return path


def _current_sample(bam: Path) -> bool:
    """Whether ``bam`` is a sample this version of the demo simulated (and can be reused)."""
    if not bam.exists() or not Path(f"{bam}.bai").exists():
        return False
    try:
        with pysam.AlignmentFile(str(bam)) as f:
            programs = f.header.to_dict().get("PG", [])
    except (OSError, ValueError):
        return False
    return any(p.get("PN") == "bams3_spark.demo" and p.get("VN") == SAMPLE_VERSION for p in programs)


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _run(args: list[str]) -> None:
    rc = bams3(args)
    sys.stdout.flush()
    if rc:
        raise SystemExit(rc)


def _query(bam: Path, dataset: str) -> None:
    _step(f"bams3 query {dataset} {REGION}   (the first records; samtools view's format)")
    proc = subprocess.run(
        [sys.executable, "-m", "bams3_spark", "query", dataset, REGION], capture_output=True, check=True
    )
    lines = proc.stdout.decode().splitlines()
    for line in lines[:3]:
        print(line)
    print(f"... {len(lines)} records overlap {REGION}")
    if shutil.which("samtools"):
        theirs = subprocess.run(["samtools", "view", str(bam), REGION], capture_output=True, check=True)
        same = "identical to" if theirs.stdout == proc.stdout else "DIFFERENT from"
        print(f"    {same} 'samtools view {bam} {REGION}'")
    _step(f"bams3 query {dataset} chr2 '*' --count --filter 'mapq >= 30 and flag & 1024 == 0'")
    _run(["query", dataset, "chr2", "*", "--count", "--filter", "mapq >= 30 and flag & 1024 == 0"])


def _spark_coverage(dataset: str, out: Path, local_regions: Path) -> str:
    """Run ``spark-submit jobs/coverage.py`` in local mode; return what happened, in a few words."""
    job = REPO / "jobs" / "coverage.py"
    submit = Path(sys.executable).with_name("spark-submit")
    if not submit.exists():
        submit = Path(shutil.which("spark-submit") or "spark-submit")
    if not job.exists():
        return f"skipped: {job} not found (the demo runs from a checkout of the repository)"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "skipped: no Java (install a Java 17 runtime, e.g. apt-get install openjdk-17-jre-headless)"
    cmd = [str(submit), str(job), dataset, "--by", str(WINDOW), "--out", str(out), "--overwrite"]
    _step("spark-submit jobs/coverage.py " + " ".join(cmd[2:]) + "   (Spark local mode: no cluster, no S3)")
    # The driver and the workers run this interpreter (the venv's), whatever python3 is on PATH.
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Spark's own log lines stay out of the way; the job's lines are shown.
    for line in proc.stdout.splitlines():
        if line.startswith(("jobs/", str(out))) or "error" in line.lower():
            print(line)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], file=sys.stderr)
        raise SystemExit(f"demo: spark-submit jobs/coverage.py failed (exit {proc.returncode})")
    seconds = time.monotonic() - t0
    import pyarrow.parquet as pq

    table = pq.read_table(out).sort_by([("rname", "ascending"), ("start", "ascending")])
    spark = {
        (r, s): f"{v:.2f}"
        for r, s, v in zip(
            table.column("rname").to_pylist(),
            table.column("start").to_pylist(),
            table.column("mean_depth").to_pylist(),
            strict=True,
        )
    }
    with gzip.open(local_regions, "rt") as fh:
        local = {(f[0], int(f[1])): f[3] for f in (line.split() for line in fh)}
    verdict = "the same values as" if spark == local else "DIFFERENT values from"
    print(f"    {len(spark):,} windows in {seconds:.0f} s, {verdict} bams3 coverage's {local_regions.name}")
    return f"{out}/ (Parquet: sample, rname, start, end, mean_depth)"


def _size(path: Path) -> str:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    total = sum(p.stat().st_size for p in files)
    return f"{total / 1e6:.1f} MB" if total >= 100_000 else f"{total / 1e3:.0f} kB"


def run(workdir: str = "demo-data") -> int:
    """Build the sample, convert it, query it, and compute its coverage locally and with Spark."""
    t0 = time.monotonic()
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    bam = root / "sample.bam"
    if not _current_sample(bam):
        _step(f"simulating {bam} ({2 * PAIRS:,} paired 150 bp reads, {len(CONTIGS)} references)")
        make_sample_bam(bam)
    dataset = str(root / "sample.bams3")
    _step(f"bams3 convert {bam} {dataset} --workers auto --overwrite")
    _run(["convert", str(bam), dataset, "--workers", "auto", "--overwrite"])
    _step(f"bams3 info {dataset}")
    _run(["info", dataset])
    _step(f"bams3 validate {dataset}")
    _run(["validate", dataset])
    _query(bam, dataset)
    cov_dir = root / "coverage"
    cov_dir.mkdir(exist_ok=True)
    prefix, png = cov_dir / "sample", root / "coverage.png"
    _step(f"bams3 coverage {dataset} -o {prefix} --by {WINDOW} -t auto --plot {png}   (mosdepth's files)")
    _run(["coverage", dataset, "-o", str(prefix), "--by", str(WINDOW), "-t", "auto", "--plot", str(png)])
    spark = _spark_coverage(dataset, root / "spark-coverage", Path(f"{prefix}.regions.bed.gz"))

    made = [
        (bam, "the simulated sample BAM (+ .bai)"),
        (Path(dataset), "the BAMS3 dataset: manifest, indexes and chunk objects"),
        (cov_dir, "mosdepth-compatible coverage files (summary, distributions, per-base, windows)"),
        (png, "the coverage plot"),
    ]
    _step(f"done in {time.monotonic() - t0:.0f} s. What was made:")
    for path, what in made:
        print(f"  {str(path):<28} {_size(path):>9}  {what}")
    spark_dir = root / "spark-coverage"
    print(f"  {str(spark_dir):<28} {_size(spark_dir) if spark_dir.exists() else '':>9}  Spark job: {spark}")
    bin_dir = Path(sys.executable).parent
    b3 = bin_dir / "bams3" if (bin_dir / "bams3").exists() else Path("bams3")
    print(
        "\nNext, try (README: 'A two-minute tour'):\n"
        f"  {b3} query {dataset} 'HLA-A*01:01:01:01' -h | head\n"
        f"  {b3} query {dataset} chr1:100k-200k --explain\n"
        f"  {b3} query {dataset} chr1 chr2 --count --parallel auto\n"
        f"  {b3} chunks -l {dataset} --shard 0/4\n"
        f"  {b3} cat $({b3} chunks {dataset} chr2 | head -1) | head -3\n"
        f"  {b3} export {dataset} {root}/roundtrip.bam && samtools view -c {root}/roundtrip.bam\n"
        f"  {bin_dir / 'spark-submit'} jobs/query.py --region chr2:500k-600k {dataset} "
        f"--out {root}/chr2-counts --count --overwrite"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(*sys.argv[1:2]))
