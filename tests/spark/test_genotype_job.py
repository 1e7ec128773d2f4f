"""The Spark genotyping job (bams3_spark.spark.genotype_job, ``jobs/genotype.py``) against ``bams3 genotype``.

The local engine is checked against ``samtools mpileup -B`` in
tests/genotype/test_engine.py; here the job's DataFrame must equal its table
row for row, and each output (Parquet and TSV per sample, the multi-sample
VCF) what ``bams3 genotype`` writes. One test runs ``spark-submit
jobs/genotype.py`` on the session's standalone cluster.
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality

from bams3_spark.cli import main as bams3
from bams3_spark.convert import convert
from bams3_spark.genotype.engine import genotype_table
from bams3_spark.genotype.options import GenotypeOptions
from bams3_spark.spark.genotype_job import genotype_dataframe, run_genotype
from tests.genotype.bams import make_genotype_bam
from tests.support.oracles import ROOT
from tests.support.spark_cluster import spark_submit

pytestmark = pytest.mark.spark

JOB = ROOT / "jobs" / "genotype.py"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sparkgeno")


@pytest.fixture(scope="module")
def cohort(work: Path) -> list[str]:
    """Two samples in small chunks (units span several chunk objects)."""
    out = []
    for seed, name in ((15, "s1"), (16, "s2:x")):
        bam = make_genotype_bam(work / f"{seed}.bam", seed=seed, sample=name)
        ds = str(work / f"{seed}.bams3")
        convert(str(bam), ds, chunk_size="256K", max_chunk_records=150)
        out.append(ds)
    return out


@pytest.fixture(scope="module")
def bed(work: Path) -> str:
    path = work / "sites.bed"
    path.write_text("chr1\t0\t3000\nHLA-DRB1*15:01:01:01\t100\t1550\nchrUn:12-34*\t10\t20\n")
    return str(path)


def test_dataframe_equals_local_table(spark: Any, cohort: list[str], bed: str) -> None:
    options = GenotypeOptions(min_mapping_quality=5)
    with pytest.warns(UserWarning, match="past"):
        expected = genotype_table(cohort, bed, options)
    got = genotype_dataframe(spark, cohort, bed, options)
    assert got.columns == expected.schema.names
    assert_df_equality(got, spark.createDataFrame(expected), ignore_nullable=True)


def test_outputs_equal_bams3_genotype(spark: Any, cohort: list[str], bed: str, work: Path) -> None:
    local_vcf = work / "local.vcf.gz"
    assert bams3(["genotype", *cohort, "--sites", bed, "-o", str(local_vcf), "--quiet"]) == 0
    job_vcf = work / "job.vcf.gz"
    vcf_result = run_genotype(spark, cohort, bed, str(job_vcf), fmt="vcf")
    assert "past its end" in vcf_result.warnings[0]
    with gzip.open(local_vcf, "rt") as a, gzip.open(job_vcf, "rt") as b:
        assert a.read() == b.read()
    subprocess.run(["bcftools", "view", "-H", "-r", "chr1:100-110", str(job_vcf)], check=True,
                   capture_output=True)

    tsv_dir = work / "tsv"
    run_genotype(spark, cohort, bed, str(tsv_dir), fmt="tsv")
    for ds, sample in zip(cohort, ("s1", "s2:x"), strict=True):
        local = work / f"{sample}.tsv"
        assert bams3(["genotype", ds, "--sites", bed, "-o", str(local), "--quiet"]) == 0
        want = [line.split("\t", 1)[1] for line in local.read_text().splitlines()]
        # Spark escapes ':' (and other path characters) in partition directory names.
        parts = sorted((tsv_dir / f"sample={sample.replace(':', '%3A')}").glob("part-*"))
        assert len(parts) == 1
        assert parts[0].read_text().splitlines() == want

    pq_dir = work / "pq"
    pq_result = run_genotype(spark, cohort, bed, str(pq_dir), fmt="parquet")
    # Each output path counts each unit once (the VCF's reduce and sort do not re-run the counting).
    figures = [(r.costs.units, r.costs.chunks, r.costs.bytes) for r in (vcf_result, pq_result)]
    assert figures[0] == figures[1]
    table = pq.read_table(pq_dir / "sample=s1")
    with pytest.warns(UserWarning, match="past"):
        expected = genotype_table(cohort[0], bed)
    assert table.drop_columns([c for c in table.column_names if c == "sample"]).to_pylist() == \
        expected.drop_columns(["sample"]).to_pylist()
    with pytest.raises(FileExistsError):
        run_genotype(spark, cohort, bed, str(pq_dir), fmt="parquet")


def test_costs_count_what_the_units_read(spark: Any, cohort: list[str], bed: str, work: Path) -> None:
    """The summary's figures: every unit once, its chunk objects, and the bytes really fetched."""
    from bams3_spark.dataset.reader import DatasetReader
    from bams3_spark.genotype.engine import load_sites, plan_units

    sites = load_sites(bed, {})
    units = [u for ds in cohort for u in plan_units(DatasetReader.open(ds), sites)]
    result = run_genotype(spark, cohort, bed, str(work / "costs"), fmt="parquet", overwrite=True)
    costs = result.costs
    assert (costs.samples, costs.units, costs.chunks) == (2, len(units), sum(len(u.chunks) for u in units))
    # Only the counting's columns are fetched: more than the footers, less than the objects.
    assert 0 < costs.bytes < sum(u.bytes for u in units) + 2 * 100_000
    assert costs.requests > costs.chunks
    assert f"{len(units):,} unit(s)" in costs.line()


