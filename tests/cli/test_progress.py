"""Progress on long work (``bams3_spark.cli.progress``): drawn on a terminal only, never on stdout,
silent with ``--quiet``, and free for short commands (no tqdm import).

Commands run as users run them, with stderr on a pseudo-terminal and stdout on a pipe; what they
print is compared with samtools and mosdepth-compatible output made without a display.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bams3_spark.cli.progress import ProgressDisplay, progress_for
from bams3_spark.convert import convert
from tests.support.oracles import samtools
from tests.support.tty import run_on_terminal

pytestmark = pytest.mark.skipif(shutil.which("samtools") is None, reason="samtools (oracle) missing")

BAMS3 = [sys.executable, "-m", "bams3_spark"]
NOW = {"BAMS3_PROGRESS_DELAY": "0"}


@pytest.fixture(scope="module")
def ds(multi_bam: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("progress") / "multi.bams3"
    convert(str(multi_bam), str(out), chunk_size="256K", max_chunk_records=300)
    return str(out)


def test_query_draws_progress_and_keeps_stdout_clean(ds: str, multi_bam: Path) -> None:
    regions = ["chr1", "chr2:1-500000", "chr1_KI270706v1_random", "*"]
    proc, shown = run_on_terminal([*BAMS3, "query", ds, *regions, "--parallel", "2"], env=NOW)
    assert proc.returncode == 0
    # stdout: exactly samtools' records; the display went to the terminal only
    assert proc.stdout == subprocess.run(
        ["samtools", "view", str(multi_bam), *regions], capture_output=True, check=True
    ).stdout
    assert b"query:" in shown and b" chunks, " in shown and b"B/s" in shown and b"%|" in shown, shown
    # the bar's line is cleared when the work ends
    assert shown.endswith(b"\r")
    count, shown = run_on_terminal([*BAMS3, "query", ds, *regions, "--count", "--parallel", "auto"], env=NOW)
    expected = sum(int(samtools("view", "-c", str(multi_bam), r)) for r in regions)
    assert count.returncode == 0 and count.stdout == f"{expected}\n".encode()
    assert b"chunks" in shown


def test_export_and_bam_output_draw_progress(ds: str, multi_bam: Path, tmp_path: Path) -> None:
    proc, shown = run_on_terminal([*BAMS3, "export", ds, "-"], env=NOW)
    assert proc.returncode == 0 and b"export:" in shown
    assert proc.stdout.decode() == samtools("view", "--no-PG", "-h", str(multi_bam))
    out = tmp_path / "r.bam"
    proc, shown = run_on_terminal([*BAMS3, "query", ds, "chr1", "-o", str(out)], env=NOW)
    assert proc.returncode == 0 and proc.stdout == b"" and b"query:" in shown
    assert samtools("view", str(out)) == samtools("view", str(multi_bam), "chr1")


def test_coverage_draws_progress_and_writes_the_same_files(ds: str, tmp_path: Path) -> None:
    shown_prefix, quiet_prefix = tmp_path / "shown", tmp_path / "quiet"
    cmd = [*BAMS3, "coverage", ds, "-o", str(shown_prefix), "--by", "1000", "-t", "2"]
    proc, shown = run_on_terminal(cmd, env=NOW)
    assert proc.returncode == 0 and b"coverage:" in shown and b" chunks, " in shown, shown
    quiet, shown = run_on_terminal(
        [*BAMS3, "coverage", ds, "-o", str(quiet_prefix), "--by", "1000", "--quiet"], env=NOW
    )
    assert quiet.returncode == 0 and shown == b""
    for suffix in (".mosdepth.summary.txt", ".mosdepth.global.dist.txt", ".regions.bed.gz"):
        a = Path(str(shown_prefix) + suffix).read_bytes()
        b = Path(str(quiet_prefix) + suffix).read_bytes()
        assert a == b, suffix


def test_silent_without_a_terminal_or_with_quiet(ds: str) -> None:
    piped = subprocess.run([*BAMS3, "query", ds, "chr1", "chr2"], capture_output=True, env=None, timeout=300)
    assert piped.returncode == 0 and piped.stderr == b""
    proc, shown = run_on_terminal([*BAMS3, "query", ds, "chr1", "chr2", "--quiet"], env=NOW)
    assert proc.returncode == 0 and shown == b"" and proc.stdout


def test_no_bar_when_records_go_to_the_terminal_too(ds: str) -> None:
    """SAM printed on the same terminal would be torn by the bar: records win."""
    code = (
        "import os, sys\n"
        "from bams3_spark.cli.main import main\n"
        "os.dup2(2, 1)\n"  # stdout on the terminal too
        f"sys.exit(main(['query', {ds!r}, 'chr2']))\n"
    )
    proc, shown = run_on_terminal([sys.executable, "-c", code], env=NOW)
    assert proc.returncode == 0 and b"chr2\t" in shown and b"query:" not in shown


def test_a_bare_terminal_without_a_size_still_shows_the_bar(ds: str) -> None:
    proc, shown = run_on_terminal([*BAMS3, "query", ds, "chr1", "chr2"], env=NOW, columns=None)
    assert proc.returncode == 0 and b"query:" in shown and b"chunks" in shown


def test_short_commands_never_import_tqdm(ds: str) -> None:
    code = (
        "import sys\n"
        "from bams3_spark.cli.main import main\n"
        f"rc = main(['query', {ds!r}, 'chr1:1-300000', 'chr2', '--count'])\n"
        "print('tqdm' in sys.modules, file=sys.stderr)\n"
    )
    # On a terminal, within the delay before the bar appears (set far away here).
    proc, shown = run_on_terminal([sys.executable, "-c", code], env={"BAMS3_PROGRESS_DELAY": "3600"})
    assert proc.returncode == 0 and shown.strip() == b"False", shown
    # Not on a terminal: never.
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           env={**__import__("os").environ, **NOW})
    assert piped.stderr.strip() == "False", piped.stderr


def test_display_api() -> None:
    stream = io.StringIO()
    with ProgressDisplay("genotype", stream=stream, delay=0, min_interval=0) as progress:
        progress(0, 4, 0)
        progress(2, 4, 2_500_000)
        progress(4, 4, 5_000_000)
    text = stream.getvalue()
    assert "genotype:" in text and "/4 chunks" in text and "5.0 MB" in text, text
    assert text.endswith("\r")  # cleared at the end
    progress(5, 4, 1)  # after close: ignored
    assert stream.getvalue() == text
    unknown = io.StringIO()
    with ProgressDisplay(
        "convert", "reads", stream=unknown, delay=0, bytes_label="written", min_interval=0
    ) as progress:
        progress(1500, 0, 1000)
    assert "1.50k reads, 1.0 kB written" in unknown.getvalue()
    off = io.StringIO()
    with ProgressDisplay("x", stream=off, enabled=False, delay=0) as progress:
        progress(1, 1, 1)
    assert off.getvalue() == ""
    # progress_for: disabled here (pytest's stderr is not a terminal), still callable
    with progress_for(None, "genotype") as progress:
        assert not progress.enabled
        progress(1, 2, 3)
