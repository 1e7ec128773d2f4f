"""The column decoder of BAM records (bams3_spark.bam.records, .scan): every column exactly as
htslib's SAM text (through pysam), on every conformance file, the generated BAM and random floats;
the BGZF reader against htslib's; windows as ``fetch`` gives them."""

from __future__ import annotations

import array
import random
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pysam
import pytest

from bams3_spark.bam.reader import inspect_bam, record_text
from bams3_spark.bam.records import NotDecodable, decode_records, padded
from bams3_spark.bam.scan import BamScanner, RawRecords, decode_window, table_via_htslib
from bams3_spark.convert import plan_tasks
from bams3_spark.exceptions import InputFormatError, UnsortedInputError
from bams3_spark.format.sam import lines_to_table
from bams3_spark.io.bgzf import BgzfReader
from tests.support.bamgen import unsorted_bam
from tests.support.oracles import conformance_files, sam_to_bam


def _differences(got: pa.Table, want: pa.Table) -> list[str]:
    out = []
    for name in want.column_names:
        a, b = got.column(name).to_pylist(), want.column(name).to_pylist()
        bad = [i for i in range(len(b)) if a[i] != b[i]][:2]
        out += [f"{name}[{i}]: {a[i]!r:.80} != {b[i]!r:.80}" for i in bad]
    return out


def _decoded_batches(
    bam: Path, chunk_size: int = 1 << 20
) -> list[tuple[RawRecords, pa.Table | None, pa.Table]]:
    """(raw batch, column decoder's table or None if it declined, htslib's table) of a whole BAM."""
    out = []
    with BamScanner(str(bam)) as scan:
        for raw in scan.stream(chunk_size, 250_000):
            want = table_via_htslib(scan.header, raw.data)
            try:
                got = decode_records(padded(raw.data), raw.offsets, scan.names)
            except NotDecodable:
                got = None
            out.append((raw, got, want))
    return out


@pytest.mark.parametrize("sam", conformance_files(), ids=lambda p: p.name)
def test_conformance_file_decodes_like_htslib(sam: Path, tmp_path: Path) -> None:
    bam = sam_to_bam(sam, tmp_path)
    batches = _decoded_batches(bam)
    with pysam.AlignmentFile(str(bam), check_sq=False) as fh:
        assert sum(len(raw) for raw, _, _ in batches) == sum(1 for _ in fh.fetch(until_eof=True))
    for _, got, want in batches:
        # Every conformance record is within what the decoder renders itself.
        assert got is not None
        assert _differences(got, want) == []
        assert got.equals(want)


def test_generated_bam_decodes_like_htslib_and_declines_only_cg_cigars(multi_bam: Path) -> None:
    declined = []
    for _, got, want in _decoded_batches(multi_bam, 1 << 18):
        if got is None:
            declined.append(want)
            continue
        assert _differences(got, want) == []
    # The 70,000-operation CIGAR (kept by htslib in a CG tag) is left to htslib, alone.
    assert len(declined) == 1
    assert "bigcigar" in declined[0].column("qname").to_pylist()


def _float_bam(path: Path, values: list[float]) -> Path:
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "c1", "LN": 100_000}]}
    with pysam.AlignmentFile(str(path), "wb", header=header) as fh:
        for i, v in enumerate(values):
            a = pysam.AlignedSegment(fh.header)
            a.query_name, a.flag, a.reference_id, a.reference_start = f"f{i}", 0, 0, i
            a.mapping_quality, a.cigarstring = 60, "4M"
            a.query_sequence, a.query_qualities = "ACGT", pysam.qualitystring_to_array("IIII")
            a.set_tag("xf", v, "f")
            a.set_tag("xb", array.array("f", [v, -v, v / 3]))
            a.set_tag("xi", i * 977 - 40_000)
            a.set_tag("xz", "t" * (i % 13))
            fh.write(a)
    return path


