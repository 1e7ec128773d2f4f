"""The ``bams3`` Spark data source, against samtools (the cohort query job: tests/spark/test_query_job.py).

Every expected count or record comes from the real ``samtools`` (1.16) run on
the source BAMs: ``idxstats`` for per-contig counts, ``view -c`` with the same
region and ``-q``/``-F``/``-e`` filters, ``view -M`` for several regions.
Datasets are converted with ``chunk_size="256K"`` so the generated BAMs span
many chunk objects. One local[2] SparkSession serves the whole module.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pysam
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from bams3_spark import open_dataset
from bams3_spark.convert import convert
from bams3_spark.dataset.chunks import ChunkRef
from bams3_spark.exceptions import (
    Bams3Error,
    DatasetError,
    IncompleteDatasetError,
    InvalidArgumentError,
    NotADatasetError,
    RegionError,
)
from bams3_spark.format.schema import COLUMNS, RECORD_SCHEMA
from bams3_spark.query import sam_bytes
from bams3_spark.spark import bams3_schema, read_bams3, register
from bams3_spark.spark.datasource import Bams3DataSource, Bams3Reader, Bams3ScanReader, load_bams3
from bams3_spark.spark.scan import scan_options
from tests.support.oracles import ROOT, samtools

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(shutil.which("samtools") is None, reason="needs the samtools oracle"),
]


# ---------------------------------------------------------------------------
# Data: three samples (SM sampleA, SM sampleB, no SM -> base name "noSM")
# ---------------------------------------------------------------------------


def _reheader(bam: Path, out: Path, edit: Callable[[str], str]) -> Path:
    header = edit(samtools("view", "-H", "--no-PG", str(bam)))
    hfile = out.with_suffix(".header.sam")
    hfile.write_text(header)
    with out.open("wb") as fh:
        subprocess.run(["samtools", "reheader", "--no-PG", str(hfile), str(bam)], check=True, stdout=fh)
    pysam.index(str(out))
    return out


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, multi_bam: Path) -> dict[str, Any]:
    """Datasets of three samples and their source BAMs."""
    from tests.support.bamgen import make_multi_contig_bam

    root = tmp_path_factory.mktemp("cohort")
    other = make_multi_contig_bam(root / "src" / "other.bam", seed=11)
    # Sample B: another SM, and quotes/backslashes in QUAL and a Z tag (CSV quoting).
    lines = []
    for i, line in enumerate(samtools("view", "-h", "--no-PG", str(other)).splitlines()):
        if line.startswith("@"):
            line = line.replace("SM:sampleA", "SM:sampleB")
        elif i % 7 == 0:
            fields = line.split("\t")
            if len(fields[10]) > 2:
                fields[10] = '"\\' + fields[10][2:]
            line = "\t".join([*fields, 'XQ:Z:a "quoted", \\ value'])
        lines.append(line)
    sam_b = root / "src" / "b.sam"
    sam_b.write_text("\n".join(lines) + "\n")
    bam_b = root / "src" / "b.bam"
    pysam.sort("-o", str(bam_b), str(sam_b))
    pysam.index(str(bam_b))
    chr2_only = root / "src" / "chr2.bam"
    pysam.view("-b", "--no-PG", "-o", str(chr2_only), str(multi_bam), "chr2", catch_stdout=False)
    bam_c = _reheader(chr2_only, root / "src" / "c.bam",
                      lambda h: "".join(line + "\n" for line in h.splitlines() if not line.startswith("@RG")))
    bams = {"sampleA": multi_bam, "sampleB": bam_b, "noSM": bam_c}
    datasets = {}
    for name, out in (("sampleA", "a.bams3"), ("sampleB", "b.bams3"), ("noSM", "noSM.bams3")):
        datasets[name] = str(root / "ds" / out)
        convert(str(bams[name]), datasets[name], chunk_size="256K", allow_empty=True)
    return {"root": root, "bams": bams, "datasets": datasets, "glob": str(root / "ds" / "*.bams3")}


@pytest.fixture(scope="module")
def ds_a(cohort: dict[str, Any]) -> str:
    return str(cohort["datasets"]["sampleA"])


@pytest.fixture(scope="module")
def bam_a(cohort: dict[str, Any]) -> str:
    return str(cohort["bams"]["sampleA"])


def samtools_count(bam: str | Path, regions: list[str] | None = None, *flags: str) -> int:
    """``samtools view -c FLAGS BAM [REGIONS...]``."""
    return int(samtools("view", "-c", *flags, str(bam), *(regions or [])).strip())


def spark_filter(df: Any) -> str | None:
    """The ``Filter`` node of the executed plan (Spark filtering rows itself), or None."""
    plan = str(df._jdf.queryExecution().executedPlan().toString())
    found = re.search(r"\bFilter\b.*", plan)
    return found.group(0) if found else None


def pushed(spark: Any, paths: Any, region: str | None = None, columns: list[str] | None = None) -> Any:
    """The data source with filter pushdown (``format("bams3")``, option ``pushdown``)."""
    return load_bams3(spark, scan_options(paths, region, pushdown=True), columns)


def sam_text(df: Any) -> str:
    """The DataFrame's records as SAM text, in DataFrame order."""
    return bytes(sam_bytes(df.toArrow())).decode()


