"""Counting and query commands never load pandas (bams3_spark.arrays): pyarrow's pandas integration
costs every process about 0.3 s and 35 MB (a windowed coverage run of the bench BAM, two processes,
spent a fifth of its memory on it).

pyarrow loads pandas on its first conversion of Python or numpy values; the engines convert
through :mod:`bams3_spark.arrays` instead. Each command runs in a fresh interpreter, on real data,
and reports whether pandas was loaded by the time it finished.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bams3_spark.convert import convert


@pytest.fixture(scope="module")
def ds(multi_bam: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("startup") / "multi.bams3"
    convert(str(multi_bam), str(out), chunk_size="256K", max_chunk_records=300)
    return str(out)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sites") / "sites.bed"
    path.write_text("chr1\t1000\t1100\nchr2\t5000\t5010\n")
    return str(path)


@pytest.mark.parametrize(
    "argv",
    [
        ["coverage", "{ds}", "-n", "--by", "1000", "-t", "2", "-o", "{out}/w"],
        ["coverage", "{ds}", "--by", "5000", "-T", "1,5", "-o", "{out}/b"],
        ["coverage", "{ds}", "-x", "-o", "{out}/x"],
        ["coverage", "{ds}", "--samtools", "-n", "--region", "chr1:1-300000", "-o", "{out}/s"],
        ["genotype", "{ds}", "--sites", "{sites}", "-o", "{out}/g.tsv"],
        ["genotype", "{ds}", "--sites", "{sites}", "-o", "{out}/g.vcf.gz"],
        ["query", "{ds}", "chr1:1-300000", "chr2", "--count"],
        ["query", "{ds}", "chr1:1-300000", "-h", "-o", "{out}/q.sam"],
        ["query", "{ds}", "chr2", "--filter", "mapq >= 30", "-o", "{out}/q.bam"],
    ],
    ids=["windows", "per-base", "fast", "samtools-region", "genotype-tsv", "genotype-vcf", "count", "sam",
         "bam"],
)
def test_engine_commands_never_load_pandas(argv: list[str], ds: str, sites: str, tmp_path: Path) -> None:
    args = [a.format(ds=ds, sites=sites, out=tmp_path) for a in argv] + ["--quiet"] * (argv[0] != "query")
    code = (
        "import sys\n"
        "from bams3_spark.cli.main import main\n"
        f"rc = main({args!r})\n"
        "print(rc, 'pandas' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stderr.strip().splitlines()[-1] == "0 False", proc.stderr[-2000:]
