"""The ``bams3`` command's dataset commands (convert, info, validate) as users run them:
one-line errors, ``--debug`` tracebacks, JSON and text output, the progress line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from bams3_spark.format.manifest import FORMAT_VERSION
from tests.support.bamgen import empty_bam, unsorted_bam
from tests.support.cli import run_bams3
from tests.support.oracles import samtools
from tests.support.tty import run_on_terminal

pytestmark = pytest.mark.skipif(shutil.which("samtools") is None, reason="samtools (oracle) missing")


@pytest.mark.parametrize(
    ("make_args", "needle"),
    [
        (lambda t, b: ["convert", str(t / "missing.bam"), str(t / "o")], "missing.bam: no such file"),
        (lambda t, b: ["convert", str(unsorted_bam(t)), str(t / "o")], "samtools sort"),
        (lambda t, b: ["convert", str(empty_bam(t)), str(t / "o")], "no records"),
        (lambda t, b: ["convert", "--chunk-size", "1K", str(b), str(t / "o")], "--chunk-size"),
        (lambda t, b: ["convert", str(b), str(b) + "/under-a-file"], "under-a-file"),
        (lambda t, b: ["info", str(t)], "not a BAMS3 dataset"),
    ],
)
def test_cli_errors_are_one_line(make_args, needle: str, multi_bam: Path, tmp_path: Path) -> None:
    proc = run_bams3(make_args(tmp_path, multi_bam))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0] and "Traceback" not in proc.stderr


def test_cli_debug_shows_traceback(tmp_path: Path) -> None:
    proc = run_bams3(["--debug", "info", str(tmp_path)])
    assert proc.returncode == 1 and "Traceback" in proc.stderr


@pytest.mark.s3
def test_s3_missing_bucket_and_access_denied(multi_bam: Path, s3_server: str, tmp_path: Path) -> None:
    from tests.support.denying_s3 import denying_endpoint

    proc = run_bams3(["convert", "--s3-endpoint", s3_server, str(multi_bam), "s3://no-such-bucket-xyz/ds"])
    assert proc.returncode == 1 and "no-such-bucket-xyz" in proc.stderr and "does not exist" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    with denying_endpoint() as endpoint:
        proc = run_bams3(["convert", "--s3-endpoint", endpoint, str(multi_bam), "s3://locked/ds"])
    assert proc.returncode == 1 and "s3://locked/ds" in proc.stderr
    assert "denied" in proc.stderr.lower() and len(proc.stderr.strip().splitlines()) == 1


def test_info_json_and_validate(multi_bam: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert run_bams3(["convert", "--quiet", "--chunk-size", "256K", str(multi_bam), str(out)]).returncode == 0
    info = json.loads(run_bams3(["info", "--json", str(out)]).stdout)
    assert info["records"] == int(samtools("view", "-c", str(multi_bam)))
    assert info["format_version"] == FORMAT_VERSION and info["sample"] == "sampleA"
    assert "records" in run_bams3(["info", str(out)]).stdout
    ok = run_bams3(["validate", str(out)])
    assert ok.returncode == 0 and "OK" in ok.stdout
    victim = sorted((out / "data").rglob("*.chunk"))[0]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    victim.write_bytes(bytes(raw))
    bad = run_bams3(["validate", str(out)])
    assert bad.returncode == 1 and victim.name in bad.stderr


def test_progress_line_on_a_terminal_only(multi_bam: Path, tmp_path: Path) -> None:
    out = tmp_path / "tty.bams3"
    cmd = [sys.executable, "-m", "bams3_spark", "convert", "--chunk-size", "256K", str(multi_bam), str(out)]
    proc, shown = run_on_terminal(cmd, env={"BAMS3_PROGRESS_DELAY": "0"})
    assert proc.returncode == 0 and proc.stdout == b""
    # reads done / in the index, bytes written and the rate, then the summary line
    assert b"/5.35k reads" in shown and b"written" in shown and b"B/s" in shown, shown
    assert shown.rstrip().endswith(b"s") and b"5,353 records in" in shown
    piped = run_bams3(["convert", "--overwrite", "--chunk-size", "256K", str(multi_bam), str(out)],
                      env={"BAMS3_PROGRESS_DELAY": "0"})
    assert "reads" not in piped.stderr and "records in" in piped.stderr  # not a terminal: summary only
    quiet, shown = run_on_terminal(
        [*cmd[:4], "--quiet", "--overwrite", *cmd[4:]], env={"BAMS3_PROGRESS_DELAY": "0"}
    )
    assert quiet.returncode == 0 and shown == b""
