"""The Spark coverage job (bams3_spark.spark.coverage_job, ``jobs/coverage.py``) against the local engine.

The local engine (``coverage_table``) is itself checked against mosdepth and
samtools depth in tests/coverage/test_engine.py; here the DataFrame of the
job must equal its table row for row (chispa). Datasets are cut into many
chunks and window parts, and the reduce buckets are made small, so the job's
cross-chunk mate resolution and its merging of runs across buckets are both
exercised. One test runs ``spark-submit jobs/coverage.py`` on a real
standalone cluster (master + 2 workers on loopback).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality

from bams3_spark.convert import convert
from bams3_spark.coverage.engine import coverage_table
from bams3_spark.coverage.options import CoverageOptions
from bams3_spark.exceptions import InvalidArgumentError
from bams3_spark.spark.coverage_job import coverage_dataframe, run_coverage
from tests.coverage.test_mosdepth import build_bam
from tests.support.oracles import ROOT
from tests.support.spark_cluster import spark_submit

pytestmark = pytest.mark.spark

JOB = ROOT / "jobs" / "coverage.py"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sparkcov")


@pytest.fixture(scope="module")
def mates_ds(work: Path) -> str:
    """Mate-overlap cases and a 20,000-read pile-up, in chunks of at most 2,500
    records: overlapping pairs are split between window parts."""
    out = str(work / "mates.bams3")
    convert(str(build_bam(work / "mates.bam")), out, chunk_size="256K", max_chunk_records=2500)
    return out


@pytest.fixture(scope="module")
def multi_ds(multi_bam: Path, work: Path) -> str:
    out = str(work / "multi.bams3")
    convert(str(multi_bam), out, chunk_size="256K", max_chunk_records=600)
    return out


def local_df(spark: Any, table: pa.Table) -> Any:
    return spark.createDataFrame(table)


def check(spark: Any, got: Any, expected: pa.Table) -> None:
    assert got.columns == expected.schema.names
    assert_df_equality(got, local_df(spark, expected), ignore_nullable=True)


def test_per_base_two_samples(spark: Any, mates_ds: str, multi_ds: str) -> None:
    """mosdepth rules, per-base runs, two samples, 16 kbp buckets (runs merged across their edges)."""
    got = coverage_dataframe(spark, [mates_ds, multi_ds], bucket=16384)
    check(spark, got, coverage_table([mates_ds, multi_ds], workers=2))


def test_windows_mosdepth_rules(spark: Any, mates_ds: str) -> None:
    """Window means are computed exactly as mosdepth (and the local engine) do."""
    options = CoverageOptions(mapq=5)
    got = coverage_dataframe(spark, mates_ds, by=300, options=options, bucket=1000)
    check(spark, got, coverage_table(mates_ds, by=300, options=options))


def test_samtools_rules_per_base(spark: Any, multi_ds: str) -> None:
    options = CoverageOptions(mode="samtools", count_deletions=True)
    got = coverage_dataframe(spark, multi_ds, options=options, bucket=65536)
    check(spark, got, coverage_table(multi_ds, options=options))


def _job() -> ModuleType:
    spec = importlib.util.spec_from_file_location("coverage_job_script", JOB)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_job_outputs(spark: Any, mates_ds: str, multi_ds: str, work: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    """jobs/coverage.py: CSV and bedGraph outputs hold the engine's values; errors are one line."""
    job = _job()
    expected = coverage_table([mates_ds, multi_ds], by=5000, options=CoverageOptions(mode="fast"))
    out = work / "csv"
    args = [mates_ds, multi_ds, "--by", "5000", "--fast-mode", "--out", str(out), "--format", "csv"]
    assert job.main(args) == 0
    got = _read_csv_dir(out)
    assert got.num_rows == expected.num_rows
    assert got.column("mean_depth").to_pylist() == expected.column("mean_depth").to_pylist()
    assert got.column("rname").to_pylist() == expected.column("rname").to_pylist()

    bg = work / "bedgraph"
    assert job.main([mates_ds, "--fast-mode", "--out", str(bg), "--format", "bedgraph"]) == 0
    lines = "".join(p.read_text() for p in sorted((bg / "sample=mates").glob("part-*")))
    runs = coverage_table(mates_ds, options=CoverageOptions(mode="fast"))
    assert lines == "".join(
        f"{r}\t{s}\t{e}\t{d}\n"
        for r, s, e, d in zip(*(runs.column(c).to_pylist() for c in ("rname", "start", "end", "depth")),
                              strict=True)
    )
    capsys.readouterr()
    assert job.main([mates_ds, "--out", str(bg), "--format", "bedgraph"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0]
    assert job.main([str(work), "--out", str(work / "nope")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a BAMS3 dataset" in err[0]
    assert not (work / "nope").exists()


def _read_csv_dir(path: Path) -> pa.Table:
    import pyarrow.csv as pacsv

    return pa.concat_tables(pacsv.read_csv(p) for p in sorted(path.glob("part-*.csv")))


def test_bad_arguments(spark: Any, mates_ds: str, work: Path) -> None:
    with pytest.raises(InvalidArgumentError):
        coverage_dataframe(spark, mates_ds, by=0)
    with pytest.raises(InvalidArgumentError):
        run_coverage(spark, [mates_ds], str(work / "x"), fmt="bam")


@pytest.fixture(scope="module")
def cluster(standalone: tuple[str, Path]) -> str:
    """The session's standalone cluster (conftest.py): its master URL."""
    return standalone[0]


@pytest.mark.cluster
@pytest.mark.skipif(shutil.which("java") is None, reason="no java")
def test_spark_submit_on_a_standalone_cluster(cluster: str, mates_ds: str, multi_ds: str,
                                             tmp_path: Path) -> None:
    out = tmp_path / "cov.parquet"
    proc = spark_submit(cluster, JOB, [mates_ds, multi_ds, "--by", "1000", "--out", str(out)], tmp_path)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, "\n".join(line for line in text.splitlines() if " INFO " not in line)[-4000:]
    got = pq.read_table(out)
    expected = coverage_table([mates_ds, multi_ds], by=1000)
    assert got.schema.names == expected.schema.names
    assert got.to_pylist() == expected.to_pylist()
