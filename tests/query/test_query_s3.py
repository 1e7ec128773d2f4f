"""Region queries on S3 (moto server on loopback, real HTTP): the same records,
order and counts as samtools, the same reads as locally, and one-line errors for
missing, damaged, incomplete or unreadable objects."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import fsspec
import pytest

from bams3_spark import open_dataset
from bams3_spark.convert import convert
from bams3_spark.io.storage import CountingStorage
from bams3_spark.query import Query, plan_query
from tests.query.test_query import assert_one_line_error, regions_for, run_cli, sam_of, st_count, st_view
from tests.support.denying_s3 import denying_endpoint
from tests.support.oracles import conformance_files, sam_to_bam

pytestmark = [
    pytest.mark.s3,
    pytest.mark.skipif(shutil.which("samtools") is None, reason="samtools (oracle) missing"),
]

CONFORMANCE = ["ce#1000.sam", "index.sam", "ce#unmap2.sam", "c1#bounds.sam", "xx#minimal.sam"]


def _upload(endpoint: str, local: str, url: str) -> None:
    fs = fsspec.filesystem("s3", endpoint_url=endpoint, skip_instance_cache=True)
    fs.put(local, url.removeprefix("s3://"), recursive=True)


@pytest.fixture(scope="module")
def remote(
    s3_server: str, multi_bam: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, object]]:
    """One bucket holding the generated dataset and a few conformance datasets (read-only)."""
    root = tmp_path_factory.mktemp("s3src")
    bucket = f"bams3-query-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    local = root / "multi.bams3"
    convert(str(multi_bam), str(local), chunk_size="256K", max_chunk_records=300)
    sets: dict[str, tuple[Path, str]] = {}
    _upload(s3_server, str(local), f"s3://{bucket}/multi.bams3")
    for sam in conformance_files():
        if sam.name in CONFORMANCE:
            bam = sam_to_bam(sam, root)
            ds = root / (bam.stem + ".bams3")
            convert(str(bam), str(ds), chunk_size="256K", allow_empty=True)
            _upload(s3_server, str(ds), f"s3://{bucket}/{ds.name}")
            sets[sam.name] = (bam, f"s3://{bucket}/{ds.name}")
    yield {
        "endpoint": s3_server,
        "bucket": bucket,
        "bam": multi_bam,
        "local": str(local),
        "url": f"s3://{bucket}/multi.bams3",
        "sets": sets,
    }
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)


def test_s3_regions_match_samtools_parallel_1_and_8(
    remote: dict[str, object], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    bam, url, ep = str(remote["bam"]), str(remote["url"]), str(remote["endpoint"])
    regions = regions_for(open_dataset(url, endpoint_url=ep))[::5] + ["*", "chr1:1-300000", "chr1:1-300000"]
    expected = st_view(bam, *regions)
    outs = []
    for parallel in ("1", "8"):
        code, out, err = run_cli(
            capsysbinary, "query", url, *regions, "--parallel", parallel, "--s3-endpoint", ep
        )
        assert code == 0, err
        outs.append(out)
    assert outs[0] == outs[1] == expected
    code, out, _ = run_cli(capsysbinary, "query", url, *regions, "-c", "--s3-endpoint", ep, "--parallel", "8")
    assert int(out) == st_count(bam, *regions)


@pytest.mark.parametrize("name", CONFORMANCE)
def test_s3_conformance_match_samtools(name: str, remote: dict[str, object]) -> None:
    sets = remote["sets"]
    assert isinstance(sets, dict)
    bam, url = sets[name]
    ds = open_dataset(url, endpoint_url=remote["endpoint"])
    assert sam_of(ds, workers=4) == st_view(str(bam))
    regions = regions_for(ds)
    assert sam_of(ds, regions, workers=8) == st_view(str(bam), *regions)
    assert ds.count(regions) == st_count(str(bam), *regions)


def test_s3_reads_the_same_bytes_as_locally(remote: dict[str, object]) -> None:
    """Projections are ranged GETs: the same requests and bytes as on local disk."""
    region = "chr1:100000-700000"
    counts = []
    for ds in (
        open_dataset(str(remote["url"]), endpoint_url=remote["endpoint"]),
        open_dataset(str(remote["local"])),
    ):
        counting = CountingStorage(ds.storage)
        query = Query(plan_query(ds, [region]), storage=counting)
        assert query.count(8) == st_count(str(remote["bam"]), region)
        counts.append((counting.data_requests, counting.data_bytes))
    assert counts[0] == counts[1]


def test_s3_explain_chunks_cat_and_bed(
    remote: dict[str, object], tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    bam, url, ep = str(remote["bam"]), str(remote["url"]), str(remote["endpoint"])
    code, out, _ = run_cli(capsysbinary, "query", url, "chr2:1-300000", "--explain", "--s3-endpoint", ep)
    assert code == 0 and f"{url}/data/r000001-chr2/0000000000-0000262144.chunk" in out.decode()
    code, out, _ = run_cli(capsysbinary, "chunks", url, "--s3-endpoint", ep)
    urls = out.decode().splitlines()
    assert code == 0 and all(u.startswith(f"{url}/data/") for u in urls)
    code, out, _ = run_cli(capsysbinary, "cat", *urls, "--s3-endpoint", ep)
    assert code == 0 and out == st_view(bam)
    # A BED file on S3 is read with the same endpoint.
    bed_url = f"s3://{remote['bucket']}/regions.bed"
    with fsspec.open(bed_url, "w", endpoint_url=ep) as fh:
        fh.write("chr2\t0\t8000\nchr1\t0\t5000\nscaffold_3\t2000\t2500\n")
    code, out, _ = run_cli(capsysbinary, "query", url, "--regions-file", bed_url, "--s3-endpoint", ep)
    local_bed = tmp_path / "r.bed"
    local_bed.write_text("chr2\t0\t8000\nchr1\t0\t5000\nscaffold_3\t2000\t2500\n")
    assert code == 0 and out == st_view("--regions-file", str(local_bed), bam)


# --------------------------------------------------------------------------
# Bad input on S3: one clear line, non-zero exit
# --------------------------------------------------------------------------


@pytest.fixture()
def scratch(remote: dict[str, object], s3_bucket: str) -> str:
    """A private copy of the generated dataset in a fresh bucket (tests damage it)."""
    url = f"s3://{s3_bucket}/copy.bams3"
    _upload(str(remote["endpoint"]), str(remote["local"]), url)
    return url


def test_s3_missing_incomplete_and_newer(
    remote: dict[str, object], scratch: str, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    ep = str(remote["endpoint"])
    fs = fsspec.filesystem("s3", endpoint_url=ep, skip_instance_cache=True)
    nowhere = scratch.replace("copy.bams3", "nothing.bams3")
    code, _, err = run_cli(capsysbinary, "query", nowhere, "chr1", "--s3-endpoint", ep)
    assert_one_line_error(code, err, nowhere, "not a BAMS3 dataset")
    manifest = json.loads(fs.cat_file(f"{scratch}/bams3.json"))
    manifest["format_version"] = "3.1"
    fs.pipe_file(f"{scratch}/bams3.json", json.dumps(manifest).encode())
    code, _, err = run_cli(capsysbinary, "query", scratch, "chr1", "-c", "--s3-endpoint", ep)
    assert_one_line_error(code, err, f"{scratch}/bams3.json", "3.1", "upgrade")
    fs.rm_file(f"{scratch}/bams3.json")
    code, _, err = run_cli(capsysbinary, "query", scratch, "chr1", "--s3-endpoint", ep)
    assert_one_line_error(code, err, scratch, "incomplete dataset")


def test_s3_damaged_and_missing_chunks_are_named(
    remote: dict[str, object], scratch: str, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    ep = str(remote["endpoint"])
    fs = fsspec.filesystem("s3", endpoint_url=ep, skip_instance_cache=True)
    ds = open_dataset(scratch, endpoint_url=ep)
    damaged, missing = ds.chunks("chr1:300000-300100")[0], ds.chunks("chr2:1000-9000")[0]
    data = bytearray(fs.cat_file(damaged.url))
    data[len(data) // 2] ^= 0x55
    fs.pipe_file(damaged.url, bytes(data))
    fs.rm_file(missing.url)
    code, _, err = run_cli(
        capsysbinary, "query", scratch, "chr1:300000-300100", "--s3-endpoint", ep, "--parallel", "8"
    )
    assert_one_line_error(code, err, damaged.url, "checksum")
    code, _, err = run_cli(capsysbinary, "query", scratch, "chr2:1000-9000", "-c", "--s3-endpoint", ep)
    assert_one_line_error(code, err, missing.url, "not found")


def test_s3_unreadable_objects(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    with denying_endpoint() as ep:
        code, _, err = run_cli(capsysbinary, "query", "s3://locked/data.bams3", "chr1", "--s3-endpoint", ep)
    assert_one_line_error(code, err, "s3://locked/data.bams3")
    assert "denied" in err.lower()