# ---------------------------------------------------------------------------
# Schema and content
# ---------------------------------------------------------------------------


def test_schema_is_the_record_schema_plus_sample(spark: Any, ds_a: str) -> None:
    df = spark.read.format("bams3").load(ds_a)
    assert df.columns == [*COLUMNS, "sample"]
    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    for field in RECORD_SCHEMA:
        assert types[field.name] == ("int" if pa.types.is_int32(field.type) else "string")
    assert types["sample"] == "string"
    assert df.schema == bams3_schema()


def test_every_record_equals_samtools_view_in_order(spark: Any, ds_a: str, bam_a: str) -> None:
    df = spark.read.format("bams3").load(ds_a)
    assert sam_text(df) == samtools("view", "--no-PG", bam_a)
    assert {r["sample"] for r in df.select("sample").distinct().collect()} == {"sampleA"}


def test_per_contig_counts_equal_idxstats(spark: Any, ds_a: str, bam_a: str) -> None:
    expected = []
    for line in samtools("idxstats", bam_a).splitlines():
        name, _, mapped, unmapped = line.split("\t")
        # idxstats puts placed unmapped reads on their contig, unplaced ones on '*'.
        n = int(mapped) + int(unmapped)
        if n:
            expected.append((name, n))
    want = spark.createDataFrame(expected, "rname string, count long")
    got = spark.read.format("bams3").load(ds_a).groupBy("rname").count()
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)


# ---------------------------------------------------------------------------
# Regions, pushdown, pruning
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "region",
    [
        "chr1:262000-262200",  # reads straddling a window edge
        "chr2",
        "{HLA-DRB1*15:01:01:01}:100-5000",
        "*",
        "chr1:700,000-700,250",
        "chr1:1199990",
        "chrEmpty:1-1000",
    ],
)
def test_region_option_equals_samtools_and_prunes_chunks(
    spark: Any, ds_a: str, bam_a: str, region: str
) -> None:
    df = spark.read.format("bams3").option("region", region).load(ds_a)
    assert df.count() == samtools_count(bam_a, [region])
    ds = open_dataset(ds_a)
    chunks = ds.chunks(region)
    # One partition per chunk the index selects (pyspark adds one empty
    # partition when there is none).
    assert df.rdd.getNumPartitions() == max(1, len(chunks))
    assert len(chunks) < ds.manifest.chunk_count


def test_several_regions_equal_samtools_view_M(spark: Any, ds_a: str, bam_a: str) -> None:
    regions = ["chr2:5000-6000", "chr1:100000-100100", "chr1:100050-300000", "*"]
    df = spark.read.format("bams3").option("regions", json.dumps(regions)).load(ds_a)
    assert sam_text(df) == samtools("view", "--no-PG", "-M", bam_a, *regions)
    # Whitespace-separated is accepted too (commas belong to region strings).
    spaced = spark.read.format("bams3").option("regions", "chr1:100,000-100,100 chr2").load(ds_a)
    assert spaced.count() == samtools_count(bam_a, ["chr1:100,000-100,100", "chr2"], "-M")


