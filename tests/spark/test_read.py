"""``read_bams3``: planned with our metadata, scanned by Spark's Parquet reader or by Python tasks.

Expected counts come from the real ``samtools`` on the source BAMs. One
local[2] SparkSession serves the module; datasets are small (256 Kbp windows so
a BAM spans many chunk objects).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from bams3_spark import open_dataset
from bams3_spark.convert import convert
from bams3_spark.exceptions import (
    Bams3Error,
    DatasetError,
    InvalidArgumentError,
    NotADatasetError,
    RegionError,
    UnsupportedSparkError,
)
from bams3_spark.format.schema import COLUMNS
from bams3_spark.spark import compat, read_bams3
from bams3_spark.spark.read import read_schema
from tests.support.legacy import rewrite_as_format_1_0
from tests.support.oracles import CONFORMANCE_DIR, sam_to_bam, samtools

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(shutil.which("samtools") is None, reason="needs the samtools oracle"),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, multi_bam: Path) -> dict[str, Any]:
    """A multi-contig dataset, a copy under a path with a space and '#', and two conformance datasets."""
    root = tmp_path_factory.mktemp("read")
    ds = root / "a.bams3"
    convert(str(multi_bam), str(ds), chunk_size="256K")
    spaced = root / "dir with space#1" / "a.bams3"
    shutil.copytree(ds, spaced)
    # Two samples with different references: ce#5 (CHROMOSOME_*), xx#pair (xx).
    small = {}
    for name in ("ce#5", "xx#pair"):
        bam = sam_to_bam(CONFORMANCE_DIR / f"{name}.sam", root)
        out = root / "conf" / (bam.stem + ".bams3")
        convert(str(bam), str(out), allow_empty=True)
        small[name] = (bam, out)
    return {"root": root, "bam": multi_bam, "ds": ds, "spaced": spaced, "small": small}


def _count(bam: Path | str, *args: str) -> int:
    return int(samtools("view", "-c", str(bam), *args).strip())


def _idxstats(bam: Path | str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in samtools("idxstats", str(bam)).splitlines():
        name, _, mapped, unmapped = line.split("\t")
        total = int(mapped) + int(unmapped)
        if total:
            out[name] = out.get(name, 0) + total
    return out


def _plan(df: Any) -> str:
    return str(df._jdf.queryExecution().executedPlan().toString())


def _rows(df: Any, order: list[str]) -> list[tuple[Any, ...]]:
    return sorted(tuple(r) for r in df.select(*order).collect())


# ---------------------------------------------------------------------------
# The native path (Spark's Parquet reader) against samtools
# ---------------------------------------------------------------------------


def test_native_scan_counts_per_reference_equal_idxstats(
    spark: Any, data: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bams3_spark"):
        df = read_bams3(spark, str(data["ds"]), columns=["rname", "sample"])
    assert "spark scan" in caplog.text
    assert "FileScan parquet" in _plan(df)
    got = {r["rname"]: r["count"] for r in df.groupBy("rname").count().collect()}
    assert got == _idxstats(data["bam"])
    assert {r["sample"] for r in df.select("sample").distinct().collect()} == {"sampleA"}


@pytest.mark.parametrize("regions", [["chr1:250,000-600,000"], ["chr2", "chr1:1-1000", "*"],
                                     ["{HLA-DRB1*15:01:01:01}"], ["{HLA-DRB1*15:01:01:01}:100-5000"]])
def test_native_region_filter_is_htslibs_overlap_rule(
    spark: Any, data: dict[str, Any], regions: list[str]
) -> None:
    df = read_bams3(spark, str(data["ds"]), regions=regions, columns=["qname", "pos"])
    assert "FileScan parquet" in _plan(df)
    # samtools' -M (needed for several regions) misreads a braced name: one region goes without it.
    assert df.count() == _count(data["bam"], *(["-M"] if len(regions) > 1 else []), *regions)


def test_both_paths_return_the_same_schema_and_rows(spark: Any, data: dict[str, Any]) -> None:
    columns = ["qname", "flag", "pos", "end", "seq", "tags", "sample"]
    kwargs = {"region": "chr1:200,000-700,000", "columns": columns}
    native = read_bams3(spark, str(data["ds"]), scan="spark", **kwargs)
    python = read_bams3(spark, str(data["ds"]), scan="python", **kwargs)
    assert "MapInArrow" in _plan(python) and "FileScan parquet" in _plan(native)
    assert native.schema == python.schema == read_schema(kwargs["columns"])
    order = list(kwargs["columns"])
    assert _rows(native, order) == _rows(python, order)
    assert native.count() == _count(data["bam"], "chr1:200,000-700,000")


def test_every_column_equals_samtools_view(spark: Any, data: dict[str, Any]) -> None:
    df = read_bams3(spark, str(data["ds"]), region="chr2")
    assert df.columns == [*COLUMNS, "sample"]
    got = sorted(
        "\t".join(str(r[c]) for c in ("qname", "flag", "rname", "pos", "mapq", "cigar", "rnext", "pnext",
                                        "tlen", "seq", "qual"))
        for r in df.collect()
    )
    lines = samtools("view", str(data["bam"]), "chr2").splitlines()
    want = sorted("\t".join(line.split("\t")[:11]) for line in lines)
    assert got == want


def test_sample_column_from_a_path_with_space_and_hash(spark: Any, data: dict[str, Any]) -> None:
    df = read_bams3(spark, str(data["spaced"]), columns=["sample"])
    assert "FileScan parquet" in _plan(df)
    assert df.count() == _count(data["bam"])
    assert [tuple(r) for r in df.groupBy("sample").count().collect()] == [("sampleA", _count(data["bam"]))]


def test_many_datasets_get_their_sample_by_broadcast_join(spark: Any, data: dict[str, Any]) -> None:
    _, small = data["small"]["xx#pair"]
    cohort = data["root"] / "cohort70"
    for i in range(70):
        shutil.copytree(small, cohort / f"s{i:02d}.bams3")
    df = read_bams3(spark, str(cohort / "*.bams3"), columns=["pos", "sample"])
    assert "BroadcastHashJoin" in _plan(df) or "BroadcastNestedLoopJoin" in _plan(df)
    got = {r["sample"]: r["count"] for r in df.groupBy("sample").count().collect()}
    per = open_dataset(str(small)).manifest.records
    assert got == {f"s{i:02d}": per for i in range(70)}


def test_region_on_a_reference_only_some_datasets_have(spark: Any, data: dict[str, Any]) -> None:
    (_, ds_ce), (bam_xx, ds_xx) = data["small"]["ce#5"], data["small"]["xx#pair"]
    ref_xx = samtools("view", "-H", str(bam_xx)).split("SN:")[1].split("\t")[0]
    df = read_bams3(spark, [str(ds_ce), str(ds_xx)], region=ref_xx, columns=["sample"])
    got = {r["sample"]: r["count"] for r in df.groupBy("sample").count().collect()}
    assert got == {open_dataset(str(ds_xx)).sample: _count(bam_xx, ref_xx)}
    with pytest.raises(RegionError, match=r"all 2 datasets: .*unknown reference 'chrNope'"):
        read_bams3(spark, [str(ds_ce), str(ds_xx)], region="chrNope")


def test_format_1_0_datasets_stay_readable(
    spark: Any, data: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    old = data["root"] / "old" / "a.bams3"
    shutil.copytree(data["ds"], old)
    rewrite_as_format_1_0(old)
    assert open_dataset(str(old)).manifest.format_version == "1.0"
    with caplog.at_level(logging.INFO, logger="bams3_spark"):
        df = read_bams3(spark, str(old), region="chr1", columns=["seq", "qual", "qname", "tags"])
    # Spark 4's vectorized reader decodes 1.0 chunks; Spark 3.5 reads them in Python tasks.
    expected = "spark scan" if compat.vectorized_reads_format_1_0() else "python scan"
    assert expected in caplog.text
    assert df.count() == _count(data["bam"], "chr1")
    total = df.agg(F.sum(F.length("seq")).alias("n")).collect()[0]["n"]
    new = read_bams3(spark, str(data["ds"]), region="chr1", columns=["seq"])
    assert total == new.agg(F.sum(F.length("seq")).alias("n")).collect()[0]["n"]
    with pytest.raises(DatasetError, match="mixed BAMS3 format versions"):
        read_bams3(spark, [str(data["ds"]), str(old)])


def test_damaged_page_is_detected_by_the_page_checksum(spark: Any, data: dict[str, Any]) -> None:
    damaged = data["root"] / "damaged" / "a.bams3"
    shutil.copytree(data["ds"], damaged)
    chunk = open_dataset(str(damaged)).chunks("chr1")[0]
    path = damaged / chunk.info.path
    meta = pq.ParquetFile(path).metadata.row_group(0)
    seq = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == "seq")
    raw = bytearray(path.read_bytes())
    at = seq.data_page_offset + seq.total_compressed_size - 16  # inside the last page's data
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    df = read_bams3(spark, str(damaged), region="chr1", columns=["seq"])
    assert "FileScan parquet" in _plan(df)
    with pytest.raises(Exception, match="(?i)crc|checksum"):
        df.agg(F.sum(F.length("seq"))).collect()


@pytest.mark.s3
def test_fsspec_only_store_takes_the_python_path(
    spark: Any, data: dict[str, Any], s3_bucket: str, s3_opts: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"s3://{s3_bucket}/a.bams3"
    convert(str(data["bam"]), url, chunk_size="256K", storage_options=s3_opts)
    with caplog.at_level(logging.INFO, logger="bams3_spark"):
        df = read_bams3(spark, url, region="chr1:1-400000", columns=["rname", "pos", "sample"], **s3_opts)
    assert "python scan" in caplog.text and "storage options" in caplog.text
    assert df.count() == _count(data["bam"], "chr1:1-400000")
    with pytest.raises(InvalidArgumentError, match="scan='spark' impossible"):
        read_bams3(spark, url, scan="spark", **s3_opts)


# ---------------------------------------------------------------------------
# Bad input: one line, at read_bams3() time
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scan": "fast"}, InvalidArgumentError, "scan must be one of auto, spark, python"),
        ({"columns": ["pos", "nope"]}, InvalidArgumentError, "unknown column"),
        ({"region": "chr1:9-1"}, RegionError, "chr1:9-1"),
        ({"paths": "nosuchscheme://bucket/x.bams3"}, Bams3Error, "nosuchscheme"),
        ({"paths": "missing.bams3"}, NotADatasetError, "missing.bams3"),
    ],
)
def test_bad_input_fails_at_call_time_in_one_line(
    spark: Any, data: dict[str, Any], kwargs: dict[str, Any], error: type, match: str
) -> None:
    args = dict(kwargs)
    paths = args.pop("paths", str(data["ds"]))
    if paths == "missing.bams3":
        paths = str(data["root"] / "missing.bams3")
    with pytest.raises((error, OSError), match=match) as info:
        read_bams3(spark, paths, **args)
    assert "\n" not in str(info.value)


def test_unsupported_pyspark_is_named_in_one_line() -> None:
    with pytest.raises(UnsupportedSparkError, match=r"^pyspark 3\.4\.1 is not supported: .*>=3\.5,<4\.4"):
        compat.check_pyspark("3.4.1")
    with pytest.raises(UnsupportedSparkError, match="pyspark 4.4.0 is not supported"):
        compat.check_pyspark("4.4.0")
    assert compat.check_pyspark("3.5.6") == (3, 5) and compat.check_pyspark("4.3.0") == (4, 3)
    with pytest.raises(UnsupportedSparkError, match=r"needs Spark 4\.0\+ .*use bams3_spark\.read_bams3"):
        compat.require_data_source_api("3.5.6")
    assert not compat.has_filter_pushdown("4.0.2") and compat.has_filter_pushdown("4.1.0")