def test_job_errors_are_one_line(spark: Any, cohort: list[str], work: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("genotype_job_script", JOB)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    main = module.main
    bad = work / "bad.bed"
    bad.write_text("chr1\t10\t20\nnochr\t5\t6\n")
    assert main([*cohort, "--sites", str(bad), "--out", str(work / "x"), "--master", "local[2]"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 2: reference 'nochr' is not in" in err[0], err
    sheet = work / "samples.tsv"
    sheet.write_text(f"dup\t{cohort[0]}\ndup\t{cohort[1]}\n")
    assert main(["--manifest", str(sheet), "--sites", str(work / "sites.bed"), "--out", str(work / "y"),
                 "--master", "local[2]"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sample 'dup' appears twice" in err[0], err


@pytest.fixture(scope="module")
def cluster(standalone: tuple[str, Path]) -> str:
    """The session's standalone cluster (conftest.py): its master URL."""
    return standalone[0]


@pytest.mark.cluster
@pytest.mark.skipif(shutil.which("java") is None, reason="no java")
def test_spark_submit_on_a_standalone_cluster(
    cluster: str, cohort: list[str], bed: str, tmp_path: Path
) -> None:
    out = tmp_path / "cohort.vcf.gz"
    args = [*cohort, "--sites", bed, "--out", str(out), "--format", "vcf"]
    proc = spark_submit(cluster, JOB, args, tmp_path)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, "\n".join(line for line in text.splitlines() if " INFO " not in line)[-4000:]
    assert "genotypes written (vcf); 2 sample(s)" in proc.stdout and "GET request(s)" in proc.stdout
    local = tmp_path / "local.vcf.gz"
    assert bams3(["genotype", *cohort, "--sites", bed, "-o", str(local), "--quiet"]) == 0
    with gzip.open(local, "rt") as a, gzip.open(out, "rt") as b:
        assert a.read() == b.read()
    assert (tmp_path / "cohort.vcf.gz.tbi").exists()


def test_glob_and_manifest_inputs(spark: Any, cohort: list[str], bed: str, work: Path) -> None:
    """Inputs as the other cohort jobs take them: quoted globs, and a sheet naming the samples."""
    sheet = work / "named.tsv"
    sheet.write_text(f"sample\tdataset\nfirst\t{cohort[1]}\nsecond\t{cohort[0]}\n")
    got = genotype_dataframe(spark, [], bed, manifest=str(sheet))
    rows = got.select("sample").distinct().collect()
    assert sorted(r["sample"] for r in rows) == ["first", "second"]
    assert got.first()["sample"] == "first"
    by_glob = genotype_dataframe(spark, [str(work / "1*.bams3")], bed)
    assert [r["sample"] for r in by_glob.select("sample").distinct().collect()] != []
    assert by_glob.count() == genotype_dataframe(spark, cohort, bed).count()


def test_fingerprint_recipe(spark: Any, cohort: list[str], work: Path) -> None:
    """The README's recipe finds a sample listed twice under two names (a swap/duplicate)."""
    from pyspark.sql import functions as F  # noqa: N812

    sites = work / "fp.bed"
    sites.write_text("chr1\t0\t3000\nHLA-DRB1*15:01:01:01\t0\t1500\nchrUn:12-34*\t0\t1200\n")
    sheet = work / "fp.tsv"
    sheet.write_text(f"A\t{cohort[0]}\nB\t{cohort[1]}\nC\t{cohort[0]}_copy\n")
    shutil.copytree(cohort[0], cohort[0] + "_copy", dirs_exist_ok=True)
    out = work / "fp"
    run_genotype(spark, [], str(sites), str(out), manifest=str(sheet), overwrite=True)

    g = spark.read.parquet(str(out))  # sample, chrom, pos, depth, A, C, G, T, ...
    calls = g.where("depth >= 3").select(
        "sample", "chrom", "pos",
        F.array_sort(F.filter(F.array(*[F.when(F.col(b) >= 0.2 * F.col("depth"), F.lit(b)) for b in "ACGT"]),
                              lambda x: x.isNotNull())).alias("gt"))
    pairs = (calls.alias("a").join(calls.alias("b"), ["chrom", "pos"]).where("a.sample < b.sample")
             .groupBy(F.col("a.sample").alias("sample_a"), F.col("b.sample").alias("sample_b"))
             .agg(F.count("*").alias("sites"),
                  F.avg((F.col("a.gt") == F.col("b.gt")).cast("int")).alias("concordance")))
    got = {(r["sample_a"], r["sample_b"]): (r["sites"], r["concordance"]) for r in pairs.collect()}
    assert got[("A", "C")][1] == 1.0 and got[("A", "C")][0] > 500
    assert got[("A", "B")][1] < 0.8 and got[("B", "C")][1] < 0.8


def test_empty_sites_give_an_empty_valid_vcf(spark: Any, cohort: list[str], work: Path) -> None:
    empty = work / "empty.vcf"
    empty.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n")
    out = work / "empty.out.vcf.gz"
    run_genotype(spark, cohort, str(empty), str(out), fmt="vcf")
    res = subprocess.run(["bcftools", "view", str(out)], check=True, capture_output=True, text=True)
    assert res.stdout.splitlines()[-1].endswith("FORMAT\ts1\ts2:x")


@pytest.mark.s3
def test_datasets_sites_and_vcf_on_s3(spark: Any, cohort: list[str], bed: str, work: Path, s3_bucket: str,
                                      s3_opts: dict[str, str]) -> None:
    """Datasets, the sites file and the VCF on S3 (a moto server on loopback)."""
    import boto3

    from bams3_spark.io.storage import Storage

    url = f"s3://{s3_bucket}/c/s1.bams3"
    src = Path(cohort[0])
    dest = Storage(url, **s3_opts)
    for p in src.rglob("*"):
        if p.is_file():
            dest.write_bytes(str(p.relative_to(src)), p.read_bytes())
    client = boto3.client("s3", endpoint_url=s3_opts["endpoint_url"], region_name="us-east-1")
    client.put_object(Bucket=s3_bucket, Key="sites.bed", Body=Path(bed).read_bytes())
    out = f"s3://{s3_bucket}/out/fp.vcf.gz"
    sites = f"s3://{s3_bucket}/sites.bed"
    run_genotype(spark, [f"s3://{s3_bucket}/c/*.bams3"], sites, out, fmt="vcf", **s3_opts)
    got = client.get_object(Bucket=s3_bucket, Key="out/fp.vcf.gz")["Body"].read()
    assert client.get_object(Bucket=s3_bucket, Key="out/fp.vcf.gz.tbi")["Body"].read()[:2] == b"\x1f\x8b"
    local = work / "s3-local.vcf.gz"
    assert bams3(["genotype", cohort[0], "--sites", bed, "-o", str(local), "--quiet"]) == 0
    assert gzip.decompress(got).decode() == gzip.open(local, "rt").read()
