"""Whole references in bounded memory (bams3_spark.coverage.streaming): the bucket-by-bucket summary
equals the whole-array one, and data that changes depth behind a drained bucket falls back to it
(files still identical to mosdepth's)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pysam
import pytest

from bams3_spark import open_dataset
from bams3_spark.convert import convert
from bams3_spark.coverage.depth import DepthAccumulator, DrainedTooEarly
from bams3_spark.coverage.engine import write_coverage
from bams3_spark.coverage.mosdepth import MosdepthWriter
from bams3_spark.coverage.options import CoverageOptions
from bams3_spark.coverage.slices import compute_slice
from bams3_spark.coverage.stats import per_base_text
from bams3_spark.coverage.streaming import stream_summary
from bams3_spark.dataset.reader import DatasetReader
from bams3_spark.io.bgzf import BgzfReader
from tests.coverage.test_engine import output_files
from tests.coverage.test_mosdepth import build_bam


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory, multi_bam: Path) -> list[str]:
    work = tmp_path_factory.mktemp("stream")
    mates = str(work / "mates.bams3")
    convert(str(build_bam(work / "mates.bam")), mates, chunk_size="256K", max_chunk_records=500)
    multi = str(work / "multi.bams3")
    convert(str(multi_bam), multi, chunk_size="256K", max_chunk_records=200)
    return [mates, multi]


def _part_text(path: Path) -> bytes:
    with BgzfReader(path) as reader:
        return b"".join(reader.pieces(0))


@pytest.mark.parametrize("window", [1000, 500, 7, 0])
@pytest.mark.parametrize("mode", ["mosdepth", "fast"])
def test_bucket_summaries_equal_the_whole_reference_summary(
    datasets: list[str], tmp_path: Path, window: int, mode: str
) -> None:
    options = CoverageOptions(mode=mode)
    for url in datasets:
        ds = DatasetReader.open(url)
        writer = MosdepthWriter(tmp_path / "w", by=window or None, thresholds=[1, 3] if window else None,
                                per_base=False)
        plan = writer.plan()
        writer.close()
        streamed = 0
        for rname, _ in ds.references:
            part = tmp_path / f"{rname.replace('*', '_')}.part"
            got = stream_summary(ds, rname, options, plan, str(part))
            whole = compute_slice(ds, rname, options)
            if got is None:
                assert not ds.index(rname).chunks  # only references without reads use the whole array
                continue
            streamed += 1
            want = plan.summarize(whole.depth)
            assert got.region_text == want.region_text
            assert got.threshold_text == want.threshold_text
            assert got.region_stat == want.region_stat
            assert np.array_equal(got.region_counts, want.region_counts)
            assert np.array_equal(got.chrom_counts, want.chrom_counts)
            assert got.chrom_stat == want.chrom_stat and got.found == want.found
            assert _part_text(part) == per_base_text(whole.depth)
        assert streamed >= 2


def _inconsistent_bam(path: Path) -> Path:
    """A stored mate whose later mate starts in another chunk after it ended (mate data that
    does not match the reads): mosdepth's single-op correction then adds depth behind the
    drained position."""
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 600_000}]}
    with pysam.AlignmentFile(str(path), "wb", header=header) as fh:
        def read(name: str, flag: int, pos: int, pnext: int) -> None:
            a = pysam.AlignedSegment(fh.header)
            a.query_name, a.flag, a.reference_id, a.reference_start = name, flag, 0, pos
            a.mapping_quality, a.cigarstring = 60, "50M"
            a.next_reference_id, a.next_reference_start = 0, pnext
            a.query_sequence, a.query_qualities = "A" * 50, pysam.qualitystring_to_array("I" * 50)
            fh.write(a)

        read("odd", 99, 100, 120)  # stored: its mate "starts" inside it ...
        read("ok", 99, 1_000, 1_020)
        read("ok", 147, 1_020, 1_000)
        read("odd", 147, 300_000, 100)  # ... but the mate is 300 kbp away, in the next chunk
        read("late", 0, 300_500, 0)
    pysam.index(str(path))
    return path


def test_a_change_behind_the_drained_position_falls_back_to_the_whole_array(tmp_path: Path) -> None:
    bam = _inconsistent_bam(tmp_path / "odd.bam")
    url = str(tmp_path / "odd.bams3")
    convert(str(bam), url, chunk_size="256K")
    ds = open_dataset(url)
    assert len(ds.chunks()) == 2
    acc = DepthAccumulator(600_000, CoverageOptions(), name="chr1", stream=True)
    columns = ["qname", "flag", "pos", "end", "mapq", "cigar", "rnext", "pnext"]
    first, second = (c.read(columns) for c in ds.chunks())
    acc.add(first)
    acc.drain(299_000)
    with pytest.raises(DrainedTooEarly):
        acc.add(second)
    if shutil.which("mosdepth") is None:
        pytest.skip("mosdepth (oracle) missing")
    for args, by in (([], None), (["-n", "--by", "1000"], 1000)):
        md, b3 = tmp_path / f"md{len(args)}", tmp_path / f"b3{len(args)}"
        subprocess.run(["mosdepth", *args, str(md), str(bam)], check=True, capture_output=True)
        write_coverage(url, str(b3), by=by, per_base=by is None, workers=2)
        want = output_files(md)
        assert want and output_files(b3) == want


def test_streaming_accumulator_refuses_misuse() -> None:
    with pytest.raises(ValueError, match="mosdepth modes"):
        DepthAccumulator(10, CoverageOptions(mode="samtools"), stream=True)
    acc = DepthAccumulator(10, CoverageOptions(), stream=True)
    with pytest.raises(ValueError, match="drain_rest"):
        acc.finish()
    assert acc.drain_rest().tolist() == [0] * 10
    with pytest.raises(ValueError, match="streaming, unfinished"):
        acc.drain(5)
