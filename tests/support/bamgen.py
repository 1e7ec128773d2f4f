"""Builds the generated test BAM: many contigs, window-straddling reads, spliced
reads, placed and unplaced unmapped reads, every aux type, a 70,000-operation
CIGAR, records without SEQ/QUAL and a pile-up. Deterministic (fixed seed)."""

from __future__ import annotations

import random
from pathlib import Path

import pysam

WINDOW = 262_144  # the smallest --chunk-size, so a small BAM spans many windows
CONTIGS = [
    ("chr1", 1_200_000),
    ("chr2", 700_000),
    ("HLA-DRB1*15:01:01:01", 11_000),
    ("chr1_KI270706v1_random", 175_055),
    ("chrEmpty", 300_000),
] + [(f"scaffold_{i}", 5_000 + 97 * i) for i in range(40)]


def _seq(rng: random.Random, n: int) -> str:
    return "".join(rng.choices("ACGT", k=n))


def _qual(rng: random.Random, n: int) -> str:
    return "".join(chr(33 + rng.randint(2, 40)) for _ in range(n))


def sorted_indexed_bam(out: Path, sam_lines: list[str]) -> Path:
    """Write SAM lines (header first, records in any order) as a coordinate-sorted, indexed BAM."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sam = out.with_suffix(".unsorted.sam")
    sam.write_text("\n".join(sam_lines) + "\n")
    pysam.sort("-o", str(out), str(sam))
    pysam.index(str(out))
    sam.unlink()
    return out


def make_multi_contig_bam(out: Path, seed: int = 7) -> Path:
    """Write, sort and index the test BAM at ``out``; return its path."""
    rng = random.Random(seed)
    lines = ["@HD\tVN:1.6\tSO:unsorted"]
    lines += [f"@SQ\tSN:{n}\tLN:{ln}" for n, ln in CONTIGS]
    lines += ["@RG\tID:rg1\tSM:sampleA\tPL:ILLUMINA", "@PG\tID:gen\tPN:bamgen\tVN:1", "@CO\ta comment"]
    recs: list[str] = []

    def add(
        qname: str,
        flag: int,
        rname: str,
        pos: int,
        mapq: int,
        cigar: str,
        rnext: str,
        pnext: int,
        tlen: int,
        seq: str,
        qual: str,
        tags: str = "",
    ) -> None:
        rec = f"{qname}\t{flag}\t{rname}\t{pos}\t{mapq}\t{cigar}\t{rnext}\t{pnext}\t{tlen}\t{seq}\t{qual}"
        recs.append(rec + ("\t" + tags if tags else ""))

    n = 0
    for name, length in CONTIGS:
        if name == "chrEmpty":
            continue
        count = 600 if length > 100_000 else 12
        for _ in range(count):
            n += 1
            ln = rng.choice([50, 100, 150])
            pos = rng.randint(1, length - ln)
            mpos = min(length - ln, pos + rng.randint(0, 400))
            tags = f"NM:i:{rng.randint(0, 5)}\tRG:Z:rg1\tAS:i:{rng.randint(0, 150)}"
            add(
                f"r{n}",
                99,
                name,
                pos,
                rng.randint(0, 60),
                f"{ln}M",
                "=",
                mpos,
                mpos - pos + ln,
                _seq(rng, ln),
                _qual(rng, ln),
                tags,
            )
            add(
                f"r{n}",
                147,
                name,
                mpos,
                rng.randint(0, 60),
                f"{ln}M",
                "=",
                pos,
                -(mpos - pos + ln),
                _seq(rng, ln),
                _qual(rng, ln),
                tags,
            )
    # Reads straddling every window edge of chr1 and chr2, at several offsets.
    for name, length in CONTIGS[:2]:
        for edge in range(WINDOW, length, WINDOW):
            for off in (-149, -100, -1, 0, 1):
                n += 1
                add(f"edge{n}", 0, name, edge + off, 60, "150M", "*", 0, 0, _seq(rng, 150), _qual(rng, 150))
    # Spliced reads with long N operations spanning several windows.
    add("splice1", 0, "chr1", 100_000, 60, "50M600000N50M", "*", 0, 0, _seq(rng, 100), _qual(rng, 100))
    add("splice2", 16, "chr1", 262_000, 60, "20M2S", "*", 0, 0, _seq(rng, 22), _qual(rng, 22))
    add("splice3", 0, "chr2", 5_000, 60, "10S40M300000N40M5D10M", "*", 0, 0, _seq(rng, 100), _qual(rng, 100))
    # Placed unmapped mate next to its mapped mate.
    add("pair_um", 73, "chr2", 400_000, 60, "100M", "=", 400_000, 0, _seq(rng, 100), _qual(rng, 100))
    add("pair_um", 133, "chr2", 400_000, 0, "*", "=", 400_000, 0, _seq(rng, 100), _qual(rng, 100))
    # Secondary, supplementary, duplicate, QC-fail.
    add("sec", 256, "chr1", 500_000, 0, "100M", "*", 0, 0, "*", "*")
    add(
        "supp",
        2048,
        "chr1",
        500_010,
        60,
        "50M50H",
        "*",
        0,
        0,
        _seq(rng, 50),
        _qual(rng, 50),
        "SA:Z:chr2,100,+,50S50M,60,0;",
    )
    add("dup", 1024, "chr1", 500_020, 60, "100M", "*", 0, 0, _seq(rng, 100), _qual(rng, 100))
    add("qcfail", 512, "chr1", 500_030, 60, "100M", "*", 0, 0, _seq(rng, 100), _qual(rng, 100))
    # Every aux type, floats that %g would round, H, A, B arrays of each subtype.
    aux = (
        "XA:A:q\tXi:i:-2147483648\tXI:i:4294967295\tXs:i:-300\tXc:i:200\tXf:f:3.14159274\t"
        "Xg:f:1e-30\tXZ:Z:hello world\tXH:H:1AE301\tBc:B:c,-128,0,127\tBC:B:C,0,255\t"
        "Bs:B:s,-32768,32767\tBS:B:S,65535\tBi:B:i,-2147483648,1\tBI:B:I,4294967295\t"
        "Bf:B:f,0.1,-2.5,1e+10,3.4028235e+38\tBe:B:f"
    )
    add("aux_all", 0, "chr1", 700_000, 60, "10M", "*", 0, 0, "ACGTACGTAC", "IIIIIIIIII", aux)
    # No SEQ / no QUAL.
    add("noseq", 0, "chr1", 700_100, 60, "20M", "*", 0, 0, "*", "*")
    add("noqual", 0, "chr1", 700_200, 60, "4M", "*", 0, 0, "ACGT", "*")
    # 70,000 CIGAR operations (htslib stores these in the CG tag inside BAM).
    add("bigcigar", 0, "chr2", 600_000, 60, "1M1I" * 35_000, "*", 0, 0, _seq(rng, 70_000), "*")
    # Pile-up at one position (exercises window splitting with a small record bound).
    for i in range(700):
        add(f"pile{i}", 0, "chr1", 900_000, 60, "60M", "*", 0, 0, _seq(rng, 60), _qual(rng, 60))
    # Unplaced unmapped reads, and a read placed at the very end of a contig.
    for i in range(25):
        add(
            f"unplaced{i}",
            77 if i % 2 == 0 else 141,
            "*",
            0,
            0,
            "*",
            "*",
            0,
            0,
            _seq(rng, 80),
            _qual(rng, 80),
        )
    add("contig_end", 0, "chr2", 700_000 - 29, 60, "30M", "*", 0, 0, _seq(rng, 30), _qual(rng, 30))
    rng.shuffle(recs)
    return sorted_indexed_bam(out, lines + recs)


#: Length of the long contig of :func:`make_bin_test_bam`.
BIG = 20_000_000


def make_bin_test_bam(path: Path) -> Path:
    """A 20 Mbp contig dense enough for htslib to keep 1 Mbp bins, long spliced reads
    crossing 1 and 8 Mbp bin boundaries (chunks in coarser bins), a small contig and
    unplaced reads; sorted, BAI-indexed."""
    rng = random.Random(11)
    sq = [{"SN": "big", "LN": BIG}, {"SN": "small", "LN": 50_000}]
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": sq}
    recs: list[tuple[int, int, str]] = [(0, rng.randrange(0, BIG - 1000), "50M") for _ in range(60_000)]
    for edge in (1 << 20, 8 << 20, 9 << 20, 16 << 20):
        for k in range(4):
            recs.append((0, edge - 2_000 * (k + 1), f"25M{1_000_000 * (k % 3) + 10_000}N25M"))
    recs += [(1, rng.randrange(0, 49_000), "50M") for _ in range(300)]
    recs.sort()
    unsorted = path.with_suffix(".tmp.bam")
    with pysam.AlignmentFile(str(unsorted), "wb", header=header) as out:
        for i, (tid, pos, cigar) in enumerate(recs):
            a = pysam.AlignedSegment(out.header)
            a.query_name, a.flag, a.reference_id, a.reference_start = f"q{i}", 0, tid, pos
            a.mapping_quality, a.cigarstring = 60, cigar
            a.query_sequence = "".join(rng.choices("ACGT", k=50))
            a.query_qualities = pysam.qualitystring_to_array("I" * 50)
            out.write(a)
        for i in range(50):
            a = pysam.AlignedSegment(out.header)
            a.query_name, a.flag, a.reference_id, a.reference_start = f"u{i}", 4, -1, -1
            a.query_sequence = "ACGTACGTAC"
            out.write(a)
    pysam.sort("-o", str(path), str(unsorted))
    unsorted.unlink()
    pysam.index(str(path))
    return path


def unsorted_bam(tmp_path: Path) -> Path:
    """A BAM whose records are out of coordinate order (and say nothing of it)."""
    sam = tmp_path / "unsorted.sam"
    sam.write_text(
        "@HD\tVN:1.6\n@SQ\tSN:c\tLN:1000\n"
        "a\t0\tc\t500\t60\t4M\t*\t0\t0\tACGT\tIIII\n"
        "b\t0\tc\t100\t60\t4M\t*\t0\t0\tACGT\tIIII\n"
    )
    bam = tmp_path / "unsorted.bam"
    pysam.view("-b", "-o", str(bam), str(sam), catch_stdout=False)
    return bam


def empty_bam(tmp_path: Path) -> Path:
    """A sorted, indexed BAM with a header and no record."""
    sam = tmp_path / "empty.sam"
    sam.write_text("@HD\tVN:1.6\tSO:coordinate\n@SQ\tSN:c\tLN:1000\n")
    bam = tmp_path / "empty.bam"
    pysam.view("-b", "-o", str(bam), str(sam), catch_stdout=False)
    pysam.index(str(bam))
    return bam
