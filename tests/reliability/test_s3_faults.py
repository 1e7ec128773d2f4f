"""S3 faults between bams3 and the store: retried to an identical result, or a
clear failure; never a silently short result."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bams3_spark import open_dataset
from bams3_spark.convert import convert
from bams3_spark.exceptions import Bams3Error, IncompleteDatasetError, NotADatasetError
from bams3_spark.query.output import write_sam
from tests.reliability.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def reference(multi_bam: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str], str]:
    """A clean local conversion: its chunk digests and its export are the truth."""
    out = tmp_path_factory.mktemp("ref") / "ref.bams3"
    convert(str(multi_bam), str(out), chunk_size="256K")
    return str(out), _digests(str(out)), _export(str(out))


def _digests(url: str, **opts: object) -> dict[str, str]:
    return {c.info.path: c.info.sha256 for c in open_dataset(url, **opts).chunks()}


def _export(url: str, **opts: object) -> str:
    ds = open_dataset(url, **opts)
    buf = io.StringIO()
    write_sam(buf, ds.iter_tables(), ds.header)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["500", "503", "slowdown", "reset", "latency"])
def test_convert_survives_transient_write_faults(
    kind: str, proxy: FaultProxy, multi_bam: Path, s3_bucket: str, reference: tuple
) -> None:
    proxy.plan(Fault(kind, method="PUT", path=r"\.chunk|bams3\.json|index/", times=4, every=2))
    url = f"s3://{s3_bucket}/faulty.bams3"
    convert(str(multi_bam), url, chunk_size="256K", workers=1, storage_options={"endpoint_url": proxy.url})
    assert proxy.injected[kind] == 4
    assert _digests(url, endpoint_url=proxy.url) == reference[1]


@pytest.mark.parametrize("kind", ["500", "503", "slowdown", "reset", "truncate"])
def test_reads_survive_transient_faults(
    kind: str, proxy: FaultProxy, s3_bucket: str, multi_bam: Path, reference: tuple
) -> None:
    url = f"s3://{s3_bucket}/read.bams3"
    convert(str(multi_bam), url, chunk_size="256K", storage_options={"endpoint_url": proxy.url})
    proxy.plan(Fault(kind, method="GET", path=r"\.chunk|\.json|header", times=3, every=3))
    try:
        exported = _export(url, endpoint_url=proxy.url)
    except (Bams3Error, OSError) as exc:
        # Allowed only as a clear, one-line failure naming an object.
        assert kind == "truncate" and "s3://" in str(exc) and "\n" not in str(exc)
        return
    assert proxy.injected[kind] == 3
    assert exported == reference[2]


def test_persistent_truncation_is_an_error_not_a_short_result(
    proxy: FaultProxy, s3_bucket: str, multi_bam: Path
) -> None:
    url = f"s3://{s3_bucket}/trunc.bams3"
    convert(str(multi_bam), url, chunk_size="256K", storage_options={"endpoint_url": proxy.url})
    proxy.plan(Fault("truncate", method="GET", path=r"\.chunk", times=-1))
    ds = open_dataset(url, endpoint_url=proxy.url)
    with pytest.raises((Bams3Error, OSError)) as err:
        list(ds.iter_tables())
    assert ".chunk" in str(err.value)
    for columns in (["pos", "end"], None):
        with pytest.raises((Bams3Error, OSError)):
            for chunk in ds.chunks():
                chunk.read(columns)


def test_persistent_write_failure_leaves_no_complete_dataset(
    proxy: FaultProxy, s3_bucket: str, multi_bam: Path
) -> None:
    url = f"s3://{s3_bucket}/failed.bams3"
    proxy.plan(Fault("503", method="PUT", path=r"r000001-chr2/.*\.chunk", times=-1))
    with pytest.raises(OSError) as err:
        convert(str(multi_bam), url, chunk_size="256K", storage_options={"endpoint_url": proxy.url})
    assert "s3://" in str(err.value) and "\n" not in str(err.value)
    proxy.plan()
    with pytest.raises((IncompleteDatasetError, NotADatasetError)):
        open_dataset(url, endpoint_url=proxy.url)


# -- bams3 query (CLI) ------------------------------------------------------

QUERY_REGIONS = ["chr1:100,000-900,000", "chr2", "{HLA-DRB1*15:01:01:01}:1-5000", "*"]


@pytest.fixture(scope="module")
def query_truth(multi_bam: Path) -> tuple[bytes, int]:
    """samtools' answers for QUERY_REGIONS: the records (as SAM) and their count."""
    from tests.query.test_query import st_count, st_view

    return st_view(str(multi_bam), *QUERY_REGIONS), st_count(str(multi_bam), *QUERY_REGIONS)


def _query(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, bytes, str]:
    from tests.query.test_query import run_cli

    return run_cli(capsysbinary, "query", *argv)


@pytest.mark.parametrize("kind", ["500", "503", "slowdown", "reset", "truncate", "latency"])
def test_query_cli_survives_transient_faults(
    kind: str, proxy: FaultProxy, s3_server: str, s3_bucket: str, multi_bam: Path,
    query_truth: tuple[bytes, int], capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    url = f"s3://{s3_bucket}/q.bams3"
    convert(str(multi_bam), url, chunk_size="256K", storage_options={"endpoint_url": s3_server})
    for extra, want in (([], query_truth[0]), (["--count"], f"{query_truth[1]}\n".encode())):
        proxy.plan(Fault(kind, method="GET|HEAD", path=r"\.chunk|\.json|/index/|header", times=4, every=2))
        code, out, err = _query(capsysbinary, "--s3-endpoint", proxy.url, "--parallel", "8", *extra, url,
                                *QUERY_REGIONS)
        assert proxy.injected[kind] >= 1
        if code and kind == "truncate":
            # Allowed only as a clear, one-line failure naming an object.
            assert "s3://" in err and len(err.strip().splitlines()) == 1, err
            continue
        assert code == 0, err
        assert out == want


def test_query_cli_persistent_truncation_fails_and_writes_nothing(
    proxy: FaultProxy, s3_server: str, s3_bucket: str, multi_bam: Path, tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    url = f"s3://{s3_bucket}/qt.bams3"
    convert(str(multi_bam), url, chunk_size="256K", storage_options={"endpoint_url": s3_server})
    proxy.plan(Fault("truncate", method="GET", path=r"\.chunk", times=-1))
    for extra in ([], ["--count"], ["-o", str(tmp_path / "out.sam")], ["-o", str(tmp_path / "out.bam")]):
        code, out, err = _query(capsysbinary, "--s3-endpoint", proxy.url, *extra, url, *QUERY_REGIONS)
        assert code == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1 and ".chunk" in lines[0] and "Traceback" not in err, err
        if extra[:1] == ["--count"]:
            assert out == b""  # never a count of what happened to arrive
    # A failed -o leaves no output file (nor its temporary) behind.
    assert list(tmp_path.iterdir()) == []
