"""Oracle tests of the local coverage engine (bams3_spark.coverage).

Every expectation comes from running the real tools on the same BAM:
``mosdepth`` 0.3.3 (default mode, ``-x``, ``--by N``, ``--by BED``,
``--thresholds``, per-base, ``-Q``, ``-F``, ``-i``, ``-n``) and ``samtools
depth`` 1.16 (``-a``, ``-aa``, ``-J``, ``-Q``, ``-g``, ``-G``). The engine is fed
the BAM's records converted to BAMS3 record tables and split into "chunks" by
windows of the start position, so chunk boundaries (reads straddling windows,
mates in different chunks) are exercised; several chunkings are compared.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pysam
import pytest

from bams3_spark.coverage.depth import DepthAccumulator, ReferenceDepth, reference_depth
from bams3_spark.coverage.mosdepth import write_mosdepth_outputs
from bams3_spark.coverage.options import CoverageOptions
from bams3_spark.coverage.stats import (
    intervals_table,
    region_means_table,
    samtools_depth_table,
    thresholds_table,
    window_means_table,
)
from bams3_spark.format.schema import RECORD_SCHEMA
from bams3_spark.io.bed import BedRegion
from bams3_spark.io.bed import read_mosdepth_bed as read_bed
from tests.support.oracles import CONFORMANCE_DIR, conformance_files, sam_to_bam

pytestmark = pytest.mark.skipif(
    shutil.which("mosdepth") is None or shutil.which("samtools") is None,
    reason="needs the mosdepth and samtools oracles",
)

CONTIGS = [
    ("chr1", 12_000),
    ("chr2", 6_000),
    ("chrPile", 4_000),
    ("chrEmpty", 2_500),  # no record at all
    ("chrFiltered", 1_800),  # only records the default filters drop
    ("chrTiny", 7),
]
PROPER1 = 0x1 | 0x2 | 0x20 | 0x40  # leftmost mate of a proper pair
PROPER2 = 0x1 | 0x2 | 0x10 | 0x80


# ---------------------------------------------------------------------------
# Test BAM
# ---------------------------------------------------------------------------


class _Builder:
    def __init__(self, header: pysam.AlignmentHeader, rng: random.Random) -> None:
        self.header = header
        self.rng = rng
        self.reads: list[pysam.AlignedSegment] = []
        self.n = 0

    def tid(self, name: str) -> int:
        return int(self.header.get_tid(name))

    def read(self, qname: str, ref: str, pos0: int, cigar: str, flag: int = 0, mapq: int = 60,
             mref: str | None = None, mpos0: int = -1) -> pysam.AlignedSegment:
        a = pysam.AlignedSegment(self.header)
        a.query_name = qname
        a.flag = flag
        a.reference_id = self.tid(ref) if ref != "*" else -1
        a.reference_start = pos0
        a.mapping_quality = mapq
        if cigar != "*":
            a.cigarstring = cigar
            qlen = a.infer_query_length() or 0
        else:
            qlen = 20
        a.query_sequence = "".join(self.rng.choices("ACGT", k=qlen))
        a.query_qualities = pysam.qualitystring_to_array("I" * qlen)
        a.next_reference_id = self.tid(mref) if mref not in (None, "*") else -1
        a.next_reference_start = mpos0
        self.reads.append(a)
        return a

    def pair(self, ref: str, p1: int, c1: str, p2: int, c2: str, *, proper: bool = True,
             flags1: int = 0, flags2: int = 0, mapq1: int = 60, mapq2: int = 60,
             qname: str | None = None) -> str:
        self.n += 1
        name = qname or f"p{self.n}"
        f1 = (PROPER1 if proper else PROPER1 & ~0x2) | flags1
        f2 = (PROPER2 if proper else PROPER2 & ~0x2) | flags2
        self.read(name, ref, p1, c1, f1, mapq1, ref, p2)
        self.read(name, ref, p2, c2, f2, mapq2, ref, p1)
        return name


def _random_cigar(rng: random.Random, qlen: int) -> str:
    """A CIGAR of query length ``qlen`` with clips, indels, splices, =/X."""
    kind = rng.random()
    if kind < 0.45:
        return f"{qlen}M"
    ops: list[tuple[int, str]] = []
    left = qlen
    if rng.random() < 0.4:
        s = rng.randint(1, 20)
        ops.append((s, "S"))
        left -= s
    tail_clip = rng.randint(1, 15) if rng.random() < 0.3 else 0
    left -= tail_clip
    m1 = rng.randint(5, max(5, left - 10))
    ops.append((m1, rng.choice("MMM=X")))
    left -= m1
    mid = rng.choice(["I", "D", "N", "DI", "P"])
    if "I" in mid and left > 8:
        i = rng.randint(1, 5)
        ops.append((i, "I"))
        left -= i
    if "D" in mid:
        ops.append((rng.randint(1, 30), "D"))
    if mid == "N":
        ops.append((rng.randint(50, 1500), "N"))
    if mid == "P":
        ops.append((2, "P"))
    if left > 0:
        ops.append((left, "M"))
    if tail_clip:
        ops.append((tail_clip, rng.choice("SH") if tail_clip > 1 else "S"))
    if rng.random() < 0.1:
        ops.insert(0, (rng.randint(1, 10), "H"))
    return "".join(f"{n}{op}" for n, op in ops)


def _ref_len(cigar: str) -> int:
    a = pysam.AlignedSegment()
    a.cigarstring = cigar
    return int(a.reference_length or 0)


def build_bam(path: Path, seed: int = 11) -> Path:
    """Write, sort and index the test BAM; return its path."""
    rng = random.Random(seed)
    header = pysam.AlignmentHeader.from_dict(
        {"HD": {"VN": "1.6", "SO": "unsorted"}, "SQ": [{"SN": n, "LN": ln} for n, ln in CONTIGS]}
    )
    b = _Builder(header, rng)

    # -- chr1: hand-made mate-overlap cases (mosdepth's rule and its quirks) --
    b.pair("chr1", 100, "100M", 100, "100M")  # identical mates
    b.pair("chr1", 300, "100M", 300, "60M")  # same start, longer first in file
    b.pair("chr1", 500, "60M", 500, "100M")  # same start, shorter first
    b.pair("chr1", 700, "100M", 720, "30M")  # mate fully inside, single-op (over-subtracts)
    b.pair("chr1", 900, "5S95M", 920, "30M")  # mate inside, multi-op: exact intersection
    b.pair("chr1", 1150, "100M", 1200, "100M")  # partial overlap
    b.pair("chr1", 1400, "40M10D50M", 1420, "20M5I60M")  # overlap with indels
    b.pair("chr1", 1600, "30M200N70M", 1650, "100M")  # spliced first mate
    b.pair("chr1", 1950, "100M", 2010, "100M")  # overlapping mates in different chunks
    b.pair("chr1", 2980, "100M", 3020, "50M3D50M")  # across the 3000 window edge
    b.pair("chr1", 3300, "100M", 9300, "100M")  # far apart (no overlap)
    b.pair("chr1", 3500, "100M", 3600, "100M")  # adjacent, touching only
    b.pair("chr1", 3800, "100M", 3850, "100M", proper=False)  # overlapping but not proper
    b.pair("chr1", 4000, "100M", 4050, "100M", flags1=0x400, flags2=0x400)  # duplicates
    b.pair("chr1", 4200, "100M", 4250, "100M", mapq1=10, mapq2=50)  # one low-MAPQ mate
    b.pair("chr1", 4400, "100M", 4450, "100M", flags2=0x200)  # QC-fail mate
    b.pair("chr1", 4600, "10M", 4600, "10M")  # tiny identical
    b.pair("chr1", 4700, "50M", 4690, "100M")  # stored mate not leftmost (inconsistent order)
    b.read("lone", "chr1", 6100, "125M")  # 125 bases of depth 1 in a 1000 bp window: "0.13"
    b.read("zero", "chr1", 0, "20M5D20M", PROPER1, 60, "chr1", 10)  # at position 0 with D
    b.read("zero", "chr1", 10, "40M", PROPER2, 60, "chr1", 0)
    # Placed unmapped mate next to its mapped mate.
    b.read("um", "chr1", 5000, "100M", 0x1 | 0x8 | 0x40, 60, "chr1", 5000)
    b.read("um", "chr1", 5000, "*", 0x1 | 0x4 | 0x80, 0, "chr1", 5000)
    # Secondary and supplementary copies carrying the proper-pair bit.
    name = b.pair("chr1", 5200, "100M", 5260, "100M")
    b.read(name, "chr1", 5230, "60M40H", PROPER1 | 0x800, 60, "chr1", 5260)
    b.read(name, "chr1", 5240, "100M", PROPER2 | 0x100, 0, "chr1", 5200)
    # Reads straddling every 1000 bp window edge at several offsets.
    for edge in range(1000, 12_000, 1000):
        for off in (-149, -100, -1, 0, 1):
            b.read(f"edge{edge}_{off}", "chr1", edge + off, "150M", 0, 60)
    # Random pairs, all kinds of CIGARs, flags and MAPQs.
    for _ in range(700):
        q1 = rng.choice([50, 100, 150])
        q2 = rng.choice([50, 100, 150])
        c1 = _random_cigar(rng, q1)
        c2 = _random_cigar(rng, q2)
        p1 = rng.randint(0, 9_000)
        p2 = p1 + rng.choice([0, 0, rng.randint(0, 40), rng.randint(0, 200), rng.randint(0, 2500)])
        p2 = min(p2, 11_990 - _ref_len(c2))
        extra1 = rng.choice([0] * 12 + [0x400, 0x200, 0x100, 0x800])
        extra2 = rng.choice([0] * 12 + [0x400, 0x200, 0x800])
        b.pair("chr1", p1, c1, max(p2, p1), c2, proper=rng.random() < 0.85,
               flags1=extra1, flags2=extra2, mapq1=rng.randint(0, 60), mapq2=rng.randint(0, 60))
    # Mates on another reference.
    for i in range(20):
        p = rng.randint(0, 11_000)
        b.read(f"x{i}", "chr1", p, "100M", PROPER1, 60, "chr2", p % 5000)
        b.read(f"x{i}", "chr2", p % 5000, "100M", PROPER2, 60, "chr1", p)

    # -- chr2: spliced reads spanning windows, deletions, insertions --
    b.read("sp1", "chr2", 100, "50M3000N50M", 0, 60)
    b.read("sp2", "chr2", 990, "5S20M2I30M1500N40M5D10M", 0x10, 60)
    b.read("sp3", "chr2", 2000, "10M2P10M", 0, 60)
    b.read("eqx", "chr2", 2500, "20=1X29=", 0, 60)
    for _ in range(150):
        q = rng.choice([75, 100])
        c1, c2 = _random_cigar(rng, q), _random_cigar(rng, q)
        p1 = rng.randint(0, 3_500)
        b.pair("chr2", p1, c1, p1 + rng.randint(0, 120), c2, mapq1=rng.randint(0, 60))

    # -- chrPile: a 20,000-read pile-up of overlapping pairs --
    for _ in range(10_000):
        p1 = rng.randint(800, 1_900)
        c1 = "100M" if rng.random() < 0.8 else _random_cigar(rng, 100)
        c2 = "100M" if rng.random() < 0.8 else _random_cigar(rng, 100)
        b.pair("chrPile", p1, c1, p1 + rng.randint(0, 150), c2,
               flags1=0x400 if rng.random() < 0.05 else 0, mapq2=rng.randint(0, 60))

    # -- chrFiltered: only dropped by default (dup, secondary, QC-fail) --
    b.read("f1", "chrFiltered", 10, "100M", 0x400, 60)
    b.read("f2", "chrFiltered", 200, "100M", 0x100, 60)
    b.read("f3", "chrFiltered", 400, "100M", 0x200, 60)
    b.read("f4", "chrFiltered", 600, "*", 0x4, 0, "chrFiltered", 600)

    # -- chrTiny: a read covering the whole 7 bp reference --
    b.read("t1", "chrTiny", 0, "7M", 0, 60)
    b.read("t2", "chrTiny", 3, "2S4M", 0, 5)

    unsorted = path.with_suffix(".unsorted.bam")
    with pysam.AlignmentFile(str(unsorted), "wb", header=header) as out:
        for a in b.reads:
            out.write(a)
    pysam.sort("-o", str(path), str(unsorted))
    pysam.index(str(path))
    unsorted.unlink()
    return path


# ---------------------------------------------------------------------------
# BAM -> BAMS3 record tables (test helper)
# ---------------------------------------------------------------------------


def _bam_endpos(r: pysam.AlignedSegment) -> int:
    """htslib bam_endpos: 0-based exclusive end (= 1-based inclusive end)."""
    rlen = 0
    if not r.is_unmapped and r.cigartuples:
        rlen = sum(n for op, n in r.cigartuples if op in (0, 2, 3, 7, 8))
    return r.reference_start + max(rlen, 1)


def records_by_reference(bam: Path) -> tuple[list[tuple[str, int]], dict[str, list[dict[str, object]]]]:
    """Read a BAM in file order into per-reference lists of schema rows."""
    rows: dict[str, list[dict[str, object]]] = {}
    with pysam.AlignmentFile(str(bam), "rb", check_sq=False) as f:
        refs = list(zip(f.references, f.lengths, strict=True))
        for r in f.fetch(until_eof=True):
            if r.reference_id < 0:
                continue
            rname = str(r.reference_name)
            if r.next_reference_id < 0:
                rnext = "*"
            elif r.next_reference_id == r.reference_id:
                rnext = "="
            else:
                rnext = str(r.next_reference_name)
            quals = r.query_qualities
            rows.setdefault(rname, []).append({
                "qname": r.query_name or "*",
                "flag": r.flag,
                "rname": rname,
                "pos": r.reference_start + 1,
                "end": _bam_endpos(r),
                "mapq": r.mapping_quality,
                "cigar": r.cigarstring or "*",
                "rnext": rnext,
                "pnext": r.next_reference_start + 1,
                "tlen": r.template_length,
                "seq": r.query_sequence or "*",
                "qual": pysam.array_to_qualitystring(quals) if quals is not None else "*",
                "tags": "",
            })
    return [(n, int(ln)) for n, ln in refs], rows


def chunk_tables(rows: list[dict[str, object]], window: int) -> list[pa.Table]:
    """Split a reference's rows into chunk tables by window of the start."""
    if window <= 0:
        return [pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)] if rows else []
    chunks: dict[int, list[dict[str, object]]] = {}
    for row in rows:
        chunks.setdefault((int(row["pos"]) - 1) // window, []).append(row)  # type: ignore[call-overload]
    return [pa.Table.from_pylist(chunks[k], schema=RECORD_SCHEMA) for k in sorted(chunks)]


def engine_depths(refs: list[tuple[str, int]], rows: dict[str, list[dict[str, object]]],
                  options: CoverageOptions, window: int = 1000) -> Iterator[ReferenceDepth]:
    for name, length in refs:
        yield reference_depth(name, length, chunk_tables(rows.get(name, []), window), options)


# ---------------------------------------------------------------------------
# Oracle helpers
# ---------------------------------------------------------------------------


def run(*args: str) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True).stdout


