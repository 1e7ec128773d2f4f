"""BAI/CSI parsing (bams3_spark.bam.index): the byte ranges it plans hold everything htslib reads."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pysam
import pytest

from bams3_spark.bam.index import byte_range, parse_index
from bams3_spark.exceptions import InputFormatError
from bams3_spark.io.bgzf import EOF_BLOCK
from tests.support.bamgen import BIG


def _fetch_from_slice(bam: Path, index: Path, tid: int | None, beg: int, end: int) -> list[str]:
    """Records of a region read by htslib from a sparse copy holding only the header
    blocks, the planned byte range and an EOF marker."""
    data = bam.read_bytes()
    idx = parse_index(index.read_bytes(), str(index))
    first = idx.first_record_offset()
    header_end = (first >> 16) + 65536 if first else len(data)
    if tid is None:
        off = idx.unplaced_offset()
        rng = None if off is None else (off >> 16, len(data))
    else:
        rng = byte_range(idx.region_chunks(tid, beg, end), len(data))
    stub_dir = bam.parent / "stub"
    shutil.rmtree(stub_dir, ignore_errors=True)
    stub_dir.mkdir()
    stub = stub_dir / "s.bam"
    with open(stub, "wb") as fh:
        fh.write(data[:header_end])
        if rng:
            fh.seek(rng[0])
            fh.write(data[rng[0]:rng[1]])
        fh.seek(max(header_end, rng[1] if rng else 0))
        fh.write(EOF_BLOCK)
    shutil.copy(index, str(stub) + index.suffix)
    with pysam.AlignmentFile(str(stub)) as f:
        it = f.fetch("*") if tid is None else f.fetch(f.get_reference_name(tid), beg, end)
        return [r.to_string() for r in it]


@pytest.mark.parametrize("kind", ["bai", "csi"])
def test_planned_byte_ranges_hold_everything_htslib_reads(bin_bam: Path, tmp_path: Path, kind: str) -> None:
    bam = tmp_path / "b.bam"
    shutil.copy(bin_bam, bam)
    if kind == "csi":
        pysam.index("-c", str(bam))
    else:
        shutil.copy(str(bin_bam) + ".bai", str(bam) + ".bai")
    index = Path(f"{bam}.{kind}")
    rng = random.Random(5)
    sizes = [1, 5_000, 262_144, 1 << 20, 9 << 20]
    regions = [(0, s, s + rng.choice(sizes)) for s in (rng.randrange(0, BIG) for _ in range(60))]
    regions += [(0, (1 << 20) - 5, (1 << 20) + 5), (0, 0, BIG), (1, 0, 50_000), (1, 49_990, 50_000)]
    with pysam.AlignmentFile(str(bam)) as f:
        for tid, beg, end in regions:
            expected = [r.to_string() for r in f.fetch(f.get_reference_name(tid), beg, end)]
            assert _fetch_from_slice(bam, index, tid, beg, end) == expected, (tid, beg, end)
        unplaced = [r.to_string() for r in f.fetch("*")]
    assert len(unplaced) == 50
    assert _fetch_from_slice(bam, index, None, 0, 0) == unplaced
    # A 1 Mbp window needs a small part of the 20 Mbp contig's bytes.
    idx = parse_index(index.read_bytes(), str(index))
    lo, hi = byte_range(idx.region_chunks(0, 12 << 20, 13 << 20), bam.stat().st_size) or (0, 0)
    assert 0 < hi - lo < bam.stat().st_size // 3


def test_index_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="x.bai: not a valid BAI/CSI index"):
        parse_index(b"BAI\x01\x05\x00\x00\x00", "x.bai")
    with pytest.raises(InputFormatError, match="y.csi"):
        parse_index(b"nonsense", "y.csi")


