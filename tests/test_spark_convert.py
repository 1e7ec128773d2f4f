"""Distributed conversion (``jobs/convert.py``) on local[2]: identical to ``bams3 convert``
for local and S3 input and output, slices planned like htslib, failures that leave no
dataset behind, and cohorts where one broken BAM spares the others."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import fsspec
import pysam
import pytest
from conftest import ROOT, samtools

from bams3_spark.bam import write_sam
from bams3_spark.convert import convert
from bams3_spark.dataset import open_dataset
from bams3_spark.exceptions import (
    IncompleteDatasetError,
    InputFormatError,
    InvalidArgumentError,
    NotADatasetError,
)
from bams3_spark.spark.convert_job import (
    BGZF_EOF,
    FAIL_TASK_ENV,
    Sample,
    byte_range,
    convert_samples,
    parse_index,
    parse_sample_sheet,
)

# jobs/convert.py, loaded under its own name (jobs/ is not a package).
_spec = importlib.util.spec_from_file_location("bams3_jobs_convert", ROOT / "jobs" / "convert.py")
assert _spec is not None and _spec.loader is not None
convert_entry = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert_entry)

pytestmark = [pytest.mark.spark, pytest.mark.skipif(shutil.which("samtools") is None, reason="no samtools")]

CHUNK = "256K"
MAX_RECORDS = 300  # splits the pile-up window of the generated BAM into parts


# ----------------------------------------------------------------------------- helpers


def dataset_files(root: Path) -> dict[str, Any]:
    """Every object of a local dataset: JSON documents parsed (manifest without its
    timestamp), everything else as bytes."""
    files: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(root).as_posix()
        if rel.endswith(".json"):
            doc = json.loads(path.read_bytes())
            if rel == "bams3.json":
                doc.pop("created")
            files[rel] = doc
        else:
            files[rel] = path.read_bytes()
    return files


def download(url: str, dest: Path, opts: dict[str, str]) -> Path:
    fs = fsspec.filesystem("s3", **opts)
    fs.get(url.removeprefix("s3://"), str(dest), recursive=True)
    return dest


def upload(bam: Path, prefix: str, opts: dict[str, str], index_suffix: str = ".bai") -> str:
    fs = fsspec.filesystem("s3", **opts)
    url = f"{prefix}/{bam.name}"
    fs.put_file(str(bam), url.removeprefix("s3://"))
    fs.put_file(str(bam) + index_suffix, (url + index_suffix).removeprefix("s3://"))
    return url


@pytest.fixture(scope="module")
def reference(multi_bam: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What ``bams3 convert`` writes for the generated BAM (the expected output)."""
    out = tmp_path_factory.mktemp("ref") / "ref.bams3"
    convert(str(multi_bam), str(out), chunk_size=CHUNK, max_chunk_records=MAX_RECORDS)
    return dataset_files(out)


def run(spark: Any, pairs: list[tuple[str, str]], **kw: Any) -> Any:
    kw.setdefault("chunk_size", CHUNK)
    kw.setdefault("max_chunk_records", MAX_RECORDS)
    return convert_samples(spark, [Sample(i, o) for i, o in pairs], **kw)


def assert_no_dataset(url: str, **opts: Any) -> None:
    with pytest.raises((NotADatasetError, IncompleteDatasetError)):
        open_dataset(url, **opts)


# ----------------------------------------------------------------------------- slices


BIG = 20_000_000


def _bin_test_bam(path: Path) -> Path:
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


@pytest.fixture(scope="module")
def bin_bam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bin_test_bam(tmp_path_factory.mktemp("bins") / "bins.bam")


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
        fh.write(BGZF_EOF)
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


# ----------------------------------------------------------------------------- sample sheets


