"""``spark-submit jobs/convert.py`` on a real standalone cluster (master + 2 workers on
loopback): identical to ``bams3 convert`` for local files and for S3 (moto) input and
output, an injected task failure leaves no dataset and a rerun succeeds, and a cohort
with a broken BAM converts the others and names the broken one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from bams3_spark import open_dataset
from bams3_spark.exceptions import IncompleteDatasetError, NotADatasetError
from tests.spark.test_convert_job import CHUNK, MAX_RECORDS, dataset_files, download, reference, upload
from tests.support.oracles import ROOT
from tests.support.spark_cluster import spark_submit

pytestmark = [pytest.mark.cluster, pytest.mark.spark,
              pytest.mark.skipif(shutil.which("samtools") is None, reason="no samtools")]

JOB = ROOT / "jobs" / "convert.py"
FAILING_JOB = ROOT / "tests" / "support" / "failing_convert.py"
SIZES = ["--chunk-size", CHUNK, "--max-chunk-records", str(MAX_RECORDS)]

__all__ = ["reference"]  # the shared expected-output fixture


@pytest.fixture(scope="module")
def cluster(standalone: tuple[str, Path]) -> str:
    """The session's standalone cluster (conftest.py): its master URL."""
    return standalone[0]


def submit(master: str, args: list[str], workdir: Path, fail_task: int | None = None) -> tuple[int, str]:
    """Run the job (with task ``fail_task`` failing, see tests/support/failing_convert.py); return its
    exit status and its output (spark-submit merges the Python driver's stderr into its stdout, so
    both are searched)."""
    if fail_task is None:
        proc = spark_submit(master, JOB, [*args, *SIZES], workdir)
    else:
        # A failing task fails for good: no retries to wait for.
        proc = spark_submit(master, FAILING_JOB, [str(fail_task), *args, *SIZES], workdir,
                            conf={"spark.task.maxFailures": "1"})
    return proc.returncode, proc.stdout + proc.stderr


def tail(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if " INFO " not in line)[-4000:]


@pytest.mark.s3
def test_cluster_local_and_s3_samples_identical_to_bams3_convert(
    cluster: str, multi_bam: Path, reference: dict[str, Any], tmp_path: Path, s3_bucket: str,
    s3_opts: dict[str, str],
) -> None:
    # One application, two samples: local files in and out, and S3 in and out.
    src = upload(multi_bam, f"s3://{s3_bucket}/in", s3_opts)
    local_out = tmp_path / "o.bams3"
    s3_out = f"s3://{s3_bucket}/out/multi.bams3"
    pairs = [str(multi_bam), str(local_out), src, s3_out]
    status, text = submit(cluster, [*pairs, "--s3-endpoint", s3_opts["endpoint_url"]], tmp_path)
    assert status == 0, tail(text)
    assert "converted 2 of 2" in text
    assert "fetched" in text  # the S3 sample: ranged reads, not a local path
    assert dataset_files(local_out) == reference
    assert dataset_files(download(s3_out, tmp_path / "got", s3_opts)) == reference


@pytest.mark.s3
def test_cluster_injected_failure_leaves_no_dataset_and_rerun_succeeds(
    cluster: str, multi_bam: Path, reference: dict[str, Any], tmp_path: Path, s3_bucket: str,
    s3_opts: dict[str, str],
) -> None:
    src = upload(multi_bam, f"s3://{s3_bucket}/in", s3_opts)
    out = f"s3://{s3_bucket}/failing.bams3"
    args = [src, out, "--s3-endpoint", s3_opts["endpoint_url"]]
    status, text = submit(cluster, args, tmp_path, fail_task=2)
    assert status == 1
    assert "FAILED" in text and "injected failure in task 2" in text, tail(text)
    with pytest.raises((NotADatasetError, IncompleteDatasetError)):
        open_dataset(out, **s3_opts)
    status, text = submit(cluster, args, tmp_path)
    assert status == 0, tail(text)
    assert dataset_files(download(out, tmp_path / "got", s3_opts)) == reference


@pytest.mark.s3
def test_cluster_cohort_with_broken_bam(
    cluster: str, multi_bam: Path, reference: dict[str, Any], tmp_path: Path, s3_bucket: str,
    s3_opts: dict[str, str],
) -> None:
    data = bytearray(multi_bam.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4000] = bytes(4000)
    broken = tmp_path / "broken.bam"
    broken.write_bytes(bytes(data))
    shutil.copy(str(multi_bam) + ".bai", str(broken) + ".bai")
    broken_url = upload(broken, f"s3://{s3_bucket}/in", s3_opts)
    good_url = upload(multi_bam, f"s3://{s3_bucket}/in", s3_opts)
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(
        f"{multi_bam}\t{tmp_path / 'local.bams3'}\n"
        f"{broken_url}\ts3://{s3_bucket}/broken.bams3\n"
        f"{good_url}\ts3://{s3_bucket}/good.bams3\n"
    )
    args = ["--manifest", str(sheet), "--s3-endpoint", s3_opts["endpoint_url"]]
    status, text = submit(cluster, args, tmp_path)
    assert status == 1
    failed = [line for line in text.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and broken_url in failed[0], tail(text)
    # The reason itself (the damaged block the reader met), not a follow-up error.
    assert "BGZF block at byte" in failed[0]
    assert "failed: broken.bam" in text
    assert dataset_files(tmp_path / "local.bams3") == reference
    assert dataset_files(download(f"s3://{s3_bucket}/good.bams3", tmp_path / "good", s3_opts)) == reference
    with pytest.raises((NotADatasetError, IncompleteDatasetError)):
        open_dataset(f"s3://{s3_bucket}/broken.bams3", **s3_opts)