def read_text(path: Path) -> str:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rt") as fh:
            return fh.read()
    return path.read_text()


def mosdepth_files(prefix: Path) -> dict[str, str]:
    """Text of every output file of a mosdepth run (``.csi`` indexes excluded)."""
    out = {}
    for p in sorted(prefix.parent.glob(prefix.name + ".*")):
        if not p.name.endswith(".csi"):
            out[p.name[len(prefix.name):]] = read_text(p)
    return out


def options_from_mosdepth_args(args: list[str]) -> tuple[CoverageOptions, dict[str, object]]:
    """Translate mosdepth arguments into engine options and writer keywords."""
    mode = "mosdepth"
    mapq, flag_exclude, flag_include = 0, 1796, 0
    kw: dict[str, object] = {"per_base": True}
    it = iter(args)
    for a in it:
        if a == "-x":
            mode = "fast"
        elif a == "-n":
            kw["per_base"] = False
        elif a == "-Q":
            mapq = int(next(it))
        elif a == "-F":
            flag_exclude = int(next(it))
        elif a == "-i":
            flag_include = int(next(it))
        elif a == "-b":
            by = next(it)
            kw["by"] = int(by) if by.isdigit() else by
        elif a == "-T":
            kw["thresholds"] = [int(t) for t in next(it).split(",")]
        else:
            raise AssertionError(a)
    return CoverageOptions(mode=mode, mapq=mapq, flag_exclude=flag_exclude, flag_include=flag_include), kw


