"""Coverage of BAMS3 datasets (``bams3 coverage``, bams3_spark.coverage.engine) against the real tools.

Every expectation comes from ``mosdepth`` 0.3.3 or ``samtools depth`` 1.16 run
on the BAM the dataset was converted from: mosdepth's files must be identical
after ``zcat``, ``samtools depth -a`` output identical. Datasets are converted
with small windows and a small record bound, so references span many chunk
objects and window parts: reads straddle chunks, pairs are split between
chunks (also between parts of one window in the 20,000-read pile-up), and the
per-reference order of chunks matters.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from bams3_spark import open_dataset
from bams3_spark.cli import main
from bams3_spark.convert import convert
from bams3_spark.coverage.chunked import ChunkMates, chunk_partial, mate_corrections
from bams3_spark.coverage.engine import coverage_table, iter_depths, write_coverage
from bams3_spark.coverage.options import CoverageOptions, required_columns
from bams3_spark.coverage.slices import compute_slice
from bams3_spark.dataset.chunks import ChunkRef
from bams3_spark.exceptions import InvalidArgumentError, RegionError
from tests.coverage.test_mosdepth import _engine_runs, _max_length, _samtools_runs, build_bam
from tests.support.oracles import conformance_files, sam_to_bam

pytestmark = pytest.mark.skipif(
    shutil.which("mosdepth") is None or shutil.which("samtools") is None,
    reason="needs the mosdepth and samtools oracles",
)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def read_text(path: Path) -> str:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rt") as fh:
            return fh.read()
    return path.read_text()


def output_files(prefix: Path) -> dict[str, str]:
    """Text of every output file of a run (mosdepth's ``.csi`` indexes excluded)."""
    return {
        p.name[len(prefix.name):]: read_text(p)
        for p in sorted(prefix.parent.glob(prefix.name + ".*"))
        if not p.name.endswith(".csi") and ".part" not in p.name
    }


def mosdepth(bam: Path, prefix: Path, *args: str) -> dict[str, str]:
    subprocess.run(["mosdepth", *args, str(prefix), str(bam)], check=True, capture_output=True)
    return output_files(prefix)


def per_base_runs(text: str) -> list[tuple[str, int, int, int]]:
    out = []
    for line in text.splitlines():
        r, s, e, d = line.split("\t")
        out.append((r, int(s), int(e), int(d)))
    return out


def clip_runs(runs: list[tuple[str, int, int, int]], rname: str, start: int, end: int) -> list[tuple]:
    """mosdepth's whole-reference per-base runs cut to a region."""
    return [
        (r, max(s, start), min(e, end), d) for r, s, e, d in runs if r == rname and s < end and e > start
    ]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["coverage", *args])
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("covds")


@pytest.fixture(scope="module")
def mates_bam(work: Path) -> Path:
    """Mate-overlap cases, spliced reads, deletions, duplicates, secondary,
    supplementary and QC-fail reads, and a 20,000-read pile-up (tests/test_coverage.py)."""
    return build_bam(work / "mates.bam")


@pytest.fixture(scope="module")
def mates_ds(mates_bam: Path, work: Path) -> str:
    out = str(work / "mates.bams3")
    convert(str(mates_bam), out, chunk_size="256K", max_chunk_records=500)
    return out


@pytest.fixture(scope="module")
def multi_ds(multi_bam: Path, work: Path) -> str:
    """The generated multi-contig BAM: 256 Kbp windows, reads straddling every
    window edge, 600 kbp splices, a 700-read pile-up split into parts."""
    out = str(work / "multi.bams3")
    convert(str(multi_bam), out, chunk_size="256K", max_chunk_records=200)
    return out