def test_pushed_mapq_and_spark_side_flag_filters_equal_samtools(
    spark: Any, ds_a: str, bam_a: str
) -> None:
    region = "chr1:100000-800000"
    df = (
        pushed(spark, ds_a, region=region)
        .filter(F.col("mapq") >= 30)
        .filter(F.col("flag").bitwiseAND(0x904) == 0)
    )
    assert df.count() == samtools_count(bam_a, [region], "-q", "30", "-F", "0x904")
    # The bitwise test cannot be pushed and stays with Spark; mapq is pushed.
    kept = spark_filter(df)
    assert kept is not None and "flag" in kept and "mapq" not in kept


def test_pushed_filters_equal_samtools_expressions(spark: Any, ds_a: str, bam_a: str) -> None:
    df = pushed(spark, ds_a)
    cases = [
        (df.filter((F.col("rname") == "chr2") & (F.col("pos") >= 300000) & (F.col("pos") <= 650000)),
         ["chr2"], "pos >= 300000 && pos <= 650000"),
        (df.filter(F.col("rname").isin("chr1", "chr2") & (F.col("mapq") != 0)),
         ["chr1", "chr2"], "mapq != 0"),
        (df.filter((F.col("end") >= 262144) & (F.col("pos") < 262144) & (F.col("rname") == "chr1")),
         ["chr1"], "endpos >= 262144 && pos < 262144"),
        (df.filter(F.col("qname").startswith("pile") & ~F.col("flag").isin(4, 16)), [],
         'qname =~ "^pile" && flag != 4 && flag != 16'),
        (df.filter(F.col("flag") > 1000), [], "flag > 1000"),
    ]
    for frame, regions, expr in cases:
        flags = ("-M", "-e", expr) if regions else ("-e", expr)
        assert frame.count() == samtools_count(bam_a, regions, *flags), expr
        assert spark_filter(frame) is None, f"{expr}: every filter should be pushed"
    # An OR is not pushed: Spark applies it, with the same result.
    either = df.filter((F.col("mapq") < 10) | F.col("tags").contains("SA:Z:"))
    assert either.count() == samtools_count(bam_a, [], "-e", "mapq < 10 || exists([SA])")
    assert spark_filter(either) is not None
    # Spark 4.1-4.3 would reuse the last pushed plan for a query pushing no
    # filter; the guard filter of load_bams3 makes every query plan afresh.
    assert df.count() == samtools_count(bam_a)
    qnames = {line.split("\t", 1)[0] for line in samtools("view", bam_a).splitlines()}
    assert df.select("qname").distinct().count() == len(qnames)


def test_without_pushdown_spark_applies_every_filter(spark: Any, ds_a: str, bam_a: str) -> None:
    df = spark.read.format("bams3").load(ds_a)  # pushdown is opt-in on the raw format
    mapq = df.filter(F.col("mapq") >= 30)
    assert mapq.count() == samtools_count(bam_a, [], "-q", "30")
    assert spark_filter(mapq) is not None
    assert mapq.rdd.getNumPartitions() == open_dataset(ds_a).manifest.chunk_count
    assert df.count() == samtools_count(bam_a)


def test_pushfilters_returns_exactly_the_filters_it_does_not_apply(ds_a: str, bam_a: str) -> None:
    from pyspark.sql.datasource import (
        EqualTo,
        GreaterThanOrEqual,
        In,
        IsNotNull,
        LessThan,
        Not,
        StringContains,
        StringStartsWith,
    )

    reader = Bams3DataSource({"path": ds_a, "pushdown": "true"}).reader(bams3_schema())
    assert isinstance(reader, Bams3Reader)
    kept = [GreaterThanOrEqual(("mapq",), 30), Not(In(("flag",), (4, 16))), EqualTo(("rname",), "chr2"),
            StringStartsWith(("qname",), "r1"), IsNotNull(("seq",)), LessThan(("pos",), 600000)]
    left = [EqualTo(("mapq",), 1.5), StringContains(("pos",), "1"), EqualTo(("tlen",), None),
            In(("flag",), (1, None)), EqualTo(("nested", "x"), 1), GreaterThanOrEqual(("pos",), True)]
    returned = list(reader.pushFilters(kept + left))
    assert len(returned) == len(left) and all(a is b for a, b in zip(returned, left, strict=True))
    parts = reader.partitions()
    assert {p.chunk.rname for p in parts} == {"chr2"}
    rows = pa.Table.from_batches([b for p in parts for b in reader.read(p)])
    expr = 'mapq >= 30 && flag != 4 && flag != 16 && qname =~ "^r1" && pos < 600000'
    assert rows.num_rows == samtools_count(bam_a, ["chr2"], "-e", expr)