def samtools_depth_text(depths: Iterator[ReferenceDepth], all_references: bool = False) -> str:
    parts = []
    for rd in depths:
        t = samtools_depth_table(rd, all_references=all_references)
        if t.num_rows:
            pos = t.column("pos").to_numpy()
            dep = t.column("depth").to_numpy()
            parts.append("".join(f"{rd.name}\t{p}\t{d}\n" for p, d in zip(pos.tolist(), dep.tolist(),
                                                                            strict=True)))
    return "".join(parts)


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("coverage")


@pytest.fixture(scope="module")
def bam(workdir: Path) -> Path:
    return build_bam(workdir / "test.bam")


@pytest.fixture(scope="module")
def records(bam: Path) -> tuple[list[tuple[str, int]], dict[str, list[dict[str, object]]]]:
    return records_by_reference(bam)


@pytest.fixture(scope="module")
def bed(workdir: Path) -> Path:
    """A BED file exercising mosdepth's parser: names, extra columns, comments,
    unsorted lines, regions on an empty reference and on an unknown one, empty
    and end-of-reference regions, a region ending at length + 1."""
    text = (
        "#comment\n"
        "track name=test\n"
        "chr1\t5000\t6200\tgeneB\textra\tmore\tfields\n"
        "chr1\t0\t150\tgeneA\n"
        "chr1\t90\t1210\n"
        "chr1\t700\t700\tempty\n"
        "chr1\t11900\t12000\tlast\n"
        "chr2\t0\t6001\twhole_plus_one\n"
        "chrPile\t900\t2000\tpile\n"
        "chrPile\t950\t1000\tpile\n"
        "chrEmpty\t10\t500\tnothing\n"
        "chrNope\t0\t10\tunknown_ref\n"
        "chrTiny\t0\t7\n"
        "too\tfew\n"
    )
    path = workdir / "regions.bed"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def covered_bed(workdir: Path) -> Path:
    """Regions with depth >= 1 everywhere on the first reference: mosdepth
    then still prints min 0 in its first ``_region`` summary row."""
    path = workdir / "covered.bed"
    path.write_text("chr1\t100\t150\tidentical\nchrPile\t1000\t1500\tdeep\nchr2\t0\t5\n")
    return path


