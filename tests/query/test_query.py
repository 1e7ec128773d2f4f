"""Region queries (`bams3 query`, `export`, `chunks`, `cat` and the library API)
against samtools 1.16 as the oracle: same records, same order, same counts.

Datasets are converted from the htslib conformance files (read in place) and
from the generated multi-contig BAM (tests/bamgen.py) with 256 Kbp windows and
at most 300 records per chunk, so regions cross windows and split windows.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bams3_spark
from bams3_spark import Dataset, open_dataset
from bams3_spark.cli import main
from bams3_spark.convert import convert
from bams3_spark.dataset.chunks import FOOTER_READ
from bams3_spark.exceptions import FilterError, RegionError
from bams3_spark.format.regions import Region
from bams3_spark.io.storage import CountingStorage
from bams3_spark.query import Query, compile_filter, plan_query, write_sam
from tests.support.oracles import conformance_files, sam_to_bam

pytestmark = pytest.mark.skipif(shutil.which("samtools") is None, reason="samtools (oracle) missing")

WINDOW = 262_144


# --------------------------------------------------------------------------
# Oracles and helpers
# --------------------------------------------------------------------------


def st_view(*args: str) -> bytes:
    """Run `samtools view` and return its stdout; fail if it rejected a region."""
    proc = subprocess.run(["samtools", "view", *args], capture_output=True, check=True)
    assert b"invalid region" not in proc.stderr, proc.stderr
    return proc.stdout


def st_count(*args: str) -> int:
    return int(st_view("-c", *args))


def sam_of(ds: Dataset, regions: object = None, workers: int = 16, **kw: object) -> bytes:
    buf = io.BytesIO()
    write_sam(buf, ds.query_batches(regions, workers=workers, **kw), None)  # type: ignore[arg-type]
    return buf.getvalue()


def run_cli(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, bytes, str]:
    """Run `bams3 ARGV` in-process; return (exit status, stdout, stderr)."""
    capsysbinary.readouterr()
    code = main(list(argv))
    out, err = capsysbinary.readouterr()
    return code, out, err.decode()


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def braced(name: str) -> str:
    return f"{{{name}}}" if ":" in name else name


def regions_for(ds: Dataset, seed: int = 1) -> list[str]:
    """Many regions: whole references, ends, window edges, read boundaries, past the end."""
    rng = random.Random(seed)
    out: list[str] = []
    for name, length in ds.references:
        n = braced(name)
        out += [n, f"{n}:1-{length}", f"{n}:{length}", f"{n}:1-1", f"{n}:{max(1, length // 2)}-{length}"]
        out += [f"{n}:{length + 1}-{length + 100}", f"{n}:{length}-{length + 5}"]
        for edge in range(WINDOW, length, WINDOW):
            # 1-based `edge` is the last base of a window, `edge + 1` the first of the next.
            out += [f"{n}:{edge}-{edge + 1}", f"{n}:{edge + 1}-{edge + 1}", f"{n}:{edge - WINDOW + 1}-{edge}"]
            out += [f"{n}:{edge - 200}-{edge}", f"{n}:{edge + 1}-{edge + 300}"]
        for chunk in ds.chunks(name)[:4]:
            table = chunk.read(["pos", "end"])
            spans = list(zip(table["pos"].to_pylist(), table["end"].to_pylist(), strict=True))
            for pos, end in rng.sample(spans, min(2, len(spans))):
                # Touching a read's first or last base, or just missing it.
                out += [f"{n}:{pos}-{pos}", f"{n}:{end}-{end + 10}", f"{n}:{end + 1}-{end + 50}"]
                out += [f"{n}:{max(1, pos - 50)}-{max(1, pos - 1)}"]
    if ds.manifest.records:
        out.append("*")
    return out


@pytest.fixture(scope="module")
def conformance_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Every htslib conformance file as (sorted, indexed BAM, dataset path)."""
    root = tmp_path_factory.mktemp("conf")
    out = {}
    for sam in conformance_files():
        bam = sam_to_bam(sam, root)
        ds = root / (bam.stem + ".bams3")
        convert(str(bam), str(ds), chunk_size="256K", allow_empty=True)
        out[sam.name] = (bam, str(ds))
    return out


