"""BGZF output: files htslib and gzip read back, and parts that join into one file."""

from __future__ import annotations

import gzip
from pathlib import Path

import pysam

from bams3_spark.io.bgzf import EOF_BLOCK, BgzfConcatenator, BgzfWriter


def _bgzf_text(path: Path) -> str:
    with pysam.libcbgzf.BGZFile(str(path), "rb", None) as fh:  # type: ignore[arg-type]
        return fh.read().decode()


def test_writer_levels_and_parts_join(tmp_path: Path) -> None:
    lines = [f"chr1\t{i}\t{i + 7}\t{i % 13}\n" for i in range(40_000)]  # several 64 KiB blocks
    parts = []
    for n, level in enumerate((1, 6, None)):
        part = tmp_path / f"p{n}.gz"
        with BgzfWriter(part, level=level) as w:
            w.write("".join(lines[n::3]))
            w.write(b"")
        assert part.read_bytes().endswith(EOF_BLOCK)
        assert gzip.decompress(part.read_bytes()).decode() == "".join(lines[n::3])
        parts.append(part)
    whole = BgzfConcatenator(tmp_path / "whole.bed.gz")
    for part in parts:
        whole.append_part(part)
    whole.close()
    expected = "".join("".join(lines[n::3]) for n in range(3))
    data = (tmp_path / "whole.bed.gz").read_bytes()
    assert data.count(EOF_BLOCK) == 1 and data.endswith(EOF_BLOCK)
    assert _bgzf_text(tmp_path / "whole.bed.gz") == expected
    assert not any(p.exists() for p in parts)