# ---------------------------------------------------------------------------
# mosdepth oracle
# ---------------------------------------------------------------------------

MOSDEPTH_CASES = [
    ["-b", "1000", "-T", "1,10,30"],
    ["-x", "-b", "1000", "-T", "1,10,30"],
    ["-b", "BED", "-T", "0,1,5,50"],
    ["-b", "COVERED", "-T", "1,1000"],
    ["-x", "-b", "BED"],
    ["-n", "-b", "BED"],
    ["-Q", "20", "-b", "500"],
    ["-F", "0", "-b", "1000"],
    ["-F", "0", "-i", "2048"],
    ["-F", "1024", "-i", "2"],
    ["-x", "-Q", "30", "-n", "-b", "700", "-T", "2"],
    [],
]


@pytest.mark.parametrize("args", MOSDEPTH_CASES, ids=lambda a: " ".join(a) or "default")
def test_matches_mosdepth(args: list[str], bam: Path, bed: Path, covered_bed: Path, workdir: Path,
                          records: tuple) -> None:
    refs, rows = records
    # Named from the case as written (BED, COVERED), not from the temporary paths, so that two
    # cases never share an output prefix however long those paths are.
    tag = "_".join(a.replace(",", "-") for a in args) or "default"
    args = [str({"BED": bed, "COVERED": covered_bed}.get(a, a)) for a in args]
    expected_prefix = workdir / f"md_{tag}"
    run("mosdepth", *args, str(expected_prefix), str(bam))
    expected = mosdepth_files(expected_prefix)

    options, kw = options_from_mosdepth_args(args)
    got_prefix = workdir / f"ours_{tag}"
    written = write_mosdepth_outputs(got_prefix, engine_depths(refs, rows, options), **kw)  # type: ignore[arg-type]
    got = mosdepth_files(got_prefix)
    assert sorted(Path(p).name for p in written) == sorted(f"ours_{tag}{s}" for s in got)
    assert sorted(got) == sorted(expected)
    for suffix in expected:
        assert got[suffix] == expected[suffix], f"{suffix} differs for mosdepth {' '.join(args)}"