def test_chunk_pruning_is_visible_in_the_number_of_partitions(spark: Any, cohort: dict[str, Any]) -> None:
    ds_a = cohort["datasets"]["sampleA"]
    ds = open_dataset(ds_a)
    df = pushed(spark, ds_a)
    assert df.rdd.getNumPartitions() == ds.manifest.chunk_count
    assert df.filter(F.col("rname") == "chr2").rdd.getNumPartitions() == ds.reference_entry("chr2").chunks
    # pos bounds prune by the index's min/max start.
    late = df.filter((F.col("rname") == "chr1") & (F.col("pos") > 1_000_000))
    expected = [c for c in ds.index("chr1").chunks if c.max_start > 1_000_000]
    assert late.rdd.getNumPartitions() == len(expected) < ds.reference_entry("chr1").chunks
    nothing = df.filter(F.col("pos") < 0)
    assert nothing.rdd.getNumPartitions() == 1 and nothing.count() == 0
    one = pushed(spark, cohort["glob"]).filter(F.col("sample") == "sampleB")
    assert one.rdd.getNumPartitions() == open_dataset(cohort["datasets"]["sampleB"]).manifest.chunk_count


# ---------------------------------------------------------------------------
# Cohorts
# ---------------------------------------------------------------------------


def test_multi_sample_load_has_a_correct_sample_column(spark: Any, cohort: dict[str, Any]) -> None:
    expected = [(s, samtools_count(b)) for s, b in cohort["bams"].items()]
    want = spark.createDataFrame(expected, "sample string, count long")
    by_glob = spark.read.format("bams3").load(cohort["glob"])
    assert_df_equality(by_glob.groupBy("sample").count(), want, ignore_row_order=True, ignore_nullable=True)
    # A list of paths plans the same chunks (in the order given).
    by_list = spark.read.format("bams3").load(list(cohort["datasets"].values()))
    assert by_list.rdd.getNumPartitions() == by_glob.rdd.getNumPartitions() == sum(
        open_dataset(d).manifest.chunk_count for d in cohort["datasets"].values()
    )
    # The same per sample, for one region, reading only the sample column.
    region = "chr2:100000-400000"
    want = spark.createDataFrame(
        [(s, samtools_count(b, [region])) for s, b in cohort["bams"].items()], "sample string, count long"
    )
    counts = read_bams3(spark, cohort["glob"], columns=["sample"], region=region).groupBy("sample").count()
    assert_df_equality(counts, want, ignore_row_order=True, ignore_nullable=True)


def test_each_sample_keeps_its_own_records(spark: Any, cohort: dict[str, Any]) -> None:
    df = spark.read.format("bams3").option("region", "chr2:1-200000").load(cohort["glob"])
    for sample, bam in cohort["bams"].items():
        one = df.filter(F.col("sample") == sample)
        assert sam_text(one) == samtools("view", "--no-PG", str(bam), "chr2:1-200000"), sample


# ---------------------------------------------------------------------------
# Column projection
# ---------------------------------------------------------------------------


def test_user_schema_projects_columns(spark: Any, ds_a: str, bam_a: str) -> None:
    projected = spark.read.format("bams3").schema("rname string, POS int, sample string").load(ds_a)
    full = spark.read.format("bams3").load(ds_a).select("rname", F.col("pos").alias("POS"), "sample")
    assert projected.columns == ["rname", "POS", "sample"]
    assert_df_equality(projected, full, ignore_row_order=True, ignore_nullable=True)
    helper = read_bams3(spark, ds_a, columns=["pos", "rname"], region="chr2")
    assert helper.columns == ["rname", "pos"]
    assert helper.count() == samtools_count(bam_a, ["chr2"])


