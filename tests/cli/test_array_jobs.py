"""The command forms workflow engines and array jobs use: ``bams3 chunks --shard I/N``,
``bams3 cat -`` (a chunk on stdin), ``--parallel auto``, and the hint when a chunk is given
where a dataset belongs. Records are checked against samtools on the source BAM."""

from __future__ import annotations

import io
import shutil
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from bams3_spark.cli import main
from bams3_spark.cli.common import resolve_parallel
from bams3_spark.convert import convert
from bams3_spark.parallel import IO_WORKERS_MAX, IO_WORKERS_MIN, usable_cores
from bams3_spark.query import shard_indices
from tests.support.cli import run_bams3
from tests.support.oracles import samtools

pytestmark = pytest.mark.skipif(shutil.which("samtools") is None, reason="samtools (oracle) missing")


@pytest.fixture(scope="module")
def ds(multi_bam: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("shards") / "multi.bams3"
    convert(str(multi_bam), str(out), chunk_size="256K", max_chunk_records=300)
    return str(out)


def _long(ds: str, *args: str) -> list[list[str]]:
    """``bams3 chunks -l`` rows, run in this process (many calls: a process each would be slow)."""
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["chunks", "-l", ds, *args]) == 0
    return [line.split("\t") for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 500])
def test_shards_partition_the_list_balanced_by_bytes(ds: str, n: int) -> None:
    full = _long(ds)
    shards = [_long(ds, "--shard", f"{i}/{n}") for i in range(n)]
    urls = [row[0] for shard in shards for row in shard]
    # disjoint, and together the whole list; each shard keeps the list's order
    assert sorted(urls) == sorted(row[0] for row in full) and len(set(urls)) == len(urls)
    order = {row[0]: i for i, row in enumerate(full)}
    for shard in shards:
        assert [order[row[0]] for row in shard] == sorted(order[row[0]] for row in shard)
    loads = [sum(int(row[6]) for row in shard) for shard in shards]
    assert max(loads) - min(loads) <= max(int(row[6]) for row in full)
    if n >= len(full):
        assert sorted(len(s) for s in shards)[-len(full):] == [1] * len(full)


def test_shards_with_regions_and_their_records_match_samtools(ds: str, multi_bam: Path) -> None:
    """The array-job recipe: each of N jobs decodes its shard; all together are the BAM's records."""
    n = 4
    records: Counter[str] = Counter()
    for i in range(n):
        urls = run_bams3(["chunks", ds, "--shard", f"{i}/{n}"]).stdout.split()
        assert urls == [row[0] for row in _long(ds, "--shard", f"{i}/{n}")]
        if urls:
            proc = run_bams3(["cat", *urls])
            assert proc.returncode == 0, proc.stderr
            records.update(proc.stdout.splitlines())
    assert records == Counter(samtools("view", str(multi_bam)).splitlines())
    region = ["chr1:100,000-900,000"]
    full = {row[0] for row in _long(ds, *region)}
    parts = [{row[0] for row in _long(ds, *region, "--shard", f"{i}/3")} for i in range(3)]
    assert set().union(*parts) == full and sum(map(len, parts)) == len(full)


def test_shard_indices_is_deterministic_and_heaviest_first() -> None:
    sizes = [5, 100, 5, 5, 60, 40, 5]
    parts = [shard_indices(sizes, i, 2) for i in range(2)]
    assert parts == [[1], [0, 2, 3, 4, 5, 6]] or sum(sizes[i] for i in parts[0]) <= 120
    assert sorted(parts[0] + parts[1]) == list(range(len(sizes)))
    assert shard_indices([], 0, 3) == []


@pytest.mark.parametrize("bad", ["4/4", "5/4", "1/0", "-1/3", "x", "1", "a/b", "1/2/3"])
def test_bad_shard_is_one_usage_line(ds: str, bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["chunks", ds, "--shard", bad])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1, err
    assert lines[0].startswith("bams3 chunks: error: argument --shard"), err


def test_bad_shard_from_the_real_command(ds: str) -> None:
    proc = run_bams3(["chunks", ds, "--shard", "3/3"])
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "bams3 chunks: error: argument --shard: shard index must be from 0 to N-1 (0-based), got '3/3' "
        "(see 'bams3 chunks --help')"
    ]


def test_cat_reads_one_chunk_from_stdin(ds: str, multi_bam: Path) -> None:
    rows = _long(ds, "chr2")
    url, rname, start, end = rows[1][0], rows[1][1], int(rows[1][2]), int(rows[1][3])
    data = Path(url).read_bytes()
    piped = run_bams3(["cat", "-"], stdin=data)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == run_bams3(["cat", url]).stdout
    # The chunk's records are samtools' records starting in its window (and its part of them).
    window = [
        line for line in samtools("view", str(multi_bam), f"{rname}:{start + 1}-{end}").splitlines()
        if start < int(line.split("\t")[3]) <= end
    ]
    got = piped.stdout.splitlines()
    assert len(got) == int(rows[1][5]) and set(got) <= set(window)
    flt = run_bams3(["cat", "-", "--filter", "mapq >= 30"], stdin=data)
    assert flt.returncode == 0
    assert flt.stdout.splitlines() == [ln for ln in got if int(ln.split("\t")[4]) >= 30]


@pytest.mark.parametrize(
    ("data", "needle"),
    [(b"", "stdin: empty"), (b"@HD\tVN:1.6\n", "stdin: not a valid chunk object"), (b"PAR1" * 3, "stdin: ")],
)
def test_cat_bad_stdin_is_one_line(data: bytes, needle: str) -> None:
    proc = run_bams3(["cat", "-"], stdin=data)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bams3 cat: error: ") and needle in lines[0], proc.stderr


def test_query_on_a_chunk_hints_at_cat(ds: str) -> None:
    url = _long(ds)[0][0]
    for args in (["query", url, "-c"], ["query", url, "chr1"], ["info", url]):
        proc = run_bams3(args)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"decode it with 'bams3 cat {url}'" in lines[0], proc.stderr
    # A path that is no chunk keeps the plain message.
    proc = run_bams3(["query", str(Path(ds) / "missing.chunk"), "-c"])
    assert proc.returncode == 1 and "bams3 cat" not in proc.stderr and "not a BAMS3 dataset" in proc.stderr


def test_parallel_auto(ds: str, multi_bam: Path) -> None:
    assert resolve_parallel("auto", ds) == usable_cores()
    assert resolve_parallel("auto", "file://" + ds) == usable_cores()
    remote = resolve_parallel("auto", "s3://bucket/x.bams3")
    assert remote == min(IO_WORKERS_MAX, max(IO_WORKERS_MIN, 4 * usable_cores()))
    assert resolve_parallel(3, "s3://bucket/x.bams3") == 3
    for cmd in (
        ["query", ds, "chr1", "chr2:1-300000", "--parallel", "auto"],
        ["export", ds, "-", "--parallel", "auto"],
    ):
        proc = run_bams3(cmd)
        assert proc.returncode == 0, proc.stderr
    assert run_bams3(["query", ds, "chr1", "--parallel", "auto", "-c"]).stdout.strip() == samtools(
        "view", "-c", str(multi_bam), "chr1"
    ).strip()
    bad = run_bams3(["query", ds, "--parallel", "many"])
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
