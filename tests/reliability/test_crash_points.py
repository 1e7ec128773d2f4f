"""Converters killed at chosen points of their writes, local and Spark.

The fault proxy holds one write request unanswered (``hang``), so the converter
is stuck exactly there: at its first chunk, in the middle of its chunks, while
clearing an old dataset for ``--overwrite``, at an index, at the manifest. The
whole process group is then SIGKILLed (driver, JVM, Python workers), as a
crashed machine would be. Afterwards a reader must see either no dataset
(absent or incomplete) or a complete one that validates and is exactly the old
or the new dataset; never a mix that looks complete. A plain rerun must then
succeed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bams3_spark import open_dataset
from bams3_spark.convert import convert
from bams3_spark.exceptions import DatasetExistsError, IncompleteDatasetError, NotADatasetError
from tests.reliability.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.s3

ROOT = Path(__file__).resolve().parents[2]
#: Longest a held request waits before the proxy drops it (the test releases it sooner).
HOLD = 300.0


@pytest.fixture(scope="module")
def bam(two_ref_bam: Path) -> Path:
    return two_ref_bam


@pytest.fixture(scope="module")
def truth(bam: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Chunk digests of clean local conversions at the two window sizes used."""
    base = tmp_path_factory.mktemp("truth")
    out = {}
    for size in ("256K", "1M"):
        convert(str(bam), str(base / size), chunk_size=size)
        out[size] = _digests(str(base / size))
    assert len(out["256K"]) >= 6
    return out


def _digests(url: str, **opts: object) -> dict[str, str]:
    return {c.info.path: c.info.sha256 for c in open_dataset(url, **opts).chunks()}


def _points(n_chunks: int) -> dict[str, Fault]:
    """Where to stop the converter: one held write request each."""
    chunk_put = r"\.chunk"
    return {
        "first chunk": Fault("hang", method="PUT|POST", path=chunk_put, delay=HOLD),
        "middle chunk": Fault("hang", method="PUT|POST", path=chunk_put, skip=n_chunks // 2, delay=HOLD),
        "last chunk": Fault("hang", method="PUT|POST", path=chunk_put, skip=n_chunks - 1, delay=HOLD),
        "index": Fault("hang", method="PUT", path=r"/index/", delay=HOLD),
        "manifest": Fault("hang", method="PUT", path=r"/bams3\.json", delay=HOLD),
        # Only an --overwrite clears: first the old manifest, then the rest (a batch delete).
        "old manifest delete": Fault("hang", method="DELETE", path=r"/bams3\.json", delay=HOLD),
        "clearing": Fault("hang", method="POST|DELETE", path=r"delete|\.chunk|/index/", delay=HOLD),
    }


def _command(kind: str, bam: Path, url: str, endpoint: str, overwrite: bool) -> list[str]:
    if kind == "local":
        cmd = [sys.executable, "-m", "bams3_spark", "convert", "--quiet", "--workers", "2"]
    else:
        cmd = [sys.executable, str(ROOT / "jobs" / "convert.py"), "--master", "local[2]"]
    return [*cmd, "--chunk-size", "256K", "--s3-endpoint", endpoint,
            *(["--overwrite"] if overwrite else []), str(bam), url]


def _kill_at(proxy: FaultProxy, fault: Fault, cmd: list[str]) -> None:
    """Run ``cmd`` until ``fault`` holds a request, then SIGKILL its process group."""
    proxy.plan(fault)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    try:
        proxy.wait_injected("hang", timeout=240, alive=lambda: proc.poll() is None)
    except TimeoutError:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the converter never reached the kill point: {err.decode()[-2000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]
        # The held write is dropped, never forwarded: it did not land.
        proxy.plan()


def _state(url: str, endpoint: str, truth: dict[str, dict[str, str]]) -> str:
    """What a reader sees now: "absent", or which complete dataset ("256K"/"1M")."""
    opts = {"endpoint_url": endpoint} if endpoint else {}
    try:
        ds = open_dataset(url, **opts)
    except (IncompleteDatasetError, NotADatasetError):
        return "absent"
    assert ds.validate() == [], "a complete-looking dataset with damaged chunks"
    digests = _digests(url, **opts)
    matches = [size for size, d in truth.items() if d == digests]
    assert matches, "a complete-looking dataset that is neither the old nor the new one"
    return matches[0]


CASES = [
    # (converter, kill point, overwrite an existing 1M dataset, what a reader sees after)
    ("local", "first chunk", False, "absent"),
    ("local", "middle chunk", False, "absent"),
    ("local", "last chunk", False, "absent"),
    ("local", "index", False, "absent"),
    ("local", "manifest", False, "absent"),
    # Killed before anything changed: the old dataset, whole.
    ("local", "old manifest delete", True, "1M"),
    # From then on the old manifest is gone: no mix of old and new can look complete.
    ("local", "clearing", True, "absent"),
    ("local", "middle chunk", True, "absent"),
    ("local", "manifest", True, "absent"),
    ("spark", "first chunk", False, "absent"),
    ("spark", "manifest", False, "absent"),
    ("spark", "clearing", True, "absent"),
]


@pytest.mark.parametrize(("kind", "point", "overwrite", "expected"), CASES)
def test_killed_converter_never_leaves_a_wrong_complete_dataset(
    kind: str, point: str, overwrite: bool, expected: str, proxy: FaultProxy, s3_server: str, s3_bucket: str,
    bam: Path, truth: dict[str, dict[str, str]],
) -> None:
    url = f"s3://{s3_bucket}/killed.bams3"
    if overwrite:
        convert(str(bam), url, chunk_size="1M", storage_options={"endpoint_url": s3_server})
    fault = _points(len(truth["256K"]))[point]
    _kill_at(proxy, fault, _command(kind, bam, url, proxy.url, overwrite))

    # Every kill point is before the new manifest lands, so the new dataset is
    # never complete; _state fails on anything complete but wrong.
    assert _state(url, s3_server, truth) == expected

    # A rerun replaces the leftovers (without --overwrite when no manifest is left).
    convert(str(bam), url, chunk_size="256K", overwrite=expected != "absent",
            storage_options={"endpoint_url": s3_server})
    assert _state(url, s3_server, truth) == "256K"


def test_local_kill_during_manifest_write_leaves_an_incomplete_dataset_a_rerun_replaces(
    bam: Path, tmp_path: Path, truth: dict[str, dict[str, str]]
) -> None:
    """On local disk the manifest is written to a hidden temporary and renamed: a kill before
    the rename leaves the temporary, which a reader ignores and a rerun clears."""
    out = tmp_path / "ds.bams3"
    convert(str(bam), str(out), chunk_size="256K")
    manifest = (out / "bams3.json").read_bytes()
    (out / "bams3.json").unlink()
    (out / ".bams3.json.tmp-0123456789ab").write_bytes(manifest[: len(manifest) // 2])
    (out / ".header.sam.tmp-abcdef012345").write_bytes(b"@HD")
    with pytest.raises((IncompleteDatasetError, NotADatasetError)):
        open_dataset(str(out))
    convert(str(bam), str(out), chunk_size="256K")  # no --overwrite needed
    assert _state(str(out), "", truth) == "256K"
    assert sorted(p.name for p in out.iterdir()) == ["bams3.json", "data", "header.sam", "index"]
    # Anything else is not ours: refused without --overwrite.
    (out / "bams3.json").unlink()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DatasetExistsError):
        convert(str(bam), str(out), chunk_size="256K")
