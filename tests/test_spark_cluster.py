"""``spark-submit jobs/query.py`` on a real standalone cluster (master + 2 workers, loopback).

The cluster is started once for the module with pyspark's own ``spark-class``
(``tests/spark_cluster.py``). Results are compared with the same query run in
the local session and with ``samtools`` on the source BAMs; one submission
reads a dataset from the moto S3 endpoint in the executors.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import pysam
import pytest
from conftest import ROOT, samtools
from spark_cluster import spark_submit

from bams3_spark.convert import convert
from bams3_spark.spark.query_job import run_query

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
    from bamgen import make_multi_contig_bam

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


def _submit(master: str, args: list[str], workdir: Path) -> None:
    proc = spark_submit(master, JOB, args, workdir)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_cluster_counts_equal_local_and_samtools(cluster: str, samples: dict[str, dict[str, str]], spark: Any,
                                                 tmp_path: Path) -> None:
    datasets = [s["dataset"] for s in samples.values()]
    regions = [REGION, "chr2:100000-400000"]
    out = tmp_path / "cluster-counts"
    _submit(cluster, ["--region", regions[0], "--region", regions[1], *datasets, "--out", str(out),
                      "--format", "csv", "--count"], tmp_path)
    rows = [r for f in sorted(out.glob("part-*.csv")) for r in csv.DictReader(f.open(newline=""))]
    on_cluster = {r["sample"]: int(r["count"]) for r in rows}
    local = run_query(datasets, str(tmp_path / "local-counts"), regions=regions, count=True, spark=spark)
    assert on_cluster == local.counts
    assert on_cluster == {
        name: int(samtools("view", "-c", "-M", s["bam"], *regions).strip()) for name, s in samples.items()
    }


@pytest.mark.s3
def test_cluster_writes_sam_files_from_s3_and_local_datasets(
    cluster: str, samples: dict[str, dict[str, str]], s3_bucket: str, s3_opts: dict[str, str], tmp_path: Path
) -> None:
    a_s3 = f"s3://{s3_bucket}/a.bams3"
    convert(samples["sampleA"]["bam"], a_s3, chunk_size="256K", storage_options=s3_opts)
    out = tmp_path / "sam"
    _submit(cluster, ["--region", REGION, a_s3, samples["sampleB"]["dataset"], "--out", str(out),
                      "--format", "sam", "--s3-endpoint", s3_opts["endpoint_url"]], tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["sampleA.sam", "sampleB.sam"]
    for name, s in samples.items():
        assert (out / f"{name}.sam").read_text() == samtools("view", "-h", "--no-PG", s["bam"], REGION), name