def test_precision_matches_mosdepth_env(bam: Path, workdir: Path, records: tuple) -> None:
    """``precision`` plays the role of mosdepth's MOSDEPTH_PRECISION."""
    refs, rows = records
    prefix = workdir / "md_prec"
    subprocess.run(["mosdepth", "-n", "-b", "300", str(prefix), str(bam)], check=True,
                   env={**os.environ, "MOSDEPTH_PRECISION": "5"}, capture_output=True)
    ours = workdir / "ours_prec"
    write_mosdepth_outputs(ours, engine_depths(refs, rows, CoverageOptions()), by=300, per_base=False,
                           precision=5)
    assert mosdepth_files(ours) == mosdepth_files(prefix)


@pytest.mark.parametrize("args", [["-b", "1000", "-T", "1,10"], ["-b", "BED", "-T", "2"]])
def test_small_scan_blocks_give_the_same_files(args: list[str], bam: Path, bed: Path, workdir: Path,
                                               records: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-base arrays are scanned in blocks; tiny blocks must not change a byte."""
    import bams3_spark.coverage.stats as cov

    monkeypatch.setattr(cov, "SCAN_BLOCK", 257)
    refs, rows = records
    args = [str(bed) if a == "BED" else a for a in args]
    expected_prefix = workdir / f"mdblk_{args[1][-4:]}"
    run("mosdepth", *args, str(expected_prefix), str(bam))
    options, kw = options_from_mosdepth_args(args)
    got_prefix = workdir / f"oursblk_{args[1][-4:]}"
    write_mosdepth_outputs(got_prefix, engine_depths(refs, rows, options), **kw)  # type: ignore[arg-type]
    assert mosdepth_files(got_prefix) == mosdepth_files(expected_prefix)


@pytest.mark.parametrize("window", [0, 137, 1000, 4096])
def test_chunking_does_not_change_mosdepth_result(window: int, bam: Path, workdir: Path,
                                                  records: tuple) -> None:
    """Same per-base depth as mosdepth whatever the chunk boundaries."""
    refs, rows = records
    prefix = workdir / "md_plain"
    if not (workdir / "md_plain.per-base.bed.gz").exists():
        run("mosdepth", str(prefix), str(bam))
    expected = read_text(workdir / "md_plain.per-base.bed.gz")
    got = []
    for rd in engine_depths(refs, rows, CoverageOptions(), window):
        t = intervals_table(rd)
        got.append("".join(
            f"{r}\t{s}\t{e}\t{d}\n" for r, s, e, d in zip(*(t.column(c).to_pylist() for c in t.column_names),
                                                           strict=True)
        ))
    assert "".join(got) == expected


def test_tables_match_mosdepth_files(bam: Path, bed: Path, workdir: Path, records: tuple) -> None:
    """The Arrow-table API gives the values behind mosdepth's text files."""
    refs, rows = records
    prefix = workdir / "md_tables"
    run("mosdepth", "-b", "250", "-T", "1,3", str(prefix), str(bam))
    regions = [line.split("\t") for line in read_text(Path(f"{prefix}.regions.bed.gz")).splitlines()]
    thr_lines = read_text(Path(f"{prefix}.thresholds.bed.gz")).splitlines()[1:]
    thresholds = [line.split("\t") for line in thr_lines]
    got_regions, got_thresholds = [], []
    for rd in engine_depths(refs, rows, CoverageOptions()):
        w = window_means_table(rd, 250)
        assert w.schema.names == ["rname", "start", "end", "mean_depth"]
        for r, s, e, m in zip(*(w.column(c).to_pylist() for c in w.column_names), strict=True):
            got_regions.append([r, str(s), str(e), f"{m:.2f}"])
        t = thresholds_table(rd, 250, [3, 1])
        assert t.schema.names == ["rname", "start", "end", "region", "1X", "3X"]
        got_thresholds += [[str(v) for v in row.values()] for row in t.to_pylist()]
    assert got_regions == regions
    assert got_thresholds == thresholds

    # BED regions through region_means_table (per reference, sorted by start).
    prefix = workdir / "md_tables_bed"
    run("mosdepth", "-n", "-b", str(bed), str(prefix), str(bam))
    expected = [line.split("\t") for line in read_text(Path(f"{prefix}.regions.bed.gz")).splitlines()]
    regs = read_bed(bed)
    got = []
    for rd in engine_depths(refs, rows, CoverageOptions()):
        t = region_means_table(rd, regs)
        names = [r.name for r in sorted((r for r in regs if r.chrom == rd.name), key=lambda r: r.start)]
        for (r, s, e, m), nm in zip(zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True),
                                    names, strict=True):
            got.append([r, str(s), str(e)] + ([nm] if nm else []) + [f"{m:.2f}"])
    assert got == expected


