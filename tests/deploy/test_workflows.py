"""The workflow recipes in examples/, executed and checked against samtools.

1. ``examples/snakemake/Snakefile`` runs with Snakemake (from PyPI, the test extra) on 2 cores:
   per-shard fan-out (``bams3 chunks --shard`` / ``bams3 cat --filter``) and a merge.
2. ``examples/nextflow/main.nf`` cannot run here (no Nextflow): its process scripts are rendered
   with the same parameters, compared with the commands Snakemake ran (the same script, the same
   arguments), and run with bash to the same merged file.
3. ``examples/parallel/*.sh``, the GNU parallel recipes: 24 references counted at once, 100
   regions, and every chunk decoded by its own job.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bams3_spark.convert import convert
from bams3_spark.demo import make_sample_bam
from tests.support.oracles import ROOT, samtools

EXAMPLES = ROOT / "examples"
STEPS = EXAMPLES / "workflows" / "bams3-steps.sh"
FILTER = "mapq >= 30 and flag & 1024 == 0"
#: The same selection for samtools view -c.
SAMTOOLS_FILTER = ["-q", "30", "-F", "1024"]
#: The seed document's 24 references.
REFERENCES = tuple((f"chr{c}", 60_000 + 7_000 * i) for i, c in enumerate([*range(1, 23), "X", "Y"]))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("samtools") is None, reason="samtools (oracle) missing"),
]


def tool_env() -> dict[str, str]:
    """This environment with the venv's commands (bams3, snakemake) first on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.fixture(scope="module")
def cohort_sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A simulated sample on 24 references (plus unplaced reads), and its dataset in 64 Kbp windows."""
    tmp = tmp_path_factory.mktemp("workflows")
    bam = make_sample_bam(tmp / "sample.bam", pairs=6_000, seed=5, contigs=REFERENCES)
    ds = tmp / "sample.bams3"
    convert(str(bam), str(ds), chunk_size="256K", max_chunk_records=400)
    return bam, str(ds)


def samtools_counts(bam: Path, filtered: bool) -> dict[str, int]:
    """``samtools view -c`` of every reference and of ``*``, zero counts left out."""
    names = [name for name, _ in REFERENCES] + ["*"]
    extra = SAMTOOLS_FILTER if filtered else []
    counts = {n: int(samtools("view", "-c", *extra, str(bam), n)) for n in names}
    return {n: c for n, c in counts.items() if c}


def read_tsv(path: Path, header: bool) -> dict[str, int]:
    lines = path.read_text().splitlines()
    if header:
        assert lines[0] == "reference\treads"
        lines = lines[1:]
    return {name: int(n) for name, n in (line.split("\t") for line in lines)}


@pytest.fixture(scope="module")
def snakemake_run(
    cohort_sample: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """Run the Snakefile with 2 cores and 3 shards; return (its directory, its log)."""
    _, ds = cohort_sample
    work = tmp_path_factory.mktemp("snakemake")
    snakemake = Path(sys.executable).with_name("snakemake")
    assert snakemake.exists(), "snakemake missing: install the test extra (pip install -e '.[test]')"
    proc = subprocess.run(
        [str(snakemake), "-s", str(EXAMPLES / "snakemake" / "Snakefile"), "--cores", "2", "--printshellcmds",
         "--directory", str(work), "--config", f"dataset={ds}", "shards=3", "out=results"],
        capture_output=True, text=True, env=tool_env(), timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work, proc.stdout + proc.stderr


def test_snakemake_pipeline_matches_samtools(
    cohort_sample: tuple[Path, str], snakemake_run: tuple[Path, str]
) -> None:
    bam, _ = cohort_sample
    work, _ = snakemake_run
    merged = read_tsv(work / "results" / "reads_per_reference.tsv", header=True)
    assert merged == samtools_counts(bam, filtered=True)
    # Three shard files, each a part of the whole.
    parts = [read_tsv(work / "results" / "shards" / f"{i}.tsv", header=False) for i in range(3)]
    assert all(parts) and sum((Counter(p) for p in parts), Counter()) == Counter(merged)


def _nextflow_scripts() -> dict[str, str]:
    """The script block of each process in main.nf."""
    text = (EXAMPLES / "nextflow" / "main.nf").read_text()
    found = dict(re.findall(r'process (\w+) \{.*?script:\s*"""\s*(.*?)\s*"""', text, flags=re.S))
    assert set(found) == {"SHARD", "MERGE"}, found
    return found


def _render(script: str, values: dict[str, str]) -> str:
    """Interpolate a Groovy script string's ``${...}`` the way Nextflow does for these names."""
    def value(m: re.Match[str]) -> str:
        assert m.group(1) in values, f"main.nf uses ${{{m.group(1)}}}, unknown to the test"
        return values[m.group(1)]

    return re.sub(r"\$\{([\w.]+)\}", value, script)


def _command(line: str) -> tuple[list[str], str]:
    """(argv with the steps script resolved, redirect target) of a ``bash STEPS ... > OUT`` line."""
    words = shlex.split(line)
    assert words[0] == "bash" and words[-2] == ">", line
    return [words[0], os.path.realpath(words[1]), *words[2:-2]], words[-1]


