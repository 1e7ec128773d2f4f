"""Generated BAMs for genotyping tests: every situation samtools mpileup's counting distinguishes.

Deterministic (fixed seeds). Contig names contain ``:`` and ``*``.
"""

from __future__ import annotations

import random
from pathlib import Path

from tests.support.bamgen import sorted_indexed_bam

CONTIGS = [("chr1", 3000), ("HLA-DRB1*15:01:01:01", 1500), ("chrUn:12-34*", 1200)]
FLAGS_SINGLE = [0, 16, 0, 16, 1024, 256, 512, 2048, 2064, 65, 129, 4 | 0]


def _seq(rng: random.Random, n: int) -> str:
    return "".join(rng.choices("ACGTACGTACGTN", k=n))


def _qual(rng: random.Random, n: int) -> str:
    return "".join(chr(33 + rng.choice([0, 2, 5, 12, 13, 14, 20, 25, 30, 35, 40, 41])) for _ in range(n))


def _cigar(rng: random.Random, qlen: int, gaps: bool) -> tuple[str, int]:
    """A CIGAR consuming ``qlen`` query bases, with indels, skips and clips; returns (cigar, ref length)."""
    ops: list[tuple[int, str]] = []
    left = qlen
    if rng.random() < 0.2:
        s = rng.randint(1, 10)
        ops.append((s, "S"))
        left -= s
    while left > 0:
        m = min(left, rng.randint(3, 40))
        ops.append((m, rng.choice("MMMM=X")))
        left -= m
        if left > 2 and gaps and rng.random() < 0.5:
            kind = rng.choice("IDDNIP")
            if kind == "I":
                k = min(left - 1, rng.randint(1, 4))
                ops.append((k, "I"))
                left -= k
            elif kind == "P":
                ops.append((1, "P"))
                k = min(left - 1, rng.randint(1, 3))
                ops.append((k, "I"))
                left -= k
            else:
                ops.append((rng.randint(1, 5) if kind == "D" else rng.randint(20, 200), kind))
    if ops[-1][1] in "IP":
        ops.append((1, "M"))
    merged: list[tuple[int, str]] = []
    for n, op in ops:
        if merged and merged[-1][1] == op:
            merged[-1] = (merged[-1][0] + n, op)
        else:
            merged.append((n, op))
    rlen = sum(n for n, op in merged if op in "MDN=X")
    return "".join(f"{n}{op}" for n, op in merged), rlen


def make_genotype_bam(out: Path, seed: int = 15, deep: int = 300, sample: str = "geno") -> Path:
    """Write, sort and index the genotyping test BAM; return its path."""
    rng = random.Random(seed)
    lines = ["@HD\tVN:1.6\tSO:unsorted"] + [f"@SQ\tSN:{n}\tLN:{ln}" for n, ln in CONTIGS]
    lines.append(f"@RG\tID:g\tSM:{sample}")
    recs: list[str] = []

    def add(q: str, flag: int, rname: str, pos: int, mapq: int, cigar: str, rnext: str, pnext: int,
            tlen: int, seq: str, qual: str) -> None:
        recs.append(f"{q}\t{flag}\t{rname}\t{pos}\t{mapq}\t{cigar}\t{rnext}\t{pnext}\t{tlen}\t{seq}\t{qual}\tRG:Z:g")

    n = 0
    for name, length in CONTIGS:
        # Single reads of every flag kind, with indels, skips and clips.
        for _ in range(length // 8):
            n += 1
            qlen = rng.choice([30, 50, 75])
            cigar, rlen = _cigar(rng, qlen, gaps=rng.random() < 0.6)
            pos = rng.randint(1, max(1, length - rlen))
            flag = rng.choice(FLAGS_SINGLE)
            qual = "*" if rng.random() < 0.03 else _qual(rng, qlen)
            add(f"s{n}", flag, name, pos, rng.randint(0, 60), cigar, "*", 0, 0, _seq(rng, qlen), qual)
        # Overlapping proper pairs: same or close starts, differing bases and qualities.
        for _ in range(length // 10):
            n += 1
            qlen = rng.choice([40, 60])
            c1, r1 = _cigar(rng, qlen, gaps=rng.random() < 0.5)
            c2, r2 = _cigar(rng, qlen, gaps=rng.random() < 0.5)
            p1 = rng.randint(1, max(1, length - 200))
            p2 = p1 + rng.choice([0, 0, 1, 5, 10, 20, 35, 80])
            s1 = _seq(rng, qlen)
            # The mate mostly repeats the bases (same fragment), sometimes not.
            s2 = "".join(c if rng.random() < 0.8 else rng.choice("ACGT") for c in (s1 * 2)[:qlen])
            f1, f2 = rng.choice([(99, 147), (163, 83), (97, 145), (99, 147), (67, 131)])
            tlen = p2 + r2 - p1
            mq1, mq2 = rng.randint(0, 60), rng.randint(0, 60)
            add(f"p{n}", f1, name, p1, mq1, c1, "=", p2, tlen, s1, _qual(rng, qlen))
            add(f"p{n}", f2, name, p2, mq2, c2, "=", p1, -tlen, s2, _qual(rng, qlen))
            if rng.random() < 0.05:  # a supplementary piece of the same template
                supp = 2048 | (f1 & 0xF3)
                add(f"p{n}", supp, name, p1 + 3, 60, "20M", "=", p2, tlen, _seq(rng, 20), _qual(rng, 20))
        # Mates on another reference and mates far away (htslib skips them).
        for _ in range(10):
            n += 1
            p = rng.randint(1, length - 60)
            other = CONTIGS[0][0] if name != CONTIGS[0][0] else CONTIGS[1][0]
            add(f"x{n}", 99, name, p, 60, "50M", other, 10, 0, _seq(rng, 50), _qual(rng, 50))
            add(f"x{n}", 147, name, p + 5, 60, "50M", "=", p, -55, _seq(rng, 50), _qual(rng, 50))
    # A deep pile-up on chr1: many reads starting at a few positions.
    for i in range(deep):
        n += 1
        start = 1000 + (i % 7)
        cigar = "40M" if i % 5 else "10M2D30M"
        add(f"d{n}", 0 if i % 3 else 16, "chr1", start, 60, cigar, "*", 0, 0, _seq(rng, 40), _qual(rng, 40))
    # Reads starting and ending exactly at chosen sites, and insertions right after a site.
    for i in range(20):
        add(f"e{i}", 0, "chr1", 2000, 60, "10M", "*", 0, 0, _seq(rng, 10), "I" * 10)
        add(f"f{i}", 16, "chr1", 1991, 60, "10M", "*", 0, 0, _seq(rng, 10), "I" * 10)
        add(f"g{i}", 0, "chr1", 1995, 60, "6M2I4M", "*", 0, 0, _seq(rng, 12), "I" * 12)
        add(f"h{i}", 0, "chr1", 1990, 60, "5M100N5M", "*", 0, 0, _seq(rng, 10), "I" * 10)
    rng.shuffle(recs)
    return sorted_indexed_bam(out, lines + recs)
