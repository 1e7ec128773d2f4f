"""The Spark coverage job (bams3_spark.spark.coverage_job, ``jobs/coverage.py``) against the local engine.

The local engine (``coverage_table``, ``write_coverage``) is itself checked
against mosdepth and samtools depth in tests/coverage/; here the job's output
must equal it row for row (chispa) or byte for byte (mosdepth files). With
two samples on ``local[2]`` the job splits references into runs of chunks
(datasets are cut into many small chunks), so mate overlaps across run
boundaries are resolved on the executors; a cohort of 50 hard-linked
datasets runs one unit per sample. One test runs ``spark-submit
jobs/coverage.py`` on a real standalone cluster (master + 2 workers on
loopback) with a driver result limit the old cohort-wide collect exceeded.
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
from bams3_spark.coverage.engine import coverage_table, write_coverage
from bams3_spark.coverage.options import CoverageOptions
from bams3_spark.dataset.reader import DatasetReader
from bams3_spark.exceptions import InvalidArgumentError
from bams3_spark.spark.cohort import plan_units, resolve_cohort
from bams3_spark.spark.coverage_job import coverage_dataframe, run_coverage
from tests.coverage.test_mosdepth import build_bam
from tests.support.cohort import hard_linked_cohort
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
    """mosdepth rules, per-base runs, two samples: references split into runs, mates resolved on executors."""
    # Planned for 8 cores, large references are cut into runs of chunks.
    units = plan_units(resolve_cohort([mates_ds, multi_ds]), 8)
    assert any(u.parts > 2 for u in units) and any(u.rname and u.parts == 1 for u in units)
    got = coverage_dataframe(spark, [mates_ds, multi_ds], cores=8)
    check(spark, got, coverage_table([mates_ds, multi_ds], workers=2))


def test_windows_mosdepth_rules(spark: Any, mates_ds: str) -> None:
    """Window means are computed exactly as mosdepth (and the local engine) do, split or not."""
    options = CoverageOptions(mapq=5)
    expected = coverage_table(mates_ds, by=300, options=options)
    check(spark, coverage_dataframe(spark, mates_ds, by=300, options=options, cores=8), expected)
    check(spark, coverage_dataframe(spark, mates_ds, by=300, options=options, split=False), expected)


def test_samtools_rules_per_base(spark: Any, multi_ds: str) -> None:
    options = CoverageOptions(mode="samtools", count_deletions=True)
    got = coverage_dataframe(spark, multi_ds, options=options, cores=8)
    check(spark, got, coverage_table(multi_ds, options=options))


@pytest.fixture(scope="module")
def cohort(work: Path) -> list[str]:
    """50 hard-linked copies of the mates dataset, samples S0000..S0049."""
    return hard_linked_cohort(build_bam(work / "cohort-src.bam"), work / "cohort", 50, max_chunk_records=2500)


@pytest.mark.parametrize("mode", ["mosdepth", "fast", "samtools"])
def test_cohort_of_50_every_sample_equals_the_local_engine(spark: Any, cohort: list[str], work: Path,
                                                            mode: str) -> None:
    """One unit per sample: each sample's rows are the local engine's for that dataset."""
    options = CoverageOptions(mode=mode)
    out = work / f"cohort-{mode}.parquet"
    result = run_coverage(spark, [str(work / "cohort" / "S*.bams3")], str(out), by=1000, options=options)
    got = pq.read_table(out)
    one = coverage_table(cohort[0], by=1000, options=options)
    n = one.num_rows
    assert got.num_rows == 50 * n
    for i, path in enumerate(cohort):
        part = got.slice(i * n, n)
        assert part.column("sample").unique().to_pylist() == [f"S{i:04d}"], path
        for col in ("rname", "start", "end", "mean_depth"):
            assert part.column(col).to_pylist() == one.column(col).to_pylist(), (path, col)
    costs = result.costs
    assert (costs.samples, costs.units) == (50, 50)
    placed = sum(r.chunks for r in DatasetReader.open(cohort[0]).manifest.references if r.name != "*")
    assert costs.tasks <= 4 * 2 and costs.chunks == 50 * placed
    assert costs.requests >= costs.chunks > 0 and costs.bytes > 0


@pytest.mark.parametrize("cores", [2, 1])
def test_mosdepth_format_files_equal_the_local_engine(spark: Any, mates_ds: str, multi_ds: str,
                                                      cohort: list[str], work: Path, cores: int) -> None:
    """--format mosdepth: each sample's files, byte for byte those of bams3 coverage for it.

    Planned for 2 cores, the 3 samples' references are the units (assembled per sample); for 1
    core, whole samples."""
    import gzip

    out = work / f"mosdepth-out{cores}"
    sheet = work / "sheet.tsv"
    sheet.write_text(f"sample\tdataset\nm/1\t{mates_ds}\nmulti\t{multi_ds}\nS\t{cohort[0]}\n")
    result = run_coverage(spark, [], str(out), by=500, fmt="mosdepth", manifest=str(sheet), thresholds=[1, 5],
                          cores=cores)
    assert result.costs.samples == 3
    assert result.costs.units > 3 if cores == 2 else result.costs.units == 3
    names = sorted(p.name for p in out.iterdir())
    assert "_SUCCESS" in names and ".parts" not in names
    for sample, ds in (("m_1", mates_ds), ("multi", multi_ds), ("S", cohort[0])):
        ref = work / f"local-{sample}"
        ref.mkdir(exist_ok=True)
        run = write_coverage(ds, str(ref / sample), by=500, thresholds=[1, 5], workers=1)
        for path in next(iter(run.paths.values())):
            mine = out / Path(path).name
            assert mine.exists(), mine
            read = gzip.decompress if path.endswith(".gz") else (lambda b: b)
            assert read(mine.read_bytes()) == read(Path(path).read_bytes()), path


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
    # Globs work; two datasets of one sample are refused in one line.
    assert job.main([str(work / "mat*.bams3"), "--out", str(work / "glob"), "--by", "5000"]) == 0
    assert "1 sample(s)" in capsys.readouterr().out
    sheet = work / "dup.tsv"
    sheet.write_text(f"X\t{mates_ds}\nX\t{multi_ds}\n")
    assert job.main(["--manifest", str(sheet), "--out", str(work / "dup")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sample 'X' appears twice" in err[0]


def _read_csv_dir(path: Path) -> pa.Table:
    import pyarrow.csv as pacsv

    return pa.concat_tables(pacsv.read_csv(p) for p in sorted(path.glob("part-*.csv")))


def test_bad_arguments(spark: Any, mates_ds: str, work: Path) -> None:
    with pytest.raises(InvalidArgumentError):
        coverage_dataframe(spark, mates_ds, by=0)
    with pytest.raises(InvalidArgumentError):
        run_coverage(spark, [mates_ds], str(work / "x"), fmt="bam")
    with pytest.raises(InvalidArgumentError, match="needs --by"):
        run_coverage(spark, [mates_ds], str(work / "x"), fmt="mosdepth", thresholds=[1])


@pytest.fixture(scope="module")
def cluster(standalone: tuple[str, Path]) -> str:
    """The session's standalone cluster (conftest.py): its master URL."""
    return standalone[0]