@pytest.fixture(scope="module")
def beds(work: Path) -> dict[str, Path]:
    """BED files for the two BAMs: names, unsorted lines, an empty reference,
    a reference name with colons, regions across window edges."""
    mates = work / "mates_regions.bed"
    mates.write_text(
        "chr1\t5000\t6200\tgeneB\n"
        "chr1\t0\t150\tgeneA\n"
        "chr2\t100\t4000\n"
        "chrPile\t900\t2000\tpile\n"
        "chrEmpty\t10\t500\tnothing\n"
    )
    multi = work / "multi_regions.bed"
    multi.write_text(
        "chr1\t262000\t262300\tedge\n"
        "chr1\t0\t1000000\tbig\n"
        "HLA-DRB1*15:01:01:01\t10\t10000\thla\n"
        "chrEmpty\t10\t500\n"
        "chr2\t699000\t700000\tend\n"
    )
    return {"mates": mates, "multi": multi}


# ---------------------------------------------------------------------------
# mosdepth files
# ---------------------------------------------------------------------------

MOSDEPTH_CASES = [
    [],
    ["-b", "1000", "-T", "1,10,30"],
    ["-x", "-b", "5000", "-T", "2"],
    ["-n", "-b", "BED", "-T", "0,1,5"],
    ["-Q", "20", "-F", "0", "-b", "700"],
    ["-F", "1024", "-i", "2", "-n", "-b", "BED"],
]


@pytest.mark.parametrize("which", ["mates", "multi"])
@pytest.mark.parametrize("args", MOSDEPTH_CASES, ids=lambda a: " ".join(a) or "default")
def test_files_match_mosdepth(which: str, args: list[str], mates_bam: Path, mates_ds: str, multi_bam: Path,
                              multi_ds: str, beds: dict[str, Path], work: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    bam, ds = (mates_bam, mates_ds) if which == "mates" else (multi_bam, multi_ds)
    args = [str(beds[which]) if a == "BED" else a for a in args]
    tag = f"{which}_" + ("_".join(a.replace("/", "").replace(",", "-") for a in args)[-50:] or "default")
    expected = mosdepth(bam, work / f"md_{tag}", *args)
    workers = "2" if len(args) % 2 else "1"
    code, err = cli(capsys, ds, "-o", str(work / f"ours_{tag}"), "-t", workers, *args)
    assert code == 0, err
    got = output_files(work / f"ours_{tag}")
    assert sorted(got) == sorted(expected)
    for suffix in expected:
        assert got[suffix] == expected[suffix], f"{suffix} differs for mosdepth {' '.join(args)} on {which}"


def test_library_tables_match_mosdepth(mates_bam: Path, mates_ds: str, multi_ds: str, work: Path) -> None:
    expected = mosdepth(mates_bam, work / "md_tables", "-b", "250")
    windows = coverage_table(mates_ds, by=250, workers=2)
    assert windows.schema.names == ["sample", "rname", "start", "end", "mean_depth"]
    assert set(windows.column("sample").to_pylist()) == {"mates"}
    cols = (windows.column(c).to_pylist() for c in ("rname", "start", "end", "mean_depth"))
    lines = [f"{r}\t{s}\t{e}\t{m:.2f}\n" for r, s, e, m in zip(*cols, strict=True)]
    assert "".join(lines) == expected[".regions.bed.gz"]
    runs = coverage_table(mates_ds)
    assert runs.schema == pa.schema([("sample", pa.string()), ("rname", pa.string()), ("start", pa.int32()),
                                     ("end", pa.int32()), ("depth", pa.int32())])
    assert list(zip(*(runs.column(c).to_pylist() for c in ("rname", "start", "end", "depth")), strict=True)) \
        == per_base_runs(expected[".per-base.bed.gz"])
    # Several samples: one table, dataset order, a sample column.
    both = coverage_table([multi_ds, mates_ds], by=100_000, workers=2)
    samples = both.column("sample").to_pylist()
    assert samples[0] == "sampleA" and samples[-1] == "mates"
    assert samples == sorted(samples, key=["sampleA", "mates"].index)


# ---------------------------------------------------------------------------
# samtools depth
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        (["-aa"], CoverageOptions(mode="samtools")),
        (["-aa", "-J", "-Q", "10"], CoverageOptions(mode="samtools", mapq=10, count_deletions=True)),
        (["-aa", "-g", "0x400"], CoverageOptions(mode="samtools", flag_exclude=1796 & ~0x400)),
    ],
    ids=lambda c: " ".join(c[0]),
)
def test_samtools_depth(case: tuple[list[str], CoverageOptions], mates_bam: Path, mates_ds: str,
                        multi_bam: Path, multi_ds: str) -> None:
    args, options = case
    for bam, ds in ((mates_bam, mates_ds), (multi_bam, multi_ds)):
        got = _engine_runs((s.depth for s in iter_depths(ds, options, workers=2)), all_references=True)
        assert got == _samtools_runs(bam, args), f"samtools depth {' '.join(args)} on {bam.name}"


