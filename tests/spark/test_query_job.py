"""The cohort query job (bams3_spark.spark.query_job, ``jobs/query.py``) in the local session.

Oracles: ``samtools view`` / ``view -c`` on the source BAMs, and ``bams3
query`` (the local engine) on each dataset. The three-sample cohort (one
sample without records in the region, one with quotes in QUAL and tags) is
the data source tests' fixture.
"""

from __future__ import annotations

import csv
import runpy
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pysam
import pytest

from bams3_spark.format.schema import COLUMNS, SAM_COLUMNS
from bams3_spark.spark.query_job import run_query
from tests.spark.test_datasource import cohort, samtools_count  # noqa: F401 - the shared fixture
from tests.support.oracles import ROOT, samtools

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(shutil.which("samtools") is None, reason="needs the samtools oracle"),
]

REGION = "chr1:250000-270000"


def test_counts_per_sample(spark: Any, cohort: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "counts"
    result = run_query([cohort["glob"]], str(out), regions=[REGION], count=True, spark=spark)
    expected = {s: samtools_count(b, [REGION]) for s, b in cohort["bams"].items()}
    assert expected["noSM"] == 0 and expected["sampleA"] > 0  # a sample without records is listed
    assert result.counts == expected
    table = pq.read_table(out)
    written = zip(table.column("sample").to_pylist(), table.column("count").to_pylist(), strict=True)
    assert dict(written) == expected
    costs = result.costs
    assert (costs.samples, costs.units) == (3, 3) and costs.requests > 0 and costs.bytes > 0
    with pytest.raises(FileExistsError, match="already exists"):
        run_query([cohort["glob"]], str(out), regions=[REGION], count=True, spark=spark)
    csv_out = tmp_path / "counts.csv"
    run_query([cohort["glob"]], str(csv_out), regions=[REGION, "chr2:1-1000"], fmt="csv", count=True,
              spark=spark)
    rows = [r for f in sorted(csv_out.glob("part-*.csv")) for r in csv.DictReader(f.open())]
    assert {r["sample"]: int(r["count"]) for r in rows} == {
        s: samtools_count(b, [REGION, "chr2:1-1000"], "-M") for s, b in cohort["bams"].items()
    }


def test_records_as_parquet_and_csv_partitioned_by_sample(
    spark: Any, cohort: dict[str, Any], tmp_path: Path  # noqa: F811
) -> None:
    datasets = list(cohort["datasets"].values())
    region = "chr2:1-300000"
    run_query(datasets, str(tmp_path / "rec"), regions=[region], spark=spark)
    assert sorted(p.name for p in (tmp_path / "rec").iterdir() if p.is_dir()) == [
        f"sample={s}" for s in sorted(cohort["bams"]) if samtools_count(cohort["bams"][s], [region])
    ]
    table = pq.read_table(tmp_path / "rec")
    assert table.column_names == [*COLUMNS, "sample"]
    samples = table.column("sample").cast(pa.string())
    for sample, bam in cohort["bams"].items():
        assert table.filter(pc.equal(samples, sample)).num_rows == samtools_count(bam, [region])
    run_query(datasets, str(tmp_path / "csv"), regions=[region], fmt="csv", spark=spark)
    got = sorted(
        (f.parent.name.removeprefix("sample="), *(r[c] for c in (*SAM_COLUMNS, "tags")))
        for f in sorted((tmp_path / "csv").glob("sample=*/part-*.csv"))
        for r in csv.DictReader(f.open(newline=""))
    )
    want = []
    for sample, bam in cohort["bams"].items():
        for line in samtools("view", "--no-PG", str(bam), region).splitlines():
            fields = line.split("\t")
            want.append((sample, *fields[:11], "\t".join(fields[11:])))
    # Quality strings contain '"' and '\': RFC 4180 quoting keeps them intact.
    assert any('"' in w[11] and "\\" in w[11] for w in want) and any('"' in w[12] for w in want)
    assert got == sorted(want)


def test_one_sam_file_per_sample(spark: Any, cohort: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "sam"
    result = run_query([cohort["glob"]], str(out), regions=[REGION, "*"], fmt="sam", spark=spark)
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "noSM.sam", "sampleA.sam", "sampleB.sam"]
    for sample, bam in cohort["bams"].items():
        expected = samtools("view", "-h", "--no-PG", "-M", str(bam), REGION, "*")
        assert (out / f"{sample}.sam").read_text() == expected, sample
        assert result.counts is not None
        assert result.counts[sample] == samtools_count(bam, [REGION, "*"], "-M")


def test_one_bam_file_per_sample_equals_bams3_query(spark: Any, cohort: dict[str, Any],  # noqa: F811
                                                     tmp_path: Path) -> None:
    """OUT/<sample>.bam: the records `bams3 query` writes for that dataset, sorted and indexable."""
    from bams3_spark.cli.main import main as bams3

    out = tmp_path / "bam"
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text("".join(f"{s}\t{d}\n" for s, d in cohort["datasets"].items()))
    result = run_query([], str(out), regions=["chr2:100000-400000"], fmt="bam", manifest=str(sheet),
                       spark=spark)
    for sample, ds in cohort["datasets"].items():
        local = tmp_path / f"local-{sample}.bam"
        assert bams3(["query", ds, "chr2:100000-400000", "-o", str(local), "--quiet"]) == 0
        mine = out / f"{sample}.bam"
        pysam.index(str(mine))  # coordinate-sorted: samtools indexes it
        assert samtools("view", "-h", "--no-PG", str(mine)) == samtools("view", "-h", "--no-PG", str(local))
        assert result.counts is not None
        assert result.counts[sample] == samtools_count(cohort["bams"][sample], ["chr2:100000-400000"])


def test_cli_reports_bad_input_in_one_line(cohort: dict[str, Any], tmp_path: Path,  # noqa: F811
                                           capsys: pytest.CaptureFixture[str]) -> None:
    main = runpy.run_path(str(ROOT / "jobs" / "query.py"), run_name="bams3_query_job")["main"]
    sheet = tmp_path / "dup.tsv"
    sheet.write_text(f"X\t{cohort['datasets']['sampleA']}\nX\t{cohort['datasets']['sampleB']}\n")
    cases = [
        (["--region", "chrZ", cohort["datasets"]["sampleA"]], "unknown reference 'chrZ'"),
        ([str(tmp_path)], "not a BAMS3 dataset"),
        (["--count", "--format", "sam", cohort["glob"]], "--count writes a table"),
        (["--manifest", str(sheet)], "sample 'X' appears twice"),
    ]
    for args, message in cases:
        assert main([*args, "--out", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("jobs/query.py: error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.s3
def test_bam_files_to_s3(spark: Any, cohort: dict[str, Any], s3_bucket: str,  # noqa: F811
                         s3_opts: dict[str, str]) -> None:
    """OUT may be an S3 prefix: each task uploads its finished file; _SUCCESS comes last."""
    import boto3

    out = f"s3://{s3_bucket}/brca"
    result = run_query([cohort["glob"]], out, regions=[REGION], fmt="bam", storage_options=s3_opts,
                       spark=spark)
    client = boto3.client("s3", endpoint_url=s3_opts["endpoint_url"], region_name="us-east-1")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert keys == ["brca/_SUCCESS", "brca/noSM.bam", "brca/sampleA.bam", "brca/sampleB.bam"]
    data = client.get_object(Bucket=s3_bucket, Key="brca/sampleA.bam")["Body"].read()
    assert data[:2] == b"\x1f\x8b"  # BGZF
    assert result.counts == {s: samtools_count(b, [REGION]) for s, b in cohort["bams"].items()}
    with pytest.raises(FileExistsError, match="already exists"):
        run_query([cohort["glob"]], out, regions=[REGION], fmt="bam", storage_options=s3_opts, spark=spark)