# ---------------------------------------------------------------------------
# samtools depth oracle
# ---------------------------------------------------------------------------

SAMTOOLS_CASES: list[tuple[list[str], CoverageOptions, bool]] = [
    (["-a"], CoverageOptions(mode="samtools"), False),
    (["-aa"], CoverageOptions(mode="samtools"), True),
    (["-a", "-J"], CoverageOptions(mode="samtools", count_deletions=True), False),
    (["-a", "-Q", "20"], CoverageOptions(mode="samtools", mapq=20), False),
    (["-a", "-G", "0x800"], CoverageOptions(mode="samtools", flag_exclude=1796 | 0x800), False),
    (["-aa", "-g", "0x400"], CoverageOptions(mode="samtools", flag_exclude=1796 & ~0x400), True),
    (["-a", "-J", "-Q", "10", "-g", "0x104"],
     CoverageOptions(mode="samtools", mapq=10, flag_exclude=1796 & ~0x104, count_deletions=True), False),
]


@pytest.mark.parametrize("case", SAMTOOLS_CASES, ids=lambda c: " ".join(c[0]))
def test_matches_samtools_depth(case: tuple[list[str], CoverageOptions, bool], bam: Path,
                                records: tuple) -> None:
    args, options, all_refs = case
    refs, rows = records
    expected = run("samtools", "depth", *args, str(bam))
    got = samtools_depth_text(engine_depths(refs, rows, options, 1000), all_refs)
    assert got == expected