# ---------------------------------------------------------------------------
# Regions
# ---------------------------------------------------------------------------

REGIONS = [
    "chr1:1-12000",  # the whole reference
    "chr1:950-2100",  # mates split between windows of the pile of chunks
    "chr1:3001-3001",  # one base, on a window edge
    "chrPile:1000-1999",  # inside the 20,000-read pile-up
    "chr2:2,400-2,600",
    "chrEmpty:100-200",
    "chrTiny",
]
MULTI_REGIONS = [
    "chr1:262,000-262,300", "chr1:99,990-700,100", "{HLA-DRB1*15:01:01:01}:5-50", "chr2:699,900-",
]


@pytest.mark.parametrize("mode", ["mosdepth", "fast"])
def test_region_depth_is_exact_at_the_edges(mode: str, mates_bam: Path, mates_ds: str, multi_bam: Path,
                                            multi_ds: str, work: Path) -> None:
    """The per-base runs of a region are mosdepth's whole-reference runs cut at its edges."""
    for bam, ds, regions in ((mates_bam, mates_ds, REGIONS), (multi_bam, multi_ds, MULTI_REGIONS)):
        args = ["-x"] if mode == "fast" else []
        whole = per_base_runs(mosdepth(bam, work / f"md_reg_{bam.stem}_{mode}", *args)[".per-base.bed.gz"])
        d = open_dataset(ds)
        for text in regions:
            r = d.parse_region(text)
            got = coverage_table(ds, region=text, options=CoverageOptions(mode=mode))
            rows = list(zip(*(got.column(c).to_pylist() for c in ("rname", "start", "end", "depth")),
                            strict=True))
            assert rows == clip_runs(whole, r.rname, r.start, r.end), f"{text} on {bam.name}"


def test_region_matches_samtools_depth_r(mates_bam: Path, mates_ds: str) -> None:
    options = CoverageOptions(mode="samtools")
    for text in ("chr1:950-2100", "chrPile:1990-2010", "chr2:3001-3001"):
        expected = subprocess.run(["samtools", "depth", "-a", "-r", text, str(mates_bam)], check=True,
                                  capture_output=True, text=True).stdout
        (sl,) = list(iter_depths(mates_ds, options, region=text))
        got = "".join(f"{sl.rname}\t{sl.start + i + 1}\t{v}\n" for i, v in enumerate(sl.depth.depth.tolist()))
        assert got == expected, text


