"""Shared fixtures: a real S3 endpoint (moto server on loopback), BAM builders,
samtools oracles and one session-scoped local SparkSession."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pysam
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE_DIR = ROOT.parent / "shared" / "conformance" / "htslib"
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Credentials for the loopback S3 server only: never real ones.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)
# moto's server logs every request at INFO: keep test failure output readable.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


def conformance_files() -> list[Path]:
    """The htslib conformance SAM files (read in place, never copied)."""
    return sorted(Path(p) for p in glob.glob(str(CONFORMANCE_DIR / "*.sam")))


def samtools(*args: str) -> str:
    """Run the real samtools and return its stdout (the oracle)."""
    return subprocess.run(["samtools", *args], check=True, capture_output=True, text=True).stdout


def sam_to_bam(sam: Path | str, out_dir: Path) -> Path:
    """Sort and index a SAM file into ``out_dir`` with pysam (as the corpus README says)."""
    out = out_dir / (Path(sam).stem.replace("#", "_") + ".bam")
    pysam.sort("-o", str(out), str(sam))
    pysam.index(str(out))
    return out


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with an OS-chosen port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    yield endpoint
    server.stop()


@pytest.fixture()
def s3_bucket(s3_server: str) -> Iterator[str]:
    """A fresh, empty bucket on the moto server; yields its name."""
    import boto3

    name = f"bams3-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    yield name
    objs = client.list_objects_v2(Bucket=name).get("Contents", [])
    for o in objs:
        client.delete_object(Bucket=name, Key=o["Key"])
    client.delete_bucket(Bucket=name)


@pytest.fixture()
def s3_opts(s3_server: str) -> dict[str, str]:
    """Storage options that point fsspec/s3fs at the moto server."""
    return {"endpoint_url": s3_server}


@pytest.fixture(scope="session")
def multi_bam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated multi-contig BAM (see tests/bamgen.py), sorted and indexed."""
    from bamgen import make_multi_contig_bam

    return make_multi_contig_bam(tmp_path_factory.mktemp("multi") / "multi.bam")


@pytest.fixture(scope="session")
def two_ref_bam(multi_bam: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """chr1 and chr2 of ``multi_bam`` (2 references, 8 chunks at 256K): cheap to write and read on S3."""
    out = tmp_path_factory.mktemp("two") / "two.bam"
    with pysam.AlignmentFile(str(multi_bam)) as src:
        header = src.header.to_dict()
        header["SQ"] = header["SQ"][:2]
        with pysam.AlignmentFile(str(out), "wb", header=header) as dst:
            for name in ("chr1", "chr2"):
                for rec in src.fetch(name):
                    if rec.next_reference_id <= 1:
                        dst.write(rec)
    pysam.index(str(out))
    return out


@pytest.fixture(scope="session")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One standalone Spark cluster (master + 2 workers on 127.0.0.1) for every cluster test of
    the session (of each pytest-xdist worker); yields (master URL, its directory).

    Started on first use; tests using it run one application at a time.
    """
    from spark_cluster import standalone_cluster

    workdir = tmp_path_factory.mktemp("cluster")
    with standalone_cluster(workdir, workers=2) as master:
        yield master, workdir


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One local[2] SparkSession for the whole test session."""
    from bams3_spark.spark.session import get_session

    session = get_session(master="local[2]", app_name="bams3-tests")
    yield session
    session.stop()


def have(tool: str) -> bool:
    """Return whether a command-line tool is on PATH."""
    return shutil.which(tool) is not None
