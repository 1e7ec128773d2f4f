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