def test_float_tags_keep_exact_text_like_the_htslib_path(tmp_path: Path) -> None:
    rng = random.Random(5)
    bits = [rng.getrandbits(32) for _ in range(3000)]
    values = [v for b in bits if (v := struct.unpack("<f", struct.pack("<I", b))[0]) == v]
    values += [0.0, -0.0, 1e-30, 3.14159274, 0.1, 1e10, 3.4028235e38, 1.4e-45, 0.0123, 999999.0, 1e-4,
               float("inf"), float("-inf"), float("nan")]
    bam = _float_bam(tmp_path / "floats.bam", values)
    batches = _decoded_batches(bam)
    assert batches and all(got is not None for _, got, _ in batches)
    for _, got, want in batches:
        assert _differences(got, want) == []


def test_bgzf_reader_matches_htslib_between_virtual_offsets(multi_bam: Path) -> None:
    with pysam.AlignmentFile(str(multi_bam)) as bam:
        first = bam.tell()
        records = list(bam.fetch(until_eof=True))
    with pysam.libcbgzf.BGZFile(str(multi_bam), "rb", None) as fh:  # type: ignore[arg-type]
        fh.seek(first)
        everything = fh.read(1 << 30)
    with BgzfReader(multi_bam) as reader:
        assert b"".join(reader.pieces(first, piece_bytes=1 << 16)) == everything
        with pysam.AlignmentFile(str(multi_bam)) as bam:
            it = bam.fetch(until_eof=True)
            for _ in range(len(records) // 2):
                next(it)
            middle = bam.tell()
        assert b"".join(reader.pieces(first, middle)) + b"".join(reader.pieces(middle)) == everything


def test_bgzf_reader_refuses_damaged_blocks(multi_bam: Path, tmp_path: Path) -> None:
    data = bytearray(multi_bam.read_bytes())
    data[200_000] ^= 0xFF
    bad = tmp_path / "bad.bam"
    bad.write_bytes(bytes(data))
    with BgzfReader(bad) as reader, pytest.raises(InputFormatError, match="bad.bam"):
        b"".join(reader.pieces(0))
    short = tmp_path / "short.bam"
    short.write_bytes(multi_bam.read_bytes()[:100_000])
    with BgzfReader(short) as reader, pytest.raises(InputFormatError, match="truncated"):
        b"".join(reader.pieces(0))


def test_indexed_windows_equal_fetch_with_a_start_filter(multi_bam: Path) -> None:
    """Windows read through the index hold what ``fetch`` gives, restricted to reads starting in them."""
    info = inspect_bam(str(multi_bam))
    size = 1 << 18
    seen = 0
    with BamScanner(str(multi_bam)) as scan, pysam.AlignmentFile(str(multi_bam)) as bam:
        for task in plan_tasks(info, size, 3):
            tid = task.tid if task.rname != "*" else -1
            for raw in scan.windows(tid, task.starts, size, task.length):
                got = decode_window(raw, scan.names, scan.header)
                if tid < 0:
                    reads = list(bam.fetch("*"))
                else:
                    lo = raw.window_start
                    reads = [r for r in bam.fetch(task.rname, lo, min(lo + size, task.length))
                             if r.reference_start >= lo]
                assert got.equals(lines_to_table([record_text(r) for r in reads]))
                seen += got.num_rows
    with pysam.AlignmentFile(str(multi_bam)) as bam:
        assert seen == sum(1 for _ in bam.fetch(until_eof=True))


def test_stream_refuses_unsorted_input(tmp_path: Path) -> None:
    with BamScanner(str(unsorted_bam(tmp_path))) as scan:
        with pytest.raises(UnsortedInputError, match="samtools sort"):
            list(scan.stream(1 << 20, 250_000))


def test_raw_records_split_at_max_records(multi_bam: Path) -> None:
    with BamScanner(str(multi_bam)) as scan:
        parts = list(scan.stream(1 << 18, 300))
    assert max(len(p) for p in parts) == 300
    # The pile-up window comes in several parts of one window.
    keys = [(p.tid, p.window_start) for p in parts]
    assert len(keys) > len(set(keys))
    assert all(np.all(np.diff(p.offsets) > 0) for p in parts)