@pytest.mark.cluster
@pytest.mark.skipif(shutil.which("java") is None, reason="no java")
def test_spark_submit_on_a_standalone_cluster(cluster: str, mates_ds: str, multi_ds: str, cohort: list[str],
                                             work: Path, tmp_path: Path) -> None:
    """52 samples (the 50-sample cohort is the mate-overlap pile-up 50 times) with at most 1 MB of task
    results on the driver: per-read mate state never reaches it (collecting the cohort's did)."""
    out = tmp_path / "cov.parquet"
    args = [mates_ds, multi_ds, str(work / "cohort" / "S*.bams3"), "--by", "1000", "--out", str(out)]
    proc = spark_submit(cluster, JOB, args, tmp_path, conf={"spark.driver.maxResultSize": "1m"})
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, "\n".join(line for line in text.splitlines() if " INFO " not in line)[-4000:]
    assert "52 sample(s)" in text
    got = pq.read_table(out)
    expected = coverage_table([mates_ds, multi_ds], by=1000)
    assert got.schema.names == expected.schema.names
    assert got.slice(0, expected.num_rows).to_pylist() == expected.to_pylist()
    one = coverage_table(cohort[0], by=1000)
    rest = got.slice(expected.num_rows)
    assert rest.num_rows == 50 * one.num_rows
    assert rest.column("mean_depth").to_pylist() == one.column("mean_depth").to_pylist() * 50