def test_reader_reads_only_the_needed_columns(ds_a: str, bam_a: str, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []
    real_read = ChunkRef.read

    def spy(self: ChunkRef, columns: list[str] | None = None) -> pa.Table:
        asked.append(list(columns or COLUMNS))
        return real_read(self, columns)

    monkeypatch.setattr(ChunkRef, "read", spy)
    source = Bams3DataSource({"path": ds_a, "region": "chr1:262000-300000"})
    schema = bams3_schema(["rname", "mapq", "sample"])
    reader = source.reader(schema)
    assert isinstance(reader, Bams3ScanReader) and not isinstance(reader, Bams3Reader)
    parts = reader.partitions()
    shipped = pickle.loads(pickle.dumps(reader))  # as the executors get it
    assert shipped._scan is None
    batches = [b for p in parts for b in shipped.read(p)]
    # The region cuts these chunks: pos/end are read for the overlap test only.
    assert asked and all(cols == ["rname", "pos", "end", "mapq"] for cols in asked)
    from pyspark.sql.pandas.types import to_arrow_schema

    assert all(b.schema == to_arrow_schema(schema, timezone="UTC") for b in batches)
    # Only the sample column and a chunk entirely inside the region: no read at all.
    asked.clear()
    inside = Bams3DataSource({"path": ds_a, "region": "chr1"}).reader(bams3_schema(["sample"]))
    rows = sum(b.num_rows for p in inside.partitions() for b in inside.read(p))
    assert rows == samtools_count(bam_a, ["chr1"]) and asked == []


def test_bad_user_schema_fails_on_the_driver(spark: Any, ds_a: str) -> None:
    bad = (("foo int", "unknown column 'foo'"), ("pos string", "column 'pos' is int, not string"))
    for ddl, message in bad:
        df = spark.read.format("bams3").schema(ddl).load(ds_a)
        with pytest.raises(Exception, match=message):
            df.count()
    with pytest.raises(InvalidArgumentError, match="unknown column"):
        read_bams3(spark, ds_a, columns=["foo"])


# ---------------------------------------------------------------------------
# Bad input: clear errors at load() time
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken(cohort: dict[str, Any]) -> dict[str, str]:
    root: Path = cohort["root"] / "broken"
    src = Path(cohort["datasets"]["sampleB"])
    empty = root / "empty"
    empty.mkdir(parents=True)
    incomplete = root / "incomplete.bams3"
    shutil.copytree(src, incomplete)
    (incomplete / "bams3.json").unlink()
    newer = root / "newer.bams3"
    shutil.copytree(src, newer)
    manifest = json.loads((newer / "bams3.json").read_text())
    manifest["format_version"], manifest["sample"] = "1.0", "sampleV"
    (newer / "bams3.json").write_text(json.dumps(manifest))
    return {"empty": str(empty), "incomplete": str(incomplete), "newer": str(newer)}


BAD_LOADS = [
    ("empty", {}, "not a BAMS3 dataset", NotADatasetError),
    ("incomplete", {}, "incomplete dataset", IncompleteDatasetError),
    ("mixed", {}, "mixed BAMS3 format versions", DatasetError),
    ("a", {"regoin": "chr1"}, "unknown option.*regoin", InvalidArgumentError),
    ("a", {"anon": "maybe"}, "'anon': expected true or false", InvalidArgumentError),
    ("a", {"region": "chrZ:1-10"}, "unknown reference 'chrZ'", RegionError),
    ("a", {"region": "chr1:20-10"}, "end 10 is before start 20", RegionError),
    ("a", {"regions": "[1, 2]"}, "not a JSON array of strings", InvalidArgumentError),
    ("a", {"batch_rows": "0"}, "positive integer", InvalidArgumentError),
    ("nomatch", {}, "no dataset matches", NotADatasetError),
    ("duplicate", {}, "sample 'sampleA' appears twice", DatasetError),
]


@pytest.mark.parametrize(("target", "options", "message", "error"), BAD_LOADS)
def test_bad_input_fails_at_load_with_one_clear_message(
    spark: Any, cohort: dict[str, Any], broken: dict[str, str], target: str, options: dict[str, str],
    message: str, error: type[Exception],
) -> None:
    a = cohort["datasets"]["sampleA"]
    paths: Any = {
        "a": a,
        "mixed": [a, broken["newer"]],
        "nomatch": str(cohort["root"] / "ds" / "*.nothing"),
        "duplicate": [a, str(cohort["root"] / "copy.bams3")],
    }.get(target) or broken[target]
    if target == "duplicate" and not (cohort["root"] / "copy.bams3").exists():
        shutil.copytree(a, cohort["root"] / "copy.bams3")
    reader = spark.read.format("bams3").options(**options)
    with pytest.raises(Exception, match=message) as info:
        reader.load(paths)  # load() itself fails: no action needed
    assert "Failed to create Python data source" in str(info.value)
    # The helper raises the package's own error, with the same message.
    storage = {k: v for k, v in options.items() if k not in ("region", "regions")}
    with pytest.raises(error, match=message):
        read_bams3(spark, paths, region=options.get("region"),
                   regions=json.loads(options["regions"]) if "regions" in options else None, **storage)


# ---------------------------------------------------------------------------
# S3: executors read from the moto endpoint
# ---------------------------------------------------------------------------


@pytest.mark.s3
def test_executors_read_datasets_from_s3(spark: Any, s3_bucket: str, s3_opts: dict[str, str],
                                          cohort: dict[str, Any]) -> None:
    bam_a = cohort["bams"]["sampleA"]
    url = f"s3://{s3_bucket}/cohort/a.bams3"
    convert(str(bam_a), url, chunk_size="256K", storage_options=s3_opts)
    convert(str(cohort["bams"]["noSM"]), f"s3://{s3_bucket}/cohort/noSM.bams3", chunk_size="256K",
            storage_options=s3_opts)
    df = spark.read.format("bams3").option("endpoint_url", s3_opts["endpoint_url"]).load(url)
    expected = []
    for line in samtools("idxstats", str(bam_a)).splitlines():
        name, _, mapped, unmapped = line.split("\t")
        if int(mapped) + int(unmapped):
            expected.append((name, int(mapped) + int(unmapped)))
    want = spark.createDataFrame(expected, "rname string, count long")
    assert_df_equality(df.groupBy("rname").count(), want, ignore_row_order=True, ignore_nullable=True)
    region = "chr2:100000-400000"
    cohort_df = (spark.read.format("bams3").option("s3_endpoint", s3_opts["endpoint_url"])
                 .option("region", region).load(f"s3://{s3_bucket}/cohort/*.bams3"))
    got = {r["sample"]: r["count"] for r in cohort_df.groupBy("sample").count().collect()}
    assert got == {s: samtools_count(cohort["bams"][s], [region]) for s in ("sampleA", "noSM")}


# ---------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------


def test_register_is_idempotent(spark: Any, ds_a: str) -> None:
    register(spark)
    register(spark)
    import bams3_spark

    bams3_spark.register(spark)
    assert spark.read.format("bams3").load(ds_a).rdd.getNumPartitions() > 1


def test_pyspark_automatic_lookup_finds_the_source() -> None:
    # Run pyspark's own lookup worker code, as Spark does in a Python process
    # with the installed packages on the path (here the repository root).
    code = """
import io, json, pickle, struct, sys
from pyspark.sql.worker import lookup_data_sources
out = io.BytesIO()
lookup_data_sources._main(io.BytesIO(), out)
data, found = out.getvalue(), {}
n, = struct.unpack(">i", data[:4]); at = 4
for _ in range(n):
    ln, = struct.unpack(">i", data[at:at + 4]); name = data[at + 4:at + 4 + ln].decode(); at += 4 + ln
    ln, = struct.unpack(">i", data[at:at + 4]); cls = pickle.loads(data[at + 4:at + 4 + ln]); at += 4 + ln
    found[name] = cls.__module__ + "." + cls.__qualname__
heavy = ("fsspec", "bams3_spark.dataset")
print(json.dumps({"found": found, "light": not any(m in sys.modules for m in heavy)}))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["found"].get("bams3") == "bams3_spark.spark.datasource.Bams3DataSource"
    assert result["light"]


def test_one_line_extracts_the_python_cause_of_a_spark_error(spark: Any, cohort: dict[str, Any]) -> None:
    from bams3_spark.spark.jobs import spark_error_line as one_line

    with pytest.raises(Exception) as info:
        spark.read.format("bams3").option("region", "chrZ").load(cohort["datasets"]["sampleA"])
    assert one_line(info.value).endswith("unknown reference 'chrZ'")
    assert isinstance(RegionError("x"), Bams3Error)
