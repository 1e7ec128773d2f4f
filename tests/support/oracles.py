"""The oracles the tests compare with (samtools, the htslib conformance files) and where things are."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import pysam

ROOT = Path(__file__).resolve().parents[2]
CONFORMANCE_DIR = ROOT.parent / "shared" / "conformance" / "htslib"


def conformance_files() -> list[Path]:
    """The htslib conformance SAM files (read in place, never copied)."""
    return sorted(Path(p) for p in glob.glob(str(CONFORMANCE_DIR / "*.sam")))


def samtools(*args: str) -> str:
    """Run the real samtools and return its stdout (the oracle)."""
    return subprocess.run(["samtools", *args], check=True, capture_output=True, text=True).stdout


def sam_to_bam(sam: Path | str, out_dir: Path) -> Path:
    """Sort and index a SAM file into ``out_dir`` with pysam (as the corpus README says)."""
    out = out_dir / (Path(sam).stem.replace("#", "_") + ".bam")
    pysam.sort("-o", str(out), str(sam))
    pysam.index(str(out))
    return out


def have(tool: str) -> bool:
    """Return whether a command-line tool is on PATH."""
    return shutil.which(tool) is not None


#: Allele count columns read off a pileup, in the order of :func:`mpileup_counts`'s tuples.
PILEUP_COUNTS = ("A", "C", "G", "T", "N", "del", "ins")


def parse_pileup_bases(bases: str) -> dict[str, tuple[int, int]]:
    """Count a ``samtools mpileup`` base column (no reference): category -> (forward, reverse).

    ``^`` and the MAPQ character after it, and ``$``, mark read starts and
    ends; ``+N``/``-N`` are followed by N inserted/deleted bases (an insertion
    is counted for the read it follows, on that read's strand); ``*``/``#``
    are deletions, ``>``/``<`` reference skips (not counted); upper case is
    the forward strand.
    """
    counts = {k: [0, 0] for k in PILEUP_COUNTS}
    i = 0
    last_rev = 0
    while i < len(bases):
        c = bases[i]
        if c == "^":
            i += 2
            continue
        if c == "$":
            i += 1
            continue
        if c in "+-":
            j = i + 1
            while j < len(bases) and bases[j].isdigit():
                j += 1
            n = int(bases[i + 1: j])
            if c == "+":
                counts["ins"][last_rev] += 1
            i = j + n
            continue
        if c in "*#":
            last_rev = 1 if c == "#" else 0
            counts["del"][last_rev] += 1
        elif c in "><":
            last_rev = 1 if c == "<" else 0
        else:
            last_rev = 1 if c.islower() else 0
            key = c.upper() if c.upper() in "ACGT" else "N"
            counts[key][last_rev] += 1
        i += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


def mpileup_counts(bam: Path | str, *args: str) -> dict[tuple[str, int], dict[str, tuple[int, int]]]:
    """Counts per (reference, 1-based position) read off ``samtools mpileup -B --reverse-del ARGS BAM``.

    ``--reverse-del`` prints deletions on the reverse strand as ``#``, so
    they get a strand too.
    """
    text = samtools("mpileup", "-B", "--reverse-del", *args, str(bam))
    out: dict[tuple[str, int], dict[str, tuple[int, int]]] = {}
    for line in text.splitlines():
        f = line.split("\t")
        if f[3] == "0":
            continue  # no base passed -Q (an empty column; '*' when there are no reads at all)
        out[(f[0], int(f[1]))] = parse_pileup_bases(f[4])
    return out