def test_sample_sheet_parsing() -> None:
    text = "input\toutput\n# comment\n\na.bam\tout/a.bams3\ns3://b/c d.bam\ts3://b/c.bams3\n"
    assert parse_sample_sheet(text) == [Sample("a.bam", "out/a.bams3"), Sample("s3://b/c d.bam", "s3://b/c.bams3")]
    assert parse_sample_sheet("a.bam  out/a\n") == [Sample("a.bam", "out/a")]
    with pytest.raises(InvalidArgumentError, match="sheet.tsv line 2: expected 2 columns"):
        parse_sample_sheet("a.bam\tx\nb.bam\n", "sheet.tsv")
    with pytest.raises(InvalidArgumentError, match="no samples"):
        parse_sample_sheet("# nothing\n")


# ----------------------------------------------------------------------------- conversions


def test_local_job_is_identical_to_bams3_convert(spark: Any, multi_bam: Path, reference: dict[str, Any],
                                                  tmp_path: Path) -> None:
    out = tmp_path / "job.bams3"
    result = run(spark, [(str(multi_bam), str(out))])
    (sample,) = result.samples
    assert sample.ok, sample.error
    assert sample.fetched_bytes == 0  # read in place
    assert sample.tasks > 2
    assert dataset_files(out) == reference
    # And therefore lossless: the records are exactly what samtools prints.
    ds = open_dataset(str(out))
    assert ds.validate() == []
    buf = io.StringIO()
    write_sam(buf, ds.header, ds.iter_tables())
    assert buf.getvalue() == samtools("view", "--no-PG", "-h", str(multi_bam))


@pytest.mark.s3
@pytest.mark.parametrize("kind", ["bai", "csi"])
def test_s3_input_and_output_identical_with_ranged_reads(
    spark: Any, multi_bam: Path, reference: dict[str, Any], tmp_path: Path, s3_bucket: str,
    s3_opts: dict[str, str], kind: str,
) -> None:
    bam = tmp_path / "multi.bam"
    shutil.copy(multi_bam, bam)
    if kind == "csi":
        pysam.index("-c", str(bam))
    else:
        shutil.copy(str(multi_bam) + ".bai", str(bam) + ".bai")
    src = upload(bam, f"s3://{s3_bucket}/in", s3_opts, "." + kind)
    out = f"s3://{s3_bucket}/out/multi.bams3"
    result = run(spark, [(src, out)], storage_options=s3_opts)
    (sample,) = result.samples
    assert sample.ok, sample.error
    # Every task fetched only a slice (its windows' blocks plus the header), never the BAM.
    assert 0 < sample.largest_fetch < bam.stat().st_size * 3 // 4
    assert dataset_files(download(out, tmp_path / "got", s3_opts)) == reference
    assert open_dataset(out, **s3_opts).validate() == []


@pytest.mark.s3
def test_local_input_to_s3_output(spark: Any, multi_bam: Path, reference: dict[str, Any], tmp_path: Path,
                                  s3_bucket: str, s3_opts: dict[str, str]) -> None:
    out = f"s3://{s3_bucket}/from-local.bams3"
    result = run(spark, [(str(multi_bam), out)], storage_options=s3_opts)
    assert result.samples[0].ok, result.samples[0].error
    assert dataset_files(download(out, tmp_path / "got", s3_opts)) == reference


