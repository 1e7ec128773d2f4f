"""`bams3 convert`: lossless round trips against samtools, parallel and S3
equivalence, bad input, and crash safety."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pysam
import pytest

from bams3_spark import open_dataset
from bams3_spark.cli import main
from bams3_spark.convert import convert
from bams3_spark.exceptions import (
    DatasetExistsError,
    IncompleteDatasetError,
    InputFormatError,
    InvalidArgumentError,
    NotADatasetError,
    UnsortedInputError,
)
from bams3_spark.query.output import write_sam
from tests.support.bamgen import empty_bam, unsorted_bam
from tests.support.cli import run_bams3
from tests.support.oracles import conformance_files, sam_to_bam, samtools

pytestmark = pytest.mark.skipif(shutil.which("samtools") is None, reason="samtools (oracle) missing")


def export_sam(url: str, **opts: object) -> str:
    """Header plus every record of a dataset, as SAM text."""
    ds = open_dataset(url, **opts)
    buf = io.StringIO()
    write_sam(buf, ds.iter_tables(), ds.header)
    return buf.getvalue()


def oracle(bam: Path) -> str:
    return samtools("view", "--no-PG", "-h", str(bam))


def chunk_digests(url: str, **opts: object) -> dict[str, tuple[str, int]]:
    """Every chunk path of a dataset with its checksum and record count."""
    ds = open_dataset(url, **opts)
    return {c.info.path: (c.info.sha256, c.info.records) for c in ds.chunks()}


@pytest.mark.parametrize("sam", conformance_files(), ids=lambda p: p.name)
def test_conformance_round_trip(sam: Path, tmp_path: Path) -> None:
    bam = sam_to_bam(sam, tmp_path)
    out = tmp_path / "ds.bams3"
    convert(str(bam), str(out), allow_empty=True)
    assert export_sam(str(out)) == oracle(bam)
    assert open_dataset(str(out)).validate() == []


def test_generated_bam_round_trip_workers_and_split_windows(multi_bam: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "w1", tmp_path / "w2"
    convert(str(multi_bam), str(one), chunk_size="256K", workers=1, max_chunk_records=300)
    convert(str(multi_bam), str(two), chunk_size="256K", workers=2, max_chunk_records=300)
    assert export_sam(str(one)) == oracle(multi_bam)
    digests = chunk_digests(str(one))
    assert digests == chunk_digests(str(two))
    ds = open_dataset(str(one))
    # The pile-up window was split into parts; unplaced reads have their own chunks.
    assert any(path.endswith(".0001.chunk") for path in digests)
    assert [c.info.records for c in ds.chunks("*")] == [25]
    # Index bounds hold for every chunk: reads start inside their window.
    for c in ds.chunks():
        t = c.read(["pos", "end"])
        if c.rname != "*":
            assert c.info.window_start < min(t.column("pos").to_pylist()) <= c.info.window_end
            assert c.info.max_end == max(t.column("end").to_pylist())
    # Per-reference counts equal samtools idxstats (mapped + placed unmapped).
    stats = {
        line.split("\t")[0]: int(line.split("\t")[2]) + int(line.split("\t")[3])
        for line in samtools("idxstats", str(multi_bam)).splitlines()
    }
    for entry in ds.manifest.references:
        if entry.name != "*":
            assert entry.records == stats[entry.name], entry.name
    assert ds.sample == "sampleA"


def test_unindexed_sorted_input_streams_to_identical_chunks(multi_bam: Path, tmp_path: Path) -> None:
    plain = tmp_path / "noindex.bam"
    shutil.copy(multi_bam, plain)
    indexed, streamed = tmp_path / "a", tmp_path / "b"
    convert(str(multi_bam), str(indexed), chunk_size="256K", max_chunk_records=300)
    convert(str(plain), str(streamed), chunk_size="256K", workers=2, max_chunk_records=300)
    assert chunk_digests(str(indexed)) == chunk_digests(str(streamed))


@pytest.mark.s3
def test_s3_output_and_input_identical_to_local(
    multi_bam: Path, tmp_path: Path, s3_bucket: str, s3_opts: dict
) -> None:
    import boto3

    local = tmp_path / "local"
    convert(str(multi_bam), str(local), chunk_size="256K", workers=1)
    client = boto3.client("s3", endpoint_url=s3_opts["endpoint_url"], region_name="us-east-1")
    client.upload_file(str(multi_bam), s3_bucket, "in/multi.bam")
    client.upload_file(str(multi_bam) + ".bai", s3_bucket, "in/multi.bam.bai")
    for workers, src in ((1, str(multi_bam)), (2, f"s3://{s3_bucket}/in/multi.bam")):
        url = f"s3://{s3_bucket}/out{workers}.bams3"
        convert(src, url, chunk_size="256K", workers=workers, storage_options=s3_opts)
        assert chunk_digests(url, **s3_opts) == chunk_digests(str(local))
        assert export_sam(url, **s3_opts) == oracle(multi_bam)


@pytest.mark.s3
def test_s3_endpoint_from_environment(
    multi_bam: Path, s3_bucket: str, s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    rc = main(["convert", "--quiet", "--chunk-size", "512K", str(multi_bam), f"s3://{s3_bucket}/env.bams3"])
    assert rc == 0
    assert open_dataset(f"s3://{s3_bucket}/env.bams3").manifest.records == int(
        samtools("view", "-c", str(multi_bam))
    )


def test_existing_output_needs_overwrite(multi_bam: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    convert(str(multi_bam), str(out), chunk_size="256K")
    before = chunk_digests(str(out))
    with pytest.raises(DatasetExistsError, match="--overwrite"):
        convert(str(multi_bam), str(out), chunk_size="512K")
    assert chunk_digests(str(out)) == before  # untouched
    convert(str(multi_bam), str(out), chunk_size="512K", overwrite=True)
    ds = open_dataset(str(out))
    assert ds.manifest.chunk_size == 512 * 1024
    assert all(c.info.window_start % (512 * 1024) == 0 for c in ds.chunks())
    # No object of the old dataset survives beside the new one.
    on_disk = {str(p.relative_to(out)) for p in (out / "data").rglob("*.chunk")}
    assert on_disk == {c.info.path for c in ds.chunks()}
    assert ds.validate() == []


def test_foreign_files_are_not_clobbered(multi_bam: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetExistsError, match="other files"):
        convert(str(multi_bam), str(out))
    assert (out / "notes.txt").read_text() == "keep me"


def test_bad_inputs_raise_package_errors(multi_bam: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.bam"):
        convert(str(tmp_path / "missing.bam"), str(tmp_path / "o1"))
    notbam = tmp_path / "not.bam"
    notbam.write_text("hello, I am not a BAM\n")
    with pytest.raises(InputFormatError, match="not.bam"):
        convert(str(notbam), str(tmp_path / "o2"))
    with pytest.raises(UnsortedInputError, match="samtools sort"):
        convert(str(unsorted_bam(tmp_path)), str(tmp_path / "o3"))
    with pytest.raises(InputFormatError, match="no records"):
        convert(str(empty_bam(tmp_path)), str(tmp_path / "o4"))
    with pytest.raises(InvalidArgumentError, match="256K and 4M"):
        convert(str(multi_bam), str(tmp_path / "o5"), chunk_size="8M")
    with pytest.raises(InvalidArgumentError, match="not a size"):
        convert(str(multi_bam), str(tmp_path / "o6"), chunk_size="big")
    for name in ("o1", "o2", "o3", "o4", "o5", "o6"):
        with pytest.raises((NotADatasetError, IncompleteDatasetError)):
            open_dataset(str(tmp_path / name))


def test_truncated_bam_fails_and_leaves_no_dataset(multi_bam: Path, tmp_path: Path) -> None:
    data = multi_bam.read_bytes()
    trunc = tmp_path / "trunc.bam"
    trunc.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "o"
    with pytest.raises(InputFormatError, match="trunc.bam"):
        convert(str(trunc), str(out), chunk_size="256K")
    with pytest.raises((NotADatasetError, IncompleteDatasetError)):
        open_dataset(str(out))


def _big_bam(tmp_path: Path, reads: int = 150_000) -> Path:
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "c1", "LN": 4_000_000}]}
    bam = tmp_path / "big.bam"
    with pysam.AlignmentFile(str(bam), "wb", header=header) as fh:
        seq, qual = "ACGT" * 25, pysam.qualitystring_to_array("I" * 100)
        for i in range(reads):
            a = pysam.AlignedSegment(fh.header)
            a.query_name, a.flag, a.reference_id = f"q{i}", 0, 0
            a.reference_start, a.mapping_quality, a.cigarstring = i * 26, 60, "100M"
            a.query_sequence, a.query_qualities = seq, qual
            fh.write(a)
    pysam.index(str(bam))
    return bam


def test_killed_conversion_is_incomplete_and_rerun_succeeds(tmp_path: Path) -> None:
    bam = _big_bam(tmp_path)
    out = tmp_path / "killed.bams3"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bams3_spark",
            "convert",
            "--quiet",
            "--workers",
            "1",
            "--chunk-size",
            "256K",
            str(bam),
            str(out),
        ],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not list((out / "data").rglob("*.chunk")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "conversion finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with pytest.raises(IncompleteDatasetError, match="incomplete"):
        open_dataset(str(out))
    info = run_bams3(["info", str(out)])
    assert info.returncode == 1 and "incomplete" in info.stderr
    rerun = run_bams3(["convert", "--quiet", "--chunk-size", "256K", str(bam), str(out)])
    assert rerun.returncode == 0, rerun.stderr
    assert open_dataset(str(out)).manifest.records == 150_000
    assert open_dataset(str(out)).validate() == []
