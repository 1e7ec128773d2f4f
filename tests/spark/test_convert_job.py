"""Distributed conversion (``jobs/convert.py``) on local[2]: identical to ``bams3 convert``
for local and S3 input and output, slices planned like htslib, failures that leave no
dataset behind, and cohorts where one broken BAM spares the others."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pysam
import pytest

from bams3_spark import open_dataset
from bams3_spark.convert import convert
from bams3_spark.exceptions import (
    IncompleteDatasetError,
    InvalidArgumentError,
    NotADatasetError,
)
from bams3_spark.query.output import write_sam
from bams3_spark.spark import convert_job
from bams3_spark.spark.convert_job import Sample, convert_samples, parse_sample_sheet, report_lines
from tests.support.oracles import ROOT, samtools

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


def failing_task(run_task: Callable[[Any], Any], number: int) -> Callable[[Any], Any]:
    """``run_task`` (the job's unit of work), except that task ``number`` raises after writing its chunks.

    A closure, so Spark pickles it by value into the Python workers.
    """

    def run_or_fail(task: Any) -> Any:
        result = run_task(task)
        if task.number == number:
            raise RuntimeError(f"injected failure in task {number}")
        return result

    return run_or_fail


def assert_no_dataset(url: str, **opts: Any) -> None:
    with pytest.raises((NotADatasetError, IncompleteDatasetError)):
        open_dataset(url, **opts)


# ----------------------------------------------------------------------------- slices


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
    assert (sample.fetched_bytes, sample.requests) == (0, 0)  # read in place
    assert sample.tasks > 2
    assert dataset_files(out) == reference
    # And therefore lossless: the records are exactly what samtools prints.
    ds = open_dataset(str(out))
    assert ds.validate() == []
    buf = io.StringIO()
    write_sam(buf, ds.iter_tables(), ds.header)
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
    # Each task makes at least one ranged GET; the summary line gives them and their cost.
    assert sample.requests >= sample.tasks
    summary = report_lines(result)[0][-1]
    assert f"{sample.requests:,} GET request(s), {sample.fetched_bytes / 1e6:,.1f} MB fetched" in summary
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
    monkeypatch.setattr(convert_job, "run_slice_task", failing_task(convert_job.run_slice_task, 3))
    failed = run(spark, [(src, out)], storage_options=opts)
    (sample,) = failed.samples
    assert not sample.ok
    assert "injected failure in task 3" in (sample.error or "")
    assert_no_dataset(out, **opts)
    fs, path = fsspec.core.url_to_fs(out, **opts)
    assert not fs.exists(path) or not fs.find(path), "a failed job left objects behind"

    monkeypatch.undo()
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