@pytest.mark.s3
@pytest.mark.parametrize("where", ["local", "s3"])
def test_injected_task_failure_leaves_no_dataset_and_rerun_succeeds(
    spark: Any, multi_bam: Path, reference: dict[str, Any], tmp_path: Path, s3_bucket: str,
    s3_opts: dict[str, str], where: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    if where == "s3":
        src, out, opts = upload(multi_bam, f"s3://{s3_bucket}/in", s3_opts), f"s3://{s3_bucket}/o", s3_opts
    else:
        src, out, opts = str(multi_bam), str(tmp_path / "o.bams3"), {}
    monkeypatch.setenv(FAIL_TASK_ENV, "3")
    failed = run(spark, [(src, out)], storage_options=opts)
    (sample,) = failed.samples
    assert not sample.ok
    assert "injected failure in task 3" in (sample.error or "")
    assert_no_dataset(out, **opts)
    fs, path = fsspec.core.url_to_fs(out, **opts)
    assert not fs.exists(path) or not fs.find(path), "a failed job left objects behind"

    monkeypatch.delenv(FAIL_TASK_ENV)
    again = run(spark, [(src, out)], storage_options=opts)  # no --overwrite needed
    assert again.samples[0].ok, again.samples[0].error
    got = Path(out) if where == "local" else download(out, tmp_path / "got", opts)
    assert dataset_files(got) == reference


def test_cohort_with_broken_bams_converts_the_others(
    spark: Any, multi_bam: Path, bin_bam: Path, reference: dict[str, Any], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Damaged in the middle, index intact: planning succeeds, some tasks fail.
    data = bytearray(multi_bam.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4000] = bytes(4000)
    corrupt = tmp_path / "corrupt.bam"
    corrupt.write_bytes(bytes(data))
    shutil.copy(str(multi_bam) + ".bai", str(corrupt) + ".bai")
    unindexed = tmp_path / "unindexed.bam"
    shutil.copy(multi_bam, unindexed)
    good2 = tmp_path / "good2.bam"
    shutil.copy(multi_bam, good2)
    shutil.copy(str(multi_bam) + ".bai", str(good2) + ".bai")
    out = tmp_path / "out"
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(
        "input\toutput\n"
        f"{multi_bam}\t{out / 'good1'}\n"
        f"{corrupt}\t{out / 'corrupt'}\n"
        f"{unindexed}\t{out / 'unindexed'}\n"
        f"{tmp_path / 'missing.bam'}\t{out / 'missing'}\n"
        f"{good2}\t{out / 'good2'}\n"
        f"{bin_bam}\t{out / 'bins'}\n"
    )
    status = convert_entry.main(["--manifest", str(sheet), "--chunk-size", CHUNK,
                                 "--max-chunk-records", str(MAX_RECORDS)])
    cap = capsys.readouterr()
    assert status == 1
    assert dataset_files(out / "good1") == reference
    good2_files = dataset_files(out / "good2")
    good2_files["bams3.json"]["source"] = reference["bams3.json"]["source"]
    assert good2_files == reference
    errors = {line.split(" -> ")[0].split()[-1]: line for line in cap.err.splitlines() if "FAILED" in line}
    assert set(errors) == {str(corrupt), str(unindexed), str(tmp_path / "missing.bam")}
    assert "samtools index" in errors[str(unindexed)]
    assert "no such file" in errors[str(tmp_path / "missing.bam")]
    assert str(corrupt) in errors[str(corrupt)].split(": ", 1)[1]
    assert "failed: corrupt.bam, unindexed.bam, missing.bam" in cap.err
    assert cap.out.count("OK ") == 3
    # Samples planned concurrently each keep their own header.
    bins = open_dataset(str(out / "bins"))
    assert bins.header == samtools("view", "-H", "--no-PG", str(bin_bam))
    assert bins.manifest.records == int(samtools("view", "-c", str(bin_bam)))
    for name in ("corrupt", "unindexed", "missing"):
        assert not (out / name).exists(), f"{name}: a failed sample left objects behind"


def test_existing_output_needs_overwrite(spark: Any, multi_bam: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.bams3"
    args = [str(multi_bam), str(out), "--chunk-size", "4M"]
    assert convert_entry.main(args) == 0
    before = dataset_files(out)
    assert convert_entry.main(args) == 1
    assert "already holds a dataset; use --overwrite" in capsys.readouterr().err
    assert dataset_files(out) == before  # refused, untouched
    assert convert_entry.main([*args, "--overwrite"]) == 0
    assert open_dataset(str(out)).manifest.chunk_size == 4 << 20


def test_job_usage_errors(tmp_path: Path, multi_bam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        convert_entry.main([str(multi_bam)])
    assert exc.value.code == 2
    assert "pairs" in capsys.readouterr().err
    status = convert_entry.main([str(multi_bam), str(tmp_path / "a"), str(multi_bam), str(tmp_path / "a")])
    assert status == 1
    assert "output of both" in capsys.readouterr().err
    status = convert_entry.main([str(multi_bam), str(tmp_path / "b"), "--chunk-size", "1K"])
    assert status == 1
    assert "--chunk-size" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "b")
