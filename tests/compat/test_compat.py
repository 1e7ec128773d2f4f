"""The Spark releases users run: this module also runs in venvs with pyspark 3.5.x and 4.0.x.

``make test-compat`` runs it with pyspark 3.5.6 (EMR 7.x, Dataproc 2.2/2.3) and
4.0.2 (EMR 8.0, Dataproc 3.0); ``make test`` runs it with the dev venv's
pyspark (4.3). Small data, one local SparkSession per venv (the session-wide
``spark`` fixture). The oracles are samtools on the htslib conformance files
and pyarrow on the chunk objects.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from bams3_spark import open_dataset
from bams3_spark.convert import convert
from bams3_spark.format.schema import COLUMNS
from bams3_spark.spark import compat, read_bams3
from tests.support.legacy import rewrite_as_format_1_0
from tests.support.oracles import ROOT, conformance_files, sam_to_bam, samtools

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(shutil.which("samtools") is None, reason="needs the samtools oracle"),
]


def _job(name: str) -> ModuleType:
    """``jobs/<name>.py`` as a module (what spark-submit runs)."""
    spec = importlib.util.spec_from_file_location(f"bams3_job_{name}", ROOT / "jobs" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def conformance(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str, str]]:
    """Every htslib conformance file as (sorted BAM, dataset, sample), converted by this package."""
    root = tmp_path_factory.mktemp("compat")
    out = []
    for sam in conformance_files():
        bam = sam_to_bam(sam, root)
        ds = root / (bam.stem + ".bams3")
        convert(str(bam), str(ds), allow_empty=True)
        out.append((bam, str(ds), open_dataset(str(ds)).sample))
    return out


def _distinct_sample_groups(items: list[tuple[Path, str, str]]) -> list[list[tuple[Path, str, str]]]:
    """Split datasets into reads whose sample names are distinct (some files share an SM)."""
    groups: list[list[tuple[Path, str, str]]] = []
    for item in items:
        for group in groups:
            if all(item[2] != other[2] for other in group):
                group.append(item)
                break
        else:
            groups.append([item])
    return groups


def _references(bam: Path) -> dict[str, int]:
    refs = {}
    for line in samtools("view", "-H", str(bam)).splitlines():
        if line.startswith("@SQ"):
            fields = dict(f.split(":", 1) for f in line.split("\t")[1:] if ":" in f)
            refs[fields["SN"]] = int(fields["LN"])
    return refs


def test_pyspark_is_supported_and_the_version_gates_agree() -> None:
    major_minor = compat.check_pyspark()
    assert compat.has_data_source_api() == (major_minor >= (4, 0))
    if major_minor < (4, 0):
        from bams3_spark.exceptions import UnsupportedSparkError
        from bams3_spark.spark import register

        with pytest.raises(UnsupportedSparkError, match="use bams3_spark.read_bams3"):
            register(None)


def test_counts_per_reference_equal_samtools(spark: Any, conformance: list[tuple[Path, str, str]]) -> None:
    for group in _distinct_sample_groups(conformance):
        df = read_bams3(spark, [ds for _, ds, _ in group], columns=["rname", "sample"])
        got = {(r["sample"], r["rname"]): r["count"] for r in df.groupBy("sample", "rname").count().collect()}
        want = {}
        for bam, _, sample in group:
            for line in samtools("idxstats", str(bam)).splitlines():
                name, _, mapped, unmapped = line.split("\t")
                if int(mapped) + int(unmapped):
                    want[(sample, name)] = want.get((sample, name), 0) + int(mapped) + int(unmapped)
        assert got == want


def test_a_region_equals_samtools(spark: Any, conformance: list[tuple[Path, str, str]]) -> None:
    for group in _distinct_sample_groups(conformance):
        lengths: dict[str, int] = {}
        for bam, _, _ in group:
            for name, length in _references(bam).items():
                lengths.setdefault(name, length)
        # Names without colons: samtools -M (several regions) cannot take braced names.
        regions = [f"{n}:1-{max(1, ln // 2)}" for n, ln in lengths.items() if ":" not in n][:12]
        df = read_bams3(spark, [ds for _, ds, _ in group], regions=regions, columns=["sample"])
        got = {r["sample"]: r["count"] for r in df.groupBy("sample").count().collect()}
        want = {}
        for bam, _, sample in group:
            own = [r for r in regions if r.rsplit(":", 1)[0] in _references(bam)]
            n = int(samtools("view", "-c", "-M", str(bam), *own).strip()) if own else 0
            if n:
                want[sample] = n
        assert got == want


@pytest.mark.parametrize("scan", ["auto", "python"])
def test_a_projection_equals_samtools(
    spark: Any, conformance: list[tuple[Path, str, str]], scan: str
) -> None:
    group = _distinct_sample_groups(conformance)[0]
    columns = ["qname", "flag", "pos", "cigar", "sample"]
    df = read_bams3(spark, [ds for _, ds, _ in group], columns=columns, scan=scan)
    got = sorted((r["sample"], r["qname"], r["flag"], r["pos"], r["cigar"]) for r in df.collect())
    want = []
    for bam, _, sample in group:
        for line in samtools("view", str(bam)).splitlines():
            f = line.split("\t")
            want.append((sample, f[0], int(f[1]), int(f[3]), f[5]))
    assert got == sorted(want)


def test_spark_parquet_reads_every_column_of_fresh_chunks(
    spark: Any, conformance: list[tuple[Path, str, str]], multi_bam: Path, tmp_path: Path
) -> None:
    """Default settings (the vectorized reader on Spark 3.5 too): FORMAT 1.1 is portable."""
    big = tmp_path / "multi.bams3"
    convert(str(multi_bam), str(big), chunk_size="256K")
    files = [str(p) for _, ds, _ in conformance for p in sorted(Path(ds).glob("data/*/*.chunk"))]
    files += [str(p) for p in sorted(big.glob("data/*/*.chunk"))]
    assert spark.conf.get("spark.sql.parquet.enableVectorizedReader") == "true"
    df = spark.read.parquet(*files)
    strings = [c for c in COLUMNS if c in ("qname", "rname", "cigar", "rnext", "seq", "qual", "tags")]
    ints = [c for c in COLUMNS if c not in strings]
    row = df.agg(F.count(F.lit(1)), *[F.sum(F.length(F.col(c).cast("binary"))) for c in strings],
                 *[F.sum(F.col(c).cast("long")) for c in ints]).collect()[0]
    table = pq.ParquetDataset(files).read()
    want = [table.num_rows]
    want += [pc.sum(pc.binary_length(table.column(c).cast("binary"))).as_py() for c in strings]
    want += [pc.sum(table.column(c).cast("int64")).as_py() for c in ints]
    assert list(row) == want


def test_format_1_0_datasets_read_correctly(spark: Any, conformance: list[tuple[Path, str, str]],
                                            tmp_path: Path) -> None:
    bam, ds, sample = next(c for c in conformance if c[0].stem == "ce_1000")
    old = tmp_path / "old.bams3"
    shutil.copytree(ds, old)
    rewrite_as_format_1_0(old)
    want = int(samtools("view", "-c", str(bam)).strip())
    df = read_bams3(spark, str(old), columns=["seq", "qual", "qname", "tags"])
    assert df.count() == want
    new = read_bams3(spark, ds, columns=["seq", "qual", "qname", "tags"])
    expected = sorted(map(tuple, new.collect()))
    assert sorted(map(tuple, df.collect())) == expected
    # Forced onto Spark's reader: on Spark 3.5 the vectorized reader is turned off for 1.0 chunks.
    forced = read_bams3(spark, str(old), columns=["seq", "qual", "qname", "tags"], scan="spark")
    try:
        assert "FileScan parquet" in str(forced._jdf.queryExecution().executedPlan().toString())
        assert sorted(map(tuple, forced.collect())) == expected
        vectorized = spark.conf.get("spark.sql.parquet.enableVectorizedReader")
        assert vectorized == ("true" if compat.vectorized_reads_format_1_0() else "false")
    finally:
        spark.conf.set("spark.sql.parquet.enableVectorizedReader", "true")


def test_convert_job_end_to_end(conformance: list[tuple[Path, str, str]], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    bam = next(c[0] for c in conformance if c[0].stem == "ce_1000")
    out = tmp_path / "job.bams3"
    assert _job("convert").main([str(bam), str(out), "--master", "local[2]"]) == 0, capsys.readouterr().err
    assert open_dataset(str(out)).manifest.records == int(samtools("view", "-c", str(bam)).strip())


def test_query_job_end_to_end(conformance: list[tuple[Path, str, str]], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    bam, ds, sample = next(c for c in conformance if c[0].stem == "ce_1000")
    out = tmp_path / "counts"
    status = _job("query").main([ds, "--region", "CHROMOSOME_I:1-2000", "--count", "--format", "csv",
                                 "--out", str(out), "--master", "local[2]"])
    assert status == 0, capsys.readouterr().err
    text = "".join(p.read_text() for p in sorted(out.glob("*.csv")))
    assert f"{sample},{int(samtools('view', '-c', str(bam), 'CHROMOSOME_I:1-2000').strip())}" in text


def test_coverage_job_end_to_end(conformance: list[tuple[Path, str, str]], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Window means equal the local engine's (itself checked against mosdepth in tests/coverage)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from bams3_spark.coverage.engine import coverage_table

    _, ds, _ = next(c for c in conformance if c[0].stem == "ce_1000")
    out = tmp_path / "cov"
    status = _job("coverage").main([ds, "--by", "1000", "--format", "csv", "--out", str(out),
                                    "--master", "local[2]"])
    assert status == 0, capsys.readouterr().err
    got = pa.concat_tables(pacsv.read_csv(p) for p in sorted(out.rglob("part-*.csv")))
    expected = coverage_table(ds, by=1000)
    assert got.num_rows == expected.num_rows > 0
    assert got.column("mean_depth").to_pylist() == expected.column("mean_depth").to_pylist()


def test_genotype_job_end_to_end(conformance: list[tuple[Path, str, str]], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Parquet by sample and the VCF equal ``bams3 genotype`` (itself checked against samtools mpileup)."""
    import gzip

    from bams3_spark.cli import main as bams3
    from bams3_spark.genotype.engine import genotype_table

    _, ds, _ = next(c for c in conformance if c[0].stem == "ce_1000")
    sites = tmp_path / "sites.bed"
    sites.write_text("CHROMOSOME_I\t0\t2000\n")
    out = tmp_path / "gt"
    status = _job("genotype").main([ds, "--sites", str(sites), "--out", str(out), "--master", "local[2]"])
    assert status == 0, capsys.readouterr().err
    expected = genotype_table(ds, str(sites))
    got = pq.read_table(next(out.glob("sample=*")))
    assert got.to_pylist() == expected.drop_columns(["sample"]).to_pylist() and got.num_rows == 2000
    vcf = tmp_path / "gt.vcf.gz"
    assert _job("genotype").main([ds, "--sites", str(sites), "--out", str(vcf), "--format", "vcf",
                                  "--master", "local[2]"]) == 0, capsys.readouterr().err
    local = tmp_path / "local.vcf.gz"
    assert bams3(["genotype", ds, "--sites", str(sites), "-o", str(local), "--quiet"]) == 0
    with gzip.open(vcf, "rt") as a, gzip.open(local, "rt") as b:
        assert a.read() == b.read()
