"""``spark-submit jobs/query.py`` on a real standalone cluster (master + 2 workers, loopback).

The session's cluster (``tests/conftest.py``, started with pyspark's own
``spark-class``) runs one submission that reads one dataset from the moto S3
endpoint and one from local disk; its files are compared with ``samtools`` on
the source BAMs and its counts with the same query run in the local session.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pysam
import pytest

from bams3_spark.convert import convert
from bams3_spark.spark.query_job import run_query
from tests.support.oracles import ROOT, samtools
from tests.support.spark_cluster import spark_submit

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.spark,
    pytest.mark.skipif(shutil.which("samtools") is None, reason="needs the samtools oracle"),
]

REGION = "chr1:250000-270000"
JOB = ROOT / "jobs" / "query.py"


@pytest.fixture(scope="module")
def cluster(standalone: tuple[str, Path]) -> str:
    """The session's standalone cluster (conftest.py): its master URL."""
    return standalone[0]


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory, multi_bam: Path) -> dict[str, dict[str, str]]:
    """Two samples (SM sampleA and sampleB): source BAM and local dataset of each."""
    from tests.support.bamgen import make_multi_contig_bam

    root = tmp_path_factory.mktemp("cluster-data")
    other = make_multi_contig_bam(root / "other.bam", seed=11)
    header = root / "b.header.sam"
    header.write_text(samtools("view", "-H", "--no-PG", str(other)).replace("SM:sampleA", "SM:sampleB"))
    bam_b = root / "b.bam"
    pysam.reheader("-P", str(header), str(other), save_stdout=str(bam_b))
    pysam.index(str(bam_b))
    out: dict[str, dict[str, str]] = {}
    for sample, bam in (("sampleA", multi_bam), ("sampleB", bam_b)):
        ds = str(root / f"{sample}.bams3")
        convert(str(bam), ds, chunk_size="256K")
        out[sample] = {"bam": str(bam), "dataset": ds}
    return out


def _submit(master: str, args: list[str], workdir: Path) -> str:
    proc = spark_submit(master, JOB, args, workdir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


@pytest.mark.s3
def test_cluster_sam_files_and_counts_from_s3_and_local_datasets(
    cluster: str, samples: dict[str, dict[str, str]], s3_bucket: str, s3_opts: dict[str, str], spark: Any,
    tmp_path: Path,
) -> None:
    # One submission: sampleA read from S3 by the executors, sampleB from local disk, two regions.
    regions = [REGION, "chr2:100000-400000"]
    a_s3 = f"s3://{s3_bucket}/a.bams3"
    convert(samples["sampleA"]["bam"], a_s3, chunk_size="256K", storage_options=s3_opts)
    out = tmp_path / "sam"
    args = ["--region", regions[0], "--region", regions[1], a_s3, samples["sampleB"]["dataset"],
            "--out", str(out), "--format", "sam", "--s3-endpoint", s3_opts["endpoint_url"]]
    text = _submit(cluster, args, tmp_path)
    assert "jobs/query.py: 2 sample(s)" in text and "GET request(s)" in text
    # Written by the executors, one file per sample; _SUCCESS last.
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "sampleA.sam", "sampleB.sam"]
    on_cluster = {}
    for name, s in samples.items():
        text = (out / f"{name}.sam").read_text()
        # Several regions: each record once, in file order (samtools view -M).
        assert text == samtools("view", "-h", "--no-PG", "-M", s["bam"], *regions), name
        on_cluster[name] = sum(1 for line in text.splitlines() if not line.startswith("@"))
    datasets = [s["dataset"] for s in samples.values()]
    local = run_query(datasets, str(tmp_path / "local-counts"), regions=regions, count=True, spark=spark)
    assert on_cluster == local.counts
    assert on_cluster == {
        name: int(samtools("view", "-c", "-M", s["bam"], *regions).strip()) for name, s in samples.items()
    }