@pytest.fixture(scope="module")
def multi(multi_bam: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The generated BAM and its dataset (256 Kbp windows, split at 300 records)."""
    out = tmp_path_factory.mktemp("multi") / "multi.bams3"
    convert(str(multi_bam), str(out), chunk_size="256K", max_chunk_records=300)
    return multi_bam, str(out)


@pytest.fixture(scope="module")
def multi_big(multi_bam: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The generated BAM with 1 Mbp windows: chunks big enough for ranged projections."""
    out = tmp_path_factory.mktemp("big") / "big.bams3"
    convert(str(multi_bam), str(out), chunk_size="1M")
    return str(out)


@pytest.fixture(scope="module")
def colons(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """References whose names contain colons and braces, and an ambiguous pair."""
    root = tmp_path_factory.mktemp("colons")
    refs = [
        ("chr1", 5000),
        ("chr1:100-200", 5000),
        ("a:b", 3000),
        ("x:1", 3000),
        ("x", 3000),
        ("HLA-A*01:01", 3000),
        ("weird{name}", 3000),
        ("chr2", 4000),
    ]
    rng = random.Random(3)
    lines = ["@HD\tVN:1.6\tSO:unsorted"] + [f"@SQ\tSN:{n}\tLN:{ln}" for n, ln in refs]
    for i, (name, length) in enumerate(refs * 30):
        pos = rng.randint(1, length - 20)
        lines.append(f"q{i}\t0\t{name}\t{pos}\t{rng.randint(0, 60)}\t20M\t*\t0\t0\t{'A' * 20}\t{'I' * 20}")
    sam = root / "colons.sam"
    sam.write_text("\n".join(lines) + "\n")
    bam = sam_to_bam(sam, root)
    ds = root / "colons.bams3"
    convert(str(bam), str(ds), chunk_size="256K")
    return bam, str(ds)


# --------------------------------------------------------------------------
# Records, order and counts equal samtools
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [p.name for p in conformance_files()])
def test_conformance_regions_match_samtools(name: str, conformance_sets: dict[str, tuple[Path, str]]) -> None:
    bam, url = conformance_sets[name]
    ds = open_dataset(url)
    assert sam_of(ds) == st_view(str(bam))
    regions = regions_for(ds)
    if not regions:
        return
    expected = st_view(str(bam), *regions)
    assert sam_of(ds, regions, workers=1) == expected
    assert sam_of(ds, regions, workers=8) == expected
    assert ds.count(regions, workers=1) == ds.count(regions, workers=8) == st_count(str(bam), *regions)


def test_multi_contig_regions_match_samtools(multi: tuple[Path, str]) -> None:
    bam, url = multi
    ds = open_dataset(url)
    regions = regions_for(ds) + ["chr1:1-300000", "chr1:1-300000", "chr2:1-8000", "chr1:3000-4000", "."]
    assert len(regions) > 400
    expected = st_view(str(bam), *regions)
    assert sam_of(ds, regions, workers=1) == expected
    assert sam_of(ds, regions, workers=8) == expected
    assert ds.count(regions, workers=1) == ds.count(regions, workers=8) == st_count(str(bam), *regions)


def test_per_region_counts_match_samtools(multi: tuple[Path, str]) -> None:
    bam, url = multi
    ds = open_dataset(url)
    for region in random.Random(5).sample(regions_for(ds, seed=2), 40) + [
        "*",
        "chr1",
        "{HLA-DRB1*15:01:01:01}",
    ]:
        assert ds.count(region) == st_count(str(bam), region), region


def test_duplicate_and_overlapping_regions_repeat_records_like_samtools(multi: tuple[Path, str]) -> None:
    bam, url = multi
    ds = open_dataset(url)
    one = sam_of(ds, ["chr1:1-300000"])
    assert (
        sam_of(ds, ["chr1:1-300000", "chr1:1-300000"])
        == one + one
        == st_view(str(bam), "chr1:1-300000", "chr1:1-300000")
    )
    # Regions are answered in the given order, not sorted.
    assert sam_of(ds, ["chr2:1-8000", "chr1:1-5000"]) == st_view(str(bam), "chr2:1-8000", "chr1:1-5000")


# htslib's region syntax, with samtools deciding which strings are valid.
MULTI_REGION_STRINGS = [
    "chr1:0-100",
    "chr1:-100",
    "chr1:100-50",
    "chr1:abc",
    "chr1:1,000-20,000",
    "chr1:1k-20k",
    "chr1:1.5k-20k",
    "chr1:1e3-2e4",
    "chr1:100-",
    "chr1:1000-1000",
    "chr1:+1000-2000",
    "chr1: 1000",
    "chr1:1000 - 2000",
    "chr1:1000-2000x",
    "chr1:",
    "HLA-DRB1*15:01:01:01",
    "HLA-DRB1*15:01:01:01:1-5000",
    "{HLA-DRB1*15:01:01:01}:1-5000",
    "{HLA-DRB1*15:01:01:01}",
    "HLA-DRB1*15:01:01",
    "{chr1",
    "chr1}",
    "{chr1}x",
    "chr1:1-2:3",
    "chr1:0",
    "chr1:-0",
    "chr1:0-0",
    "chr1:1-0",
    "chr1:5-5",
    "chr1:2000000",
    "chr1:1199999-5000000",
    "chr1:-1-5",
    "chr1:1,0,0,0-2000",
    "chr1:3e5",
    "chr1:300k-",
    "chr1:2M",
    "chr1:0.5M-1M",
    "chr1:1-1.5",
    "chr1:-",
    # (samtools 1.16 crashes on "chr1:99999999999999999999": no oracle for it.)
    "chr1:--5",
    "chr1:5--10",
    "chr1:1-2-3",
    "chr1:1-99999999999999999999",
    "chr1:9999999999999999999",
    "chr1:1-9999999999999999999",
    "chr1:1e99",
    "chr1:1e999999999",
    "{}",
    "{}:1-5",
    "",
    ":",
    ":1-5",
    "chr1::",
    " chr1",
    "chr1 ",
    "chr1:0x10",
    "chr1:1E3",
    "chr1:1e",
    "chr1:1e+3-2e+4",
    "chr1:5g",
    "chr2:699971",
    "chr2:699970-699971",
    "chrEmpty",
    "chrEmpty:1-100",
    "chr9",
    "chr1_KI270706v1_random:1-100000",
]
COLON_REGION_STRINGS = [
    "chr1:100-200",
    "{chr1:100-200}",
    "{chr1}:100-200",
    "{chr1:100-200}:1-2000",
    "chr1:100-200:1-2000",
    "a:b",
    "a:b:1-100",
    "{a:b}:1-2000",
    "a",
    "x:1",
    "{x}:1",
    "{x:1}",
    "x:1:1-100",
    "x:1-100",
    "HLA-A*01:01",
    "HLA-A*01:01:1-1000",
    "HLA-A*01",
    "weird{name}",
    "{weird{name}}",
    "weird{name}:1-1000",
    "{weird{name}:1-1000",
    "chr2",
    "chr1",
    "chr1:1-100",
]


def _compare_region_string(bam: Path, ds: Dataset, region: str) -> None:
    proc = subprocess.run(["samtools", "view", str(bam), region], capture_output=True, check=True)
    rejected = b"invalid region" in proc.stderr
    if rejected:
        with pytest.raises(RegionError):
            sam_of(ds, [region])
    else:
        assert sam_of(ds, [region]) == proc.stdout, region


@pytest.mark.parametrize("region", MULTI_REGION_STRINGS)
def test_region_syntax_like_samtools(region: str, multi: tuple[Path, str]) -> None:
    bam, url = multi
    _compare_region_string(bam, open_dataset(url), region)


@pytest.mark.parametrize("region", COLON_REGION_STRINGS)
def test_names_with_colons_and_braces_like_samtools(region: str, colons: tuple[Path, str]) -> None:
    bam, url = colons
    _compare_region_string(bam, open_dataset(url), region)


def test_region_objects_and_dot(multi: tuple[Path, str]) -> None:
    bam, url = multi
    ds = open_dataset(url)
    assert sam_of(ds, Region("chr2", 1000, 9000)) == st_view(str(bam), "chr2:1001-9000")
    assert sam_of(ds, ".") == sam_of(ds) == st_view(str(bam))
    with pytest.raises(RegionError, match="chrNope"):
        ds.query(Region("chrNope", 0, 10))


# --------------------------------------------------------------------------
# BED files: samtools view --regions-file (= -M -L)
# --------------------------------------------------------------------------

BED = """# a comment
track name=x
browser position chr1

chr2\t0\t8000
chr1\t0\t5000
chr1\t4000\t300000
chr1\t262143\t262145
nosuch\t0\t100
HLA-DRB1*15:01:01:01\t100\t5000\tname\t0\t+
scaffold_3 2000 2500
chr2 400000
chr1\t1199990\t1300000
"""


def test_regions_file_like_samtools(multi: tuple[Path, str], tmp_path: Path) -> None:
    bam, url = multi
    ds = open_dataset(url)
    bed = tmp_path / "r.bed"
    bed.write_text(BED)
    expected = st_view("--regions-file", str(bed), str(bam))
    assert expected == st_view("-L", str(bed), str(bam))
    with pytest.warns(UserWarning, match="nosuch"):
        assert sam_of(ds, regions_file=str(bed), workers=1) == expected
    with pytest.warns(UserWarning):
        assert ds.count(regions_file=str(bed)) == expected.count(b"\n")
    # With regions too: the intersection, each record once, in file order.
    regions = [
        "chr1:3000-270000",
        "chr2:2000-3000",
        "chr1:3400-3500",
        "scaffold_1",
        "HLA-DRB1*15:01:01:01:1-3000",
    ]
    with pytest.warns(UserWarning):
        assert sam_of(ds, regions, regions_file=str(bed)) == st_view(
            "--regions-file", str(bed), str(bam), *regions
        )
    # gzip-compressed BED files are read too.
    gz = tmp_path / "r.bed.gz"
    gz.write_bytes(gzip.compress(BED.encode()))
    with pytest.warns(UserWarning):
        assert sam_of(ds, regions_file=str(gz)) == expected


def test_regions_file_cli(
    multi: tuple[Path, str], tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    bam, url = multi
    bed = tmp_path / "r.bed"
    bed.write_text(BED)
    code, out, err = run_cli(capsysbinary, "query", url, "--regions-file", str(bed), "--parallel", "4")
    assert code == 0
    assert out == st_view("--regions-file", str(bed), str(bam))
    assert "warning" in err and "nosuch" in err
    code, out, _ = run_cli(capsysbinary, "query", url, "--regions-file", str(bed), "-c")
    assert int(out) == st_count("--regions-file", str(bed), str(bam))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("chr1\t100\t50\n", "before start"),
        ("chr1\t100\t100\n", "empty interval"),
        ("chr1\n", "expected 'NAME START END'"),
        ("chr1\tabc\t100\n", "expected 'NAME START END'"),
        ("nosuch\t1\t100\n", "no interval on the dataset's references"),
    ],
)
def test_bad_regions_file(
    text: str,
    message: str,
    multi: tuple[Path, str],
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    bam, url = multi
    bed = tmp_path / "bad.bed"
    bed.write_text(text)
    # samtools refuses these too (exit status 1), or skips the line and selects nothing.
    code, _, err = run_cli(capsysbinary, "query", url, "--regions-file", str(bed))
    assert code == 1
    assert message in err.strip().splitlines()[-1]
    assert len([line for line in err.splitlines() if "error" in line]) == 1


# --------------------------------------------------------------------------
# Filters (pyarrow compute) against samtools' own filters
# --------------------------------------------------------------------------

FILTERS = [
    ("mapq >= 30", ["-q", "30"]),
    ("flag & 1024 == 0", ["-F", "1024"]),
    ("flag & 16 != 0", ["-f", "16"]),
    ("mapq >= 30 and flag & 1024 == 0", ["-q", "30", "-F", "1024"]),
    ("pos >= 100000 and end <= 200000", ["-e", "pos >= 100000 && endpos <= 200000"]),
    ("not (mapq < 10 or tlen > 0)", ["-e", "!(mapq < 10 || tlen > 0)"]),
    ('"RG:Z:rg1" in tags', ["-e", '[RG] == "rg1"']),
    ('rname in ("chr2", "scaffold_3")', ["-e", 'rname == "chr2" || rname == "scaffold_3"']),
    ("end - pos + 1 >= 150", ["-e", "endpos - pos + 1 >= 150"]),
    ("10 <= mapq < 40", ["-e", "mapq >= 10 && mapq < 40"]),
    ("flag & (4 | 8) == 0 and ~flag & 2 == 0", ["-F", "12", "-f", "2"]),
    ("mapq not in (0, 60)", ["-e", "mapq != 0 && mapq != 60"]),
]


@pytest.mark.parametrize(("expr", "samtools_args"), FILTERS, ids=[f for f, _ in FILTERS])
def test_filters_match_samtools(expr: str, samtools_args: list[str], multi: tuple[Path, str]) -> None:
    bam, url = multi
    ds = open_dataset(url)
    for regions in ([], ["chr1:1-600000", "chr2", "*"]):
        expected = st_view(*samtools_args, str(bam), *regions)
        assert sam_of(ds, regions or None, filter=expr) == expected
        assert ds.count(regions or None, filter=expr) == expected.count(b"\n")


def test_filter_reads_only_needed_columns() -> None:
    assert compile_filter("mapq >= 30 and flag & 1024 == 0").columns == ("flag", "mapq")
    assert compile_filter('"NM:i:0" in tags').columns == ("tags",)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("mapq >=", "syntax error"),
        ("mapqq >= 3", "unknown column 'mapqq'"),
        ("mapq >= 'x'", "cannot compare int with str"),
        ("mapq + 1", "not a condition"),
        ("__import__('os').system('true')", "unsupported syntax"),
        ("mapq.real > 1", "unsupported syntax"),
        ("not mapq", "'not' needs a condition"),
        ("rname in (1, 2)", "must hold str literals"),
        ("mapq in tags", "'in' needs"),
        ("mapq > 1 in (1,)", "cannot be chained"),
        ("mapq >= 99999999999999999999", "out of range"),
        ("(" * 500 + "mapq" + ")" * 500 + " > 1", "syntax error|nested"),
        ("x" * 5000, "too long"),
    ],
)
def test_bad_filters(expr: str, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        compile_filter(expr)


def test_bad_filter_cli(multi: tuple[Path, str], capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    _, url = multi
    code, out, err = run_cli(capsysbinary, "query", url, "chr1", "--filter", "mapq >= 'high'")
    assert out == b""
    assert_one_line_error(code, err, "bams3 query: error:", "filter", "mapq >= 'high'")


def test_filter_overflow_is_an_error_not_a_wrong_answer(multi: tuple[Path, str]) -> None:
    _, url = multi
    with pytest.raises(FilterError, match="overflow"):
        open_dataset(url).count("chr1", filter="pos * 9223372036854775807 > 0")


# --------------------------------------------------------------------------
# Reading little: index-only counts, column projection, explain
# --------------------------------------------------------------------------


def test_count_answers_whole_chunks_from_the_index(multi: tuple[Path, str]) -> None:
    bam, url = multi
    ds = open_dataset(url)
    counting = CountingStorage(ds.storage)
    # Every chunk of chr1_KI270706v1_random and of '*' lies wholly inside the region.
    for region in ("chr1_KI270706v1_random", "*"):
        plan = plan_query(ds, [region])
        assert all(t.whole for t in plan.tasks)
        assert Query(plan, storage=counting).count() == st_count(str(bam), region)
    assert counting.data_requests == 0


def test_count_reads_only_pos_and_end_with_ranged_reads(multi_bam: Path, multi_big: str) -> None:
    ds = open_dataset(multi_big)
    big = max(ds.chunks("chr1"), key=lambda c: c.info.bytes)
    assert big.info.bytes > 2 * FOOTER_READ  # a real projection, not a whole-object read
    lo, hi = big.info.min_start + 1000, big.info.max_start - 1000
    region = f"chr1:{lo}-{hi}"
    plan = plan_query(ds, [region])
    counting = CountingStorage(ds.storage)
    assert Query(plan, storage=counting).count() == st_count(str(multi_bam), region)
    touched = sum(t.chunk.info.bytes for t in plan.tasks)
    # Per chunk read: the footer (object tail), then one coalesced read of the
    # pos and end column chunks, and nothing else.
    partial = [t.chunk for t in plan.tasks if not t.whole]
    assert partial and counting.data_requests == 2 * len(partial)
    expected = 0
    for chunk in partial:
        group = pq.ParquetFile(chunk.url).metadata.row_group(0)
        columns = [group.column(i) for i in range(group.num_columns)]
        expected += FOOTER_READ + sum(
            c.total_compressed_size for c in columns if c.path_in_schema in ("pos", "end")
        )
    assert counting.data_bytes == expected < 0.6 * touched
    # Reading the records fetches each object whole and verifies its checksum.
    counting = CountingStorage(ds.storage)
    table = Query(plan, storage=counting).table()
    assert table.num_rows == st_count(str(multi_bam), region)
    assert counting.data_bytes == touched


def test_projection_and_explicit_columns(multi_bam: Path, multi_big: str) -> None:
    ds = bams3_spark.open_dataset(multi_big)
    table = ds.query("chr2:100000-300000", columns=["qname", "mapq"], filter="mapq >= 20")
    assert table.schema.names == ["qname", "mapq"]
    assert table.column("qname").to_pylist() == [
        line.split("\t")[0]
        for line in st_view("-q", "20", str(multi_bam), "chr2:100000-300000").decode().splitlines()
    ]
    empty = ds.query("chrEmpty", columns=["pos"])
    assert empty.num_rows == 0 and empty.schema.names == ["pos"]
    with pytest.raises(ValueError, match="unknown column"):
        ds.query("chr1", columns=["nope"])


@pytest.mark.parametrize("workers", [1, 8])
def test_regions_sharing_a_chunk_read_it_once(multi: tuple[Path, str], workers: int) -> None:
    bam, url = multi
    ds = open_dataset(url)
    # 60 small regions inside the first window of chr1, some repeated.
    regions = [f"chr1:{p}-{p + 3000}" for p in range(1000, 250000, 4000)] + ["chr1:5000-9000"] * 3
    plan = plan_query(ds, regions)
    distinct = {t.chunk.info.path for t in plan.tasks}
    assert len(plan.tasks) > 3 * len(distinct)
    counting = CountingStorage(ds.storage)
    out = io.BytesIO()
    write_sam(out, Query(plan, storage=counting).tables(workers), None)
    assert out.getvalue() == st_view(str(bam), *regions)
    assert counting.data_requests == len(distinct)
    # A count reads each chunk object once too (small objects: one request each).
    counting = CountingStorage(ds.storage)
    assert Query(plan, storage=counting).count(workers) == st_count(str(bam), *regions)
    assert counting.data_requests == len({t.chunk.info.path for t in plan.tasks if not t.whole})
    counting = CountingStorage(ds.storage)
    assert Query(plan, filter="mapq >= 20", storage=counting).count(workers) == st_count(
        "-q", "20", str(bam), *regions
    )
    assert counting.data_requests == len(distinct)


def test_explain_lists_the_chunks_without_reading_them(
    multi: tuple[Path, str], tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    _, url = multi
    copy = tmp_path / "copy.bams3"
    shutil.copytree(url, copy)
    ds = open_dataset(str(copy))
    regions = ["chr1:200000-600000", "*", "chr2:1-10"]
    plan = plan_query(ds, regions)
    shutil.rmtree(copy / "data")  # explain must not need a single chunk object
    code, out, _ = run_cli(capsysbinary, "query", str(copy), *regions, "--explain", "--count")
    assert code == 0
    text = out.decode()
    rows = [line.split("\t") for line in text.splitlines() if not line.startswith("#")][1:]
    assert [r[1] for r in rows] == [t.chunk.url for t in plan.tasks]
    assert {r[4] for r in rows} >= {"count from index", "read whole object (1 request)"}
    assert "index object(s)" in text.splitlines()[-1]
    code, out, _ = run_cli(capsysbinary, "query", str(copy), *regions, "--explain")
    assert "count from index" not in out.decode()


def test_stats_report(multi: tuple[Path, str], capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    bam, url = multi
    code, out, err = run_cli(capsysbinary, "query", url, "chr1:100000-300000", "-c", "--stats")
    assert code == 0 and int(out) == st_count(str(bam), "chr1:100000-300000")
    assert "read request(s)" in err and "chunk object(s) selected" in err


# --------------------------------------------------------------------------
# CLI: query output forms, export, chunks, cat
# --------------------------------------------------------------------------


def test_query_cli_sam_header_count_parallel(
    multi: tuple[Path, str], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    bam, url = multi
    regions = ["chr1:250000-530000", "{HLA-DRB1*15:01:01:01}:1-6000", "*", "chr2:699000-700000"]
    expected = st_view(str(bam), *regions)
    code, one, _ = run_cli(capsysbinary, "query", url, *regions, "--parallel", "1")
    code8, eight, _ = run_cli(capsysbinary, "query", url, *regions, "--parallel", "8")
    assert code == code8 == 0
    assert one == eight == expected
    # Options may come between regions, as samtools allows.
    _, mixed, _ = run_cli(capsysbinary, "query", url, regions[0], "--parallel", "2", *regions[1:])
    assert mixed == expected
    _, with_header, _ = run_cli(capsysbinary, "query", "-h", url, *regions)
    assert with_header == st_view("--no-PG", "-h", str(bam), *regions)
    _, count, _ = run_cli(capsysbinary, "query", url, *regions, "--count")
    assert count == b"%d\n" % st_count(str(bam), *regions)


def test_query_cli_output_files(
    multi: tuple[Path, str], tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    bam, url = multi
    region = "chr1:200000-700000"
    sam, out_bam, cnt = tmp_path / "r.sam", tmp_path / "r.bam", tmp_path / "n.txt"
    assert run_cli(capsysbinary, "query", url, region, "-o", str(sam))[0] == 0
    assert sam.read_bytes() == st_view(str(bam), region)
    assert run_cli(capsysbinary, "query", url, region, "-h", "-o", str(sam))[0] == 0
    assert sam.read_bytes() == st_view("--no-PG", "-h", str(bam), region)
    assert run_cli(capsysbinary, "query", url, region, "-o", str(out_bam))[0] == 0
    subprocess.run(["samtools", "index", str(out_bam)], check=True)
    assert st_view(str(out_bam)) == st_view(str(bam), region)
    assert st_view(str(out_bam), "chr1:300000-400000") == st_view(str(bam), "chr1:300000-400000")
    assert run_cli(capsysbinary, "query", url, region, "-c", "-o", str(cnt))[0] == 0
    assert cnt.read_text() == f"{st_count(str(bam), region)}\n"
    code, _, err = run_cli(capsysbinary, "query", url, region, "-o", str(tmp_path / "r.cram"))
    assert_one_line_error(code, err, "r.cram", "unsupported output format")


@pytest.mark.parametrize(
    "name", ["ce#1000.sam", "auxf#values.sam", "c1#noseq.sam", "xx#large_aux.sam", "xx#blank.sam"]
)
def test_export_round_trip(
    name: str,
    conformance_sets: dict[str, tuple[Path, str]],
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    bam, url = conformance_sets[name]
    expected = st_view("--no-PG", "-h", str(bam))
    out_sam, out_bam = tmp_path / "x.sam", tmp_path / "x.bam"
    assert run_cli(capsysbinary, "export", url, str(out_sam))[0] == 0
    assert out_sam.read_bytes() == expected
    assert run_cli(capsysbinary, "export", url, str(out_bam), "--parallel", "3")[0] == 0
    assert st_view("--no-PG", "-h", str(out_bam)) == expected
    subprocess.run(["samtools", "index", str(out_bam)], check=True)
    code, out, _ = run_cli(capsysbinary, "export", url, "-")
    assert code == 0 and out == expected


def test_export_generated_bam_is_indexable(multi: tuple[Path, str], tmp_path: Path) -> None:
    bam, url = multi
    ds = open_dataset(url)
    out = tmp_path / "all.bam"
    assert ds.to_bam(out) == ds.manifest.records
    subprocess.run(["samtools", "index", str(out)], check=True)
    assert st_view("--no-PG", "-h", str(out)) == st_view("--no-PG", "-h", str(bam))
    assert st_view(str(out), "chr1:262000-262300") == st_view(str(bam), "chr1:262000-262300")


def test_chunks_and_cat(
    multi: tuple[Path, str], tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    bam, url = multi
    ds = open_dataset(url)
    code, out, _ = run_cli(capsysbinary, "chunks", url)
    urls = out.decode().splitlines()
    assert code == 0 and urls == [c.url for c in ds.chunks()]
    assert sorted(urls) == sorted(str(p) for p in Path(url).rglob("*.chunk"))
    # Concatenating every chunk, in listed order, gives the whole BAM's records.
    code, out, _ = run_cli(capsysbinary, "cat", *urls)
    assert code == 0 and out == st_view(str(bam))
    code, out, _ = run_cli(capsysbinary, "cat", "-h", urls[0], urls[1])
    assert out.startswith(ds.header.encode())
    # A region lists only the chunks its query reads.
    code, out, _ = run_cli(capsysbinary, "chunks", url, "chr1:250000-270000", "*")
    assert out.decode().splitlines() == [
        t.chunk.url for t in plan_query(ds, ["chr1:250000-270000", "*"]).tasks
    ]
    code, out, _ = run_cli(capsysbinary, "chunks", "-l", url, "*")
    fields = out.decode().split("\t")
    assert fields[1:] == ["*", "0", "1", "0", "25", f"{ds.index('*').chunks[0].bytes}\n"]
    # A chunk copied out of its dataset still decodes (page CRCs protect it).
    lone = tmp_path / "lone.chunk"
    shutil.copy(urls[3], lone)
    code, whole, _ = run_cli(capsysbinary, "cat", str(lone))
    assert code == 0 and whole == run_cli(capsysbinary, "cat", urls[3])[1] != b""
    code, out, _ = run_cli(capsysbinary, "cat", str(lone), "--filter", "mapq >= 30")
    assert out == b"".join(line + b"\n" for line in whole.splitlines() if int(line.split(b"\t")[4]) >= 30)
    code, _, err = run_cli(capsysbinary, "cat", "-h", str(lone))
    assert_one_line_error(code, err, "lone.chunk", "not inside a dataset")


# --------------------------------------------------------------------------
# Library API
# --------------------------------------------------------------------------


def test_library_api(multi: tuple[Path, str], tmp_path: Path) -> None:
    bam, url = multi
    ds = bams3_spark.open_dataset(url)
    regions = ["chr1:100000-200000", "chr2:5000-6000"]
    table = ds.query(regions, workers=4)
    assert isinstance(table, pa.Table) and table.num_rows == ds.count(regions) == st_count(str(bam), *regions)
    batches: Iterator[pa.Table] = ds.query_batches(regions, columns=["qname"], workers=2)
    assert pa.concat_tables(list(batches)).column("qname").to_pylist() == table.column("qname").to_pylist()
    text = io.StringIO()
    assert ds.to_sam(text, regions, header=False) == table.num_rows
    assert text.getvalue().encode() == st_view(str(bam), *regions)
    path = tmp_path / "x.sam"
    ds.to_sam(path, regions)
    assert path.read_bytes() == st_view("--no-PG", "-h", str(bam), *regions)
    assert [c.url for c in ds.chunks("chr1:100000-200000")] == [
        t.chunk.url for t in ds.plan("chr1:100000-200000").tasks
    ]
    with pytest.raises(ValueError, match="workers"):
        ds.count("chr1", workers=0)


# --------------------------------------------------------------------------
# Bad input: one clear line, non-zero exit
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "needles"),
    [
        ("chr1:abc", ["chr1:abc", "unexpected"]),
        ("chrZZ:1-10", ["chrZZ", "unknown reference"]),
        ("chr1:100-50", ["chr1:100-50", "before start"]),
        ("chr1:1000-2000x", ["chr1:1000-2000x"]),
        ("{chr1", ["mismatched braces"]),
        ("", ["empty region"]),
    ],
)
def test_bad_regions(
    region: str, needles: list[str], multi: tuple[Path, str], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    _, url = multi
    code, out, err = run_cli(capsysbinary, "query", url, "chr1:1-100", region)
    assert out == b""
    assert_one_line_error(code, err, "bams3 query: error:", *needles)


def test_missing_incomplete_and_newer_datasets(
    multi: tuple[Path, str], tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    _, url = multi
    code, _, err = run_cli(capsysbinary, "query", str(tmp_path / "nothing.bams3"), "chr1")
    assert_one_line_error(code, err, "nothing.bams3", "not a BAMS3 dataset")
    incomplete = tmp_path / "incomplete.bams3"
    shutil.copytree(url, incomplete)
    (incomplete / "bams3.json").unlink()
    code, _, err = run_cli(capsysbinary, "query", str(incomplete), "chr1", "-c")
    assert_one_line_error(code, err, "incomplete.bams3", "incomplete dataset")
    newer = tmp_path / "newer.bams3"
    shutil.copytree(url, newer)
    manifest = json.loads((newer / "bams3.json").read_text())
    manifest["format_version"] = "2.0"
    (newer / "bams3.json").write_text(json.dumps(manifest))
    for cmd in (
        ["query", str(newer), "chr1"],
        ["export", str(newer), str(tmp_path / "o.sam")],
        ["chunks", str(newer)],
    ):
        code, _, err = run_cli(capsysbinary, *cmd)
        assert_one_line_error(code, err, "bams3.json", "2.0", "upgrade")


def test_damaged_chunk_is_named(
    multi: tuple[Path, str], tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    _, url = multi
    copy = tmp_path / "damaged.bams3"
    shutil.copytree(url, copy)
    ds = open_dataset(str(copy))
    victim = ds.chunks("chr1:300000-300100")[0]
    path = Path(victim.url)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    for argv in (
        ["query", str(copy), "chr1:300000-300100"],
        ["query", str(copy), "--parallel", "8"],
        ["export", str(copy), str(tmp_path / "o.bam")],
        ["cat", victim.url],
    ):
        code, out, err = run_cli(capsysbinary, *argv)
        assert_one_line_error(code, err, victim.url, "checksum")
    # A truncated object is named too, also when only a projection is read.
    path.write_bytes(bytes(data[: len(data) // 3]))
    code, _, err = run_cli(capsysbinary, "query", str(copy), "chr1:300000-300100", "-c")
    assert_one_line_error(code, err, victim.url)


def test_missing_chunk_is_named(
    multi: tuple[Path, str], tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    _, url = multi
    copy = tmp_path / "holes.bams3"
    shutil.copytree(url, copy)
    victim = open_dataset(str(copy)).chunks("chr2:1000-9000")[0]
    Path(victim.url).unlink()
    code, _, err = run_cli(capsysbinary, "query", str(copy), "chr2:1000-9000")
    assert_one_line_error(code, err, victim.url, "not found")


def test_bad_parallel_is_a_usage_error(
    multi: tuple[Path, str], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    _, url = multi
    with pytest.raises(SystemExit) as exc:
        main(["query", url, "chr1", "--parallel", "0"])
    assert exc.value.code == 2
    assert "positive integer" in capsysbinary.readouterr().err.decode()


def test_real_entry_point_exit_status(multi: tuple[Path, str]) -> None:
    bam, url = multi
    ok = subprocess.run(
        [sys.executable, "-m", "bams3_spark", "query", url, "chr2:1-9000", "-c"], capture_output=True
    )
    assert ok.returncode == 0 and int(ok.stdout) == st_count(str(bam), "chr2:1-9000")
    bad = subprocess.run(
        [sys.executable, "-m", "bams3_spark", "query", url, "chrZZ"], capture_output=True, text=True
    )
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "bams3 query: error: region 'chrZZ': unknown reference 'chrZZ'"
    ]