def test_region_files(mates_bam: Path, mates_ds: str, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--region files: per-base runs cut to the region; the reference's windows clipped to it
    (what mosdepth prints for those windows as a BED file)."""
    region, (rname, start, end) = "chr1:950-2,100", ("chr1", 949, 2100)
    code, err = cli(capsys, mates_ds, "-o", str(work / "ours_region"), "--region", region, "-b", "500",
                    "-T", "1,20")
    assert code == 0, err
    got = output_files(work / "ours_region")
    assert sorted(got) == [
        ".mosdepth.summary.txt", ".per-base.bed.gz", ".regions.bed.gz", ".thresholds.bed.gz",
    ]
    whole = per_base_runs(mosdepth(mates_bam, work / "md_region_whole")[".per-base.bed.gz"])
    runs = clip_runs(whole, rname, start, end)
    assert per_base_runs(got[".per-base.bed.gz"]) == runs
    windows = work / "region_windows.bed"
    windows.write_text("chr1\t949\t1000\nchr1\t1000\t1500\nchr1\t1500\t2000\nchr1\t2000\t2100\n")
    expected = mosdepth(mates_bam, work / "md_region_windows", "-n", "-b", str(windows), "-T", "1,20")
    assert got[".regions.bed.gz"] == expected[".regions.bed.gz"]
    assert got[".thresholds.bed.gz"] == expected[".thresholds.bed.gz"]
    bases = sum((e - s) * d for _, s, e, d in runs)
    depths = [d for _, _, _, d in runs]
    row = f"{rname}\t{end - start}\t{bases}\t{bases / (end - start):.2f}\t{min(depths)}\t{max(depths)}\n"
    assert got[".mosdepth.summary.txt"] == "chrom\tlength\tbases\tmean\tmin\tmax\n" + row + row.replace(
        rname, "total", 1)


# ---------------------------------------------------------------------------
# htslib conformance files
# ---------------------------------------------------------------------------

# mosdepth 0.3.3 exits 1 on these (reads past the reference end; no @SQ).
MOSDEPTH_REJECTS = {"c1#bounds.sam", "ce#unmap.sam", "xx#blank.sam"}


def test_conformance_files(work: Path) -> None:
    files = conformance_files()
    if not files:
        pytest.skip("no conformance files")
    out = work / "conformance"
    out.mkdir()
    checked, rejected, skipped = [], set(), []
    for sam in files:
        if _max_length(sam) > 5_000_000:  # embed_MD, index2: per-base arrays of hundreds of Mbp
            skipped.append(sam.name)
            continue
        try:
            bam = sam_to_bam(sam, out)
        except Exception as exc:  # pysam refuses a few malformed files
            skipped.append(f"{sam.name} ({str(exc).splitlines()[0][:40]})")
            continue
        ds = str(out / (bam.stem + ".bams3"))
        convert(str(bam), ds, allow_empty=True, max_chunk_records=3)
        window = str(max(5, _max_length(sam) // 8))
        for args in ([], ["-x"]):
            prefix = out / f"md_{bam.stem}{'_x' if args else ''}"
            proc = subprocess.run(["mosdepth", *args, "-b", window, "-T", "1,2", str(prefix), str(bam)],
                                  capture_output=True)
            if proc.returncode != 0:
                rejected.add(sam.name)
                continue
            ours = out / f"ours_{prefix.name}"
            options = CoverageOptions(mode="fast" if args else "mosdepth")
            write_coverage(ds, ours, by=int(window), thresholds=[1, 2], options=options, workers=1)
            assert output_files(ours) == output_files(prefix), f"mosdepth {' '.join(args)} on {sam.name}"
        for sargs, opts in ((["-aa"], CoverageOptions(mode="samtools")),
                            (["-aa", "-J"], CoverageOptions(mode="samtools", count_deletions=True))):
            got = _engine_runs((s.depth for s in iter_depths(ds, opts)), all_references=True)
            assert got == _samtools_runs(bam, sargs), f"samtools depth {' '.join(sargs)} on {sam.name}"
        checked.append(sam.name)
    assert rejected == MOSDEPTH_REJECTS
    assert len(checked) >= len(files) - 4, (skipped, len(checked))


# ---------------------------------------------------------------------------
# Chunk-parallel form (the Spark job's map and mate steps), without Spark
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [CoverageOptions(), CoverageOptions(mapq=20), CoverageOptions(flag_exclude=0),
     CoverageOptions(mode="fast"), CoverageOptions(mode="samtools", count_deletions=True)],
    ids=["default", "Q20", "F0", "fast", "samtools-J"],
)
def test_chunk_partials_add_up_to_the_sequential_count(options: CoverageOptions, mates_ds: str,
                                                       multi_ds: str) -> None:
    corrected = 0
    for path in (mates_ds, multi_ds):
        ds = open_dataset(path)
        for rname, length in ds.references:
            expected = compute_slice(ds, rname, options).depth.depth.astype(np.int64)
            total = np.zeros(length + 1, dtype=np.int64)
            mates = []
            for key, info in enumerate(ds.index(rname).chunks):
                part = chunk_partial(ChunkRef(ds.storage, rname, info).read(required_columns(options)),
                                     rname, length, options)
                total[part.offset: part.offset + len(part.contribution)] += part.contribution
                mates.append(ChunkMates(key, part.pending, part.groups))
            alone = total[:length].copy()
            corrections = mate_corrections(rname, length, options, mates[::-1])  # any order
            for offset, delta in corrections:
                total[offset: offset + len(delta)] += delta
            assert np.array_equal(total[:length], expected), f"{rname} of {path}"
            if corrections:
                corrected += 1
                assert not np.array_equal(alone, expected)
    # Pairs split between chunks exist in these datasets: the correction is needed.
    assert corrected > 0 if options.mode == "mosdepth" else corrected == 0


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


def test_plot(mates_ds: str, multi_ds: str, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = work / "cohort.png"
    code, err = cli(capsys, mates_ds, multi_ds, "--plot", str(png), "-t", "2")
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 30_000
    assert not list(work.glob("*.mosdepth.summary.txt.*"))
    png2 = work / "region.png"
    code, err = cli(capsys, mates_ds, "--region", "chrPile:700-2,300", "--plot", str(png2), "-o",
                    str(work / "plotted"))
    assert code == 0, err
    assert png2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (work / "plotted.per-base.bed.gz").exists()


# ---------------------------------------------------------------------------
# Bad input: one line, non-zero exit
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["NOT_A_DATASET", "-o", "X"], "not a BAMS3 dataset"),
        (["DS", "-o", "X", "--region", "chrNope:1-10"], "chrNope"),
        (["DS", "-o", "X", "--region", "chr1:20-10"], "chr1:20-10"),
        (["DS", "-o", "X", "--region", "*"], "unplaced"),
        (["DS", "-o", "X", "-T", "1,2"], "--thresholds needs --by"),
        (["DS", "-o", "X", "-J"], "--count-deletions needs --samtools"),
        (["DS", "-o", "X", "-b", "0"], "window size must be positive"),
        (["DS", "-o", "X", "-b", "missing.bed"], "missing.bed"),
        (["DS", "-o", "NODIR/X"], "does not exist"),
        (["DS"], "-o PREFIX"),
        (["DS", "-o", "X", "-b", "PASTEND"], "past the end"),
        (["DS", "DS", "-o", "X"], "appears twice"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str, mates_ds: str, work: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    past = work / "pastend.bed"
    past.write_text("chr1\t0\t999999\n")
    subst = {"DS": mates_ds, "X": str(work / "bad"), "NODIR/X": str(work / "nodir" / "x"),
             "NOT_A_DATASET": str(work), "PASTEND": str(past), "missing.bed": str(work / "missing.bed")}
    code, err = cli(capsys, *[subst.get(a, a) for a in args])
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bams3 coverage: error: "), err
    assert message in lines[0]
    assert not list(work.glob("bad.*"))


def test_usage_errors_exit_2(mates_ds: str, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--fast-mode", "--samtools"], ["-Q", "300"], ["-F", "zz"], ["-n", "--per-base"]):
        with pytest.raises(SystemExit) as exc:
            main(["coverage", mates_ds, "-o", "x", *args])
        assert exc.value.code == 2
    capsys.readouterr()


def test_api_errors(mates_ds: str) -> None:
    with pytest.raises(RegionError):
        coverage_table(mates_ds, region="chrNope")
    with pytest.raises(InvalidArgumentError):
        coverage_table(mates_ds, by=-5)
    with pytest.raises(InvalidArgumentError):
        coverage_table([])


@pytest.mark.s3
def test_dataset_on_s3(mates_bam: Path, mates_ds: str, s3_bucket: str, s3_opts: dict[str, str]) -> None:
    url = f"s3://{s3_bucket}/mates.bams3"
    convert(str(mates_bam), url, chunk_size="256K", max_chunk_records=2000, storage_options=s3_opts)
    got = coverage_table(url, by=1000, workers=2, **s3_opts)
    local = coverage_table(mates_ds, by=1000)
    assert got.drop_columns(["sample"]).equals(local.drop_columns(["sample"]))