# ---------------------------------------------------------------------------
# htslib conformance SAM files
# ---------------------------------------------------------------------------

# Files with a reference of hundreds of megabases (embed_MD.sam, index2.sam)
# are left out: both tools and the engine allocate per-base arrays of that
# size, beyond this suite's memory/time budget.
MAX_CONFORMANCE_LENGTH = 5_000_000
# Files mosdepth 0.3.3 rejects (it exits 1 with an IndexDefect), so only the
# samtools comparison runs on them:
# - c1#bounds.sam: reads extend past the end of the 10 bp reference;
# - ce#unmap.sam, xx#blank.sam: no @SQ line (mosdepth indexes an empty
#   target list).
MOSDEPTH_REJECTS = {"c1#bounds.sam", "ce#unmap.sam", "xx#blank.sam"}


def _max_length(sam: Path) -> int:
    best = 0
    for line in sam.read_text(errors="replace").splitlines():
        if line.startswith("@SQ"):
            for field in line.split("\t"):
                if field.startswith("LN:"):
                    best = max(best, int(field[3:]))
    return best


def _samtools_runs(bam: Path, args: list[str]) -> list[tuple[str, str, int]]:
    """``samtools depth`` output as (reference, depth, run length) runs.

    Run-length encoding in a pipe (``cut | uniq -c``) keeps million-line
    outputs of the 1 Mb conformance references cheap to compare.
    """
    sam = subprocess.Popen(["samtools", "depth", *args, str(bam)], stdout=subprocess.PIPE)
    cut = subprocess.Popen(["cut", "-f1,3"], stdin=sam.stdout, stdout=subprocess.PIPE)
    assert sam.stdout is not None
    sam.stdout.close()
    out = subprocess.run(["uniq", "-c"], stdin=cut.stdout, capture_output=True, text=True, check=True).stdout
    assert cut.wait() == 0 and sam.wait() == 0, f"samtools depth {' '.join(args)} failed on {bam.name}"
    runs = []
    for line in out.splitlines():
        count, rest = line.strip().split(" ", 1)
        rname, depth = rest.rsplit("\t", 1)
        runs.append((rname, depth, int(count)))
    return runs


def _engine_runs(depths: Iterator[ReferenceDepth], all_references: bool) -> list[tuple[str, str, int]]:
    runs: list[tuple[str, str, int]] = []
    for rd in depths:
        t = samtools_depth_table(rd, all_references=all_references)
        d = t.column("depth").to_numpy()
        assert np.array_equal(t.column("pos").to_numpy(), np.arange(1, len(d) + 1))
        if len(d) == 0:
            continue
        change = np.flatnonzero(d[1:] != d[:-1]) + 1
        starts = np.concatenate(([0], change))
        lengths = np.diff(np.concatenate((starts, [len(d)])))
        runs += [(rd.name, str(v), n) for v, n in zip(d[starts].tolist(), lengths.tolist(), strict=True)]
    return runs


