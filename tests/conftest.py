"""Shared fixtures: a real S3 endpoint (moto server on loopback), BAM builders, one local
SparkSession per test process and one standalone Spark cluster for the whole session.

Oracles and builders live in :mod:`tests.support`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pysam
import pytest

# Credentials for the loopback S3 server only: never real ones.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)
# moto's server logs every request at INFO: keep test failure output readable.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


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
    from tests.support.bamgen import make_multi_contig_bam

    return make_multi_contig_bam(tmp_path_factory.mktemp("multi") / "multi.bam")


@pytest.fixture(scope="session")
def bin_bam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BAM whose index has bins at every level (see tests/support/bamgen.py), BAI-indexed."""
    from tests.support.bamgen import make_bin_test_bam

    return make_bin_test_bam(tmp_path_factory.mktemp("bins") / "bins.bam")


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


# One standalone cluster serves every test process of the session: the first
# test that needs it starts it (under a file lock, in a directory the xdist
# controller hands every worker), the others join it, and the process that
# configured the session stops it at the end. Applications queue on it.
_CLUSTER_DIR_KEY = "bams3_cluster_dir"
_cluster_dir = pytest.StashKey[str]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """(xdist controller) Tell each worker where the session's cluster lives."""
    node.workerinput[_CLUSTER_DIR_KEY] = node.config.stash[_cluster_dir]


def pytest_configure(config: pytest.Config) -> None:
    """(controller, or the only process) Make the directory of the session's cluster."""
    if not hasattr(config, "workerinput"):
        config.stash[_cluster_dir] = tempfile.mkdtemp(prefix="bams3-test-cluster-")


def pytest_unconfigure(config: pytest.Config) -> None:
    """(controller, or the only process) Stop the session's cluster, if one was started."""
    if hasattr(config, "workerinput") or _cluster_dir not in config.stash:
        return
    from tests.support.spark_cluster import stop_cluster

    folder = Path(config.stash[_cluster_dir])
    state = folder / "cluster.json"
    if state.exists():
        stop_cluster(json.loads(state.read_text())["pids"])
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def standalone(pytestconfig: pytest.Config) -> tuple[str, Path]:
    """The session's standalone Spark cluster (master + 2 workers on 127.0.0.1): (master URL, directory)."""
    from tests.support.spark_cluster import start_cluster

    workerinput = getattr(pytestconfig, "workerinput", None)
    folder = Path(workerinput[_CLUSTER_DIR_KEY] if workerinput else pytestconfig.stash[_cluster_dir])
    state = folder / "cluster.json"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not state.exists():
            url, pids = start_cluster(folder / "cluster", workers=2)
            state.write_text(json.dumps({"url": url, "pids": pids}))
        return json.loads(state.read_text())["url"], folder / "cluster"


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One local[2] SparkSession for the whole test session."""
    from bams3_spark.spark.session import get_session

    session = get_session(master="local[2]", app_name="bams3-tests")
    yield session
    session.stop()