def test_nextflow_runs_the_snakemake_commands(
    cohort_sample: tuple[Path, str], snakemake_run: tuple[Path, str], tmp_path: Path
) -> None:
    _, ds = cohort_sample
    work, log = snakemake_run
    # Snakemake 9 logs "Shell command: bash ..." (older releases: the bare command).
    lines = [line.strip().removeprefix("Shell command: ") for line in log.splitlines()]
    ran = [_command(line) for line in lines if line.startswith("bash ")]
    shard_cmds = sorted(argv for argv, _ in ran if argv[2] == "shard")
    merge_cmds = [argv for argv, _ in ran if argv[2] == "merge"]
    assert len(shard_cmds) == 3 and len(merge_cmds) == 1, log

    scripts = _nextflow_scripts()
    params = {"projectDir": str(EXAMPLES / "nextflow"), "params.dataset": ds, "params.shards": "3",
              "params.filter": FILTER}
    nf_shards = []
    for i in range(3):
        argv, target = _command(_render(scripts["SHARD"], {**params, "i": str(i)}))
        nf_shards.append(argv)
        assert target == f"shard_{i}.tsv"
        # Run it as Nextflow would, in the task's directory.
        proc = subprocess.run(_render(scripts["SHARD"], {**params, "i": str(i)}), shell=True, cwd=tmp_path,
                              env=tool_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    # The same script and the same arguments as the Snakemake jobs.
    assert sorted(nf_shards) == shard_cmds
    assert os.path.realpath(STEPS) == shard_cmds[0][1]
    parts = " ".join(f"shard_{i}.tsv" for i in range(3))
    merge_line = _render(scripts["MERGE"], {**params, "parts": parts})
    argv, target = _command(merge_line)
    assert argv[:3] == merge_cmds[0][:3] and len(argv) == len(merge_cmds[0])
    assert target == "reads_per_reference.tsv"
    proc = subprocess.run(
        merge_line, shell=True, cwd=tmp_path, env=tool_env(), capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "reads_per_reference.tsv").read_bytes() == (
        work / "results" / "reads_per_reference.tsv"
    ).read_bytes()


def test_steps_script_refuses_bad_usage() -> None:
    for args in ([], ["shard", "ds"], ["frobnicate"]):
        proc = subprocess.run(["bash", str(STEPS), *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "usage:" in proc.stderr


needs_parallel = pytest.mark.skipif(shutil.which("parallel") is None, reason="GNU parallel missing")


@needs_parallel
def test_parallel_counts_24_references(cohort_sample: tuple[Path, str]) -> None:
    bam, ds = cohort_sample
    script = EXAMPLES / "parallel" / "count_references.sh"
    proc = subprocess.run(
        [str(script), ds, "24"], capture_output=True, text=True, env=tool_env(), timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    expected = samtools_counts(bam, filtered=False)
    assert [name for name, _ in lines] == list(expected)  # the dataset's order, '*' last
    assert {name: int(n) for name, n in lines} == expected and len(expected) == 25
    proc = subprocess.run([str(script), ds, "8", "--filter", FILTER], capture_output=True, text=True,
                          env=tool_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    got = {name: int(n) for name, n in (line.split("\t") for line in proc.stdout.splitlines())}
    assert {k: v for k, v in got.items() if v} == samtools_counts(bam, filtered=True)


@needs_parallel
def test_parallel_counts_100_regions(cohort_sample: tuple[Path, str], tmp_path: Path) -> None:
    bam, ds = cohort_sample
    rng = random.Random(3)
    regions = []
    for _ in range(100):
        name, length = rng.choice(REFERENCES)
        start = rng.randint(1, length - 1)
        regions.append(f"{name}:{start:,}-{min(length, start + rng.randint(1, 40_000)):,}")
    listing = tmp_path / "regions.txt"
    listing.write_text("# 100 random regions\n" + "\n".join(regions) + "\n\n")
    proc = subprocess.run([str(EXAMPLES / "parallel" / "count_regions.sh"), ds, str(listing), "10"],
                          capture_output=True, text=True, env=tool_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [r for r, _ in rows] == regions
    assert [int(n) for _, n in rows] == [int(samtools("view", "-c", str(bam), r)) for r in regions]


@needs_parallel
def test_parallel_decodes_every_chunk(cohort_sample: tuple[Path, str], tmp_path: Path) -> None:
    bam, ds = cohort_sample
    out = tmp_path / "decoded"
    proc = subprocess.run([str(EXAMPLES / "parallel" / "decode_chunks.sh"), ds, str(out), "4"],
                          capture_output=True, text=True, env=tool_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.glob("*.sam"))
    n_chunks = len(subprocess.run([sys.executable, "-m", "bams3_spark", "chunks", ds], capture_output=True,
                                  text=True, check=True).stdout.split())
    assert len(files) == n_chunks and not list(out.glob("*.tmp"))
    records = Counter(line for f in files for line in f.read_text().splitlines())
    assert records == Counter(samtools("view", str(bam)).splitlines())
    # With regions: only the chunks they touch.
    some = tmp_path / "chr7"
    proc = subprocess.run([str(EXAMPLES / "parallel" / "decode_chunks.sh"), ds, str(some), "2", "chr7"],
                          capture_output=True, text=True, env=tool_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    got = Counter(line for f in some.glob("*.sam") for line in f.read_text().splitlines())
    assert got == Counter(samtools("view", str(bam), "chr7").splitlines())