def test_conformance_files(workdir: Path) -> None:
    files = conformance_files()
    if not files:
        pytest.skip(f"no conformance files in {CONFORMANCE_DIR}")
    checked, skipped = [], []
    rejected: set[str] = set()
    out_dir = workdir / "conformance"
    out_dir.mkdir(exist_ok=True)
    for sam in files:
        max_len = _max_length(sam)
        if max_len > MAX_CONFORMANCE_LENGTH:
            skipped.append(f"{sam.name} (reference too long)")
            continue
        stem = sam.stem.replace("#", "_")
        try:
            bam_path = sam_to_bam(sam, out_dir)
        except Exception as exc:  # pysam.SamtoolsError and friends
            skipped.append(f"{sam.name} (pysam sort/index: {str(exc).splitlines()[0][:60]})")
            continue
        refs, rows = records_by_reference(bam_path)
        window = str(max(5, max_len // 8))
        for mosdepth_args in ([], ["-x"]):
            prefix = out_dir / f"md_{stem}{'_x' if mosdepth_args else ''}"
            proc = subprocess.run(["mosdepth", *mosdepth_args, "-b", window, "-T", "1,2",
                                   str(prefix), str(bam_path)], capture_output=True, text=True)
            if proc.returncode != 0:
                rejected.add(sam.name)
                continue
            expected = mosdepth_files(prefix)
            options, kw = options_from_mosdepth_args([*mosdepth_args, "-b", window, "-T", "1,2"])
            ours = out_dir / f"ours_{prefix.name}"
            write_mosdepth_outputs(ours, engine_depths(refs, rows, options, 3), **kw)  # type: ignore[arg-type]
            assert mosdepth_files(ours) == expected, f"mosdepth {' '.join(mosdepth_args)} on {sam.name}"
        has_deletion = any("D" in str(r["cigar"]) for rs in rows.values() for r in rs)
        for sargs, opts in ((["-aa"], CoverageOptions(mode="samtools")),
                            (["-aa", "-J"], CoverageOptions(mode="samtools", count_deletions=True))):
            if "-J" in sargs and not has_deletion:
                continue
            expected_runs = _samtools_runs(bam_path, sargs)
            got_runs = _engine_runs(engine_depths(refs, rows, opts, 3), all_references=True)
            assert got_runs == expected_runs, f"samtools depth {' '.join(sargs)} on {sam.name}"
        checked.append(sam.name)
    print(f"conformance: checked {len(checked)}, mosdepth rejected {sorted(rejected)}, skipped {skipped}")
    assert rejected == MOSDEPTH_REJECTS
    assert len(checked) == len(files) - 2


# ---------------------------------------------------------------------------
# API behaviour
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "bedtools"},
        {"mapq": -1},
        {"mapq": 256},
        {"mapq": True},
        {"flag_exclude": 70000},
        {"flag_include": -3},
        {"count_deletions": True},  # only with mode="samtools"
        {"mode": "samtools", "count_deletions": 1},
    ],
)
def test_options_are_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError) as err:
        CoverageOptions(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def _table(rows: list[tuple[str, int, int, int, str]]) -> pa.Table:
    """Minimal tables: (qname, flag, pos, end, cigar) with mates unset."""
    return pa.table({
        "qname": [r[0] for r in rows], "flag": pa.array([r[1] for r in rows], pa.int32()),
        "pos": pa.array([r[2] for r in rows], pa.int32()), "end": pa.array([r[3] for r in rows], pa.int32()),
        "mapq": pa.array([60] * len(rows), pa.int32()), "cigar": [r[4] for r in rows],
        "rnext": ["*"] * len(rows), "pnext": pa.array([0] * len(rows), pa.int32()),
    })


def test_unsorted_input_and_misuse_are_rejected() -> None:
    acc = DepthAccumulator(100)
    acc.add(_table([("a", 0, 50, 59, "10M")]))
    with pytest.raises(ValueError, match="coordinate-sorted"):
        acc.add(_table([("b", 0, 10, 19, "10M")]))
    acc2 = DepthAccumulator(100)
    with pytest.raises(ValueError, match="CIGAR"):
        acc2.add(_table([("c", 0, 1, 10, "10Q")]))
    with pytest.raises(ValueError):
        DepthAccumulator(-1)
    rd = DepthAccumulator(10).finish()
    assert not rd.has_records and rd.depth.tolist() == [0] * 10
    with pytest.raises(ValueError, match="window"):
        window_means_table(rd, 0)
    with pytest.raises(ValueError, match="past the end"):
        region_means_table(rd, [BedRegion("", 0, 12)])


def test_pending_mates_are_carried_between_chunks(records: tuple) -> None:
    """A stored first mate waits in the accumulator until its mate arrives,
    and the result does not depend on where the chunks are cut."""
    refs, rows = records
    length = dict(refs)["chr1"]
    single = reference_depth("chr1", length, chunk_tables(rows["chr1"], 0))
    acc = DepthAccumulator(length, name="chr1")
    pending_seen = 0
    for table in chunk_tables(rows["chr1"], 500):
        acc.add(table)
        pending_seen = max(pending_seen, acc.n_pending)
    assert pending_seen > 0
    rd = acc.finish()
    assert rd.depth.tolist() == single.depth.tolist()
    with pytest.raises(ValueError):
        acc.add(chunk_tables(rows["chr1"], 0)[0])
