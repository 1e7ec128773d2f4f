"""The ``bams3`` Spark data source under S3 faults, and secrets kept out of Spark.

Reads go through the fault proxy in front of the moto server: transient faults
are retried to the rows of a clean read; a persistently truncated chunk fails
the job with the chunk named, never a short DataFrame. A fake secret key given
as a data source option never shows in plans (``explain``), errors, or what
Spark's UI serves (its REST API on loopback: jobs, stages, SQL executions and
their plans, environment).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bams3_spark.convert import convert
from bams3_spark.spark import read_bams3
from tests.reliability.faultproxy import Fault, FaultProxy

pytestmark = [pytest.mark.s3, pytest.mark.spark]

COLUMNS = ["qname", "flag", "rname", "pos", "cigar", "seq", "tags", "sample"]
SECRET = "FAKE-SECRET-KEY-never-print-me-789"


@pytest.fixture(scope="module")
def dataset(two_ref_bam: Path, s3_server: str) -> Iterator[str]:
    """One dataset on the moto server (read-only here): 8 chunk objects."""
    import boto3

    bucket = "bams3-spark-faults"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/two.bams3"
    convert(str(two_ref_bam), url, chunk_size="256K", storage_options={"endpoint_url": s3_server})
    yield url


@pytest.fixture(scope="module")
def clean_rows(spark: Any, dataset: str, s3_server: str) -> list[Any]:
    return read_bams3(spark, dataset, columns=COLUMNS, endpoint_url=s3_server).collect()


@pytest.mark.parametrize("kind", ["500", "503", "slowdown", "reset", "truncate"])
def test_spark_read_survives_transient_faults(
    kind: str, spark: Any, proxy: FaultProxy, dataset: str, clean_rows: list[Any]
) -> None:
    # Metadata on the driver at load(), chunks in the Python workers.
    proxy.plan(Fault(kind, method="GET|HEAD", path=r"\.chunk|\.json|/index/|header", times=6, every=2))
    df = read_bams3(spark, dataset, columns=COLUMNS, endpoint_url=proxy.url)
    rows = df.collect()
    assert proxy.injected[kind] >= 3
    assert rows == clean_rows
    # The raw format (no read_bams3 validation) takes the same path.
    proxy.plan(Fault(kind, method="GET", path=r"\.chunk", times=4, every=2))
    raw = spark.read.format("bams3").option("endpoint_url", proxy.url).load(dataset)
    assert raw.select(*COLUMNS).collect() == clean_rows
    assert proxy.injected[kind] == 4


def test_spark_persistent_truncation_fails_naming_the_chunk(
    spark: Any, proxy: FaultProxy, dataset: str
) -> None:
    df = read_bams3(spark, dataset, columns=["pos", "rname"], endpoint_url=proxy.url)
    proxy.plan(Fault("truncate", method="GET", path=r"r000001-chr2/.*\.chunk", times=-1))
    for action in (df.collect, df.count, lambda: df.groupBy("rname").count().collect()):
        with pytest.raises(Exception) as err:  # noqa: B017 - Spark wraps the worker's error
            action()
        text = str(err.value)
        assert "r000001-chr2/" in text and ".chunk" in text, text[-3000:]
        # The storage layer's one line: object, action, and what was wrong.
        assert "cannot read" in text and "content length" in text, text[-3000:]


# -- secrets ----------------------------------------------------------------


def _ui_json(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=30) as resp:  # noqa: S310 - loopback UI
        return json.loads(resp.read())


def test_secret_option_stays_out_of_plans_errors_and_the_ui(
    spark: Any, dataset: str, s3_server: str
) -> None:
    sc = spark.sparkContext
    opts = {"endpoint_url": s3_server, "key": "AKIAFAKEKEYFORTESTS", "secret": SECRET}
    df = read_bams3(spark, dataset, columns=["rname", "pos"], region="chr1:1-300000", **opts)
    raw = spark.read.format("bams3").options(**opts).load(dataset).where("mapq >= 0")
    texts = [df._jdf.queryExecution().toString(), raw._jdf.queryExecution().toString()]
    sc.setJobDescription("secret check")
    assert df.count() > 0 and raw.count() > 0
    df.groupBy("rname").count().collect()
    # A failing read: the error text must not carry the options either.
    with pytest.raises(Exception) as err:  # noqa: B017 - Spark's own exception types
        spark.read.format("bams3").options(**opts).load(dataset.replace("two", "missing")).collect()
    texts.append(str(err.value))
    with pytest.raises(Exception) as err2:  # noqa: B017
        read_bams3(spark, dataset.replace("two", "missing"), **opts)
    texts.append(str(err2.value) + repr(err2.value))

    # The UI is on in the package's sessions; its REST API serves what the UI pages show.
    ui = sc.uiWebUrl
    assert ui, "the Spark UI is off: nothing to check"
    base = f"http://127.0.0.1:{urlsplit(ui).port}/api/v1/applications/{sc.applicationId}"
    for path in ("/jobs", "/stages?details=true", "/sql?details=true&planDescription=true",
                 "/environment", "/executors"):
        texts.append(json.dumps(_ui_json(base, path)))
    joined = "\n".join(texts)
    # The channels were really captured: the job description and the missing path show.
    assert "secret check" in joined and "missing.bams3" in joined
    assert SECRET not in joined
    sc.setJobDescription(None)
