"""Stage the Docker demo's input: a bucket, and the demo BAM with its index in it.

Run by ``docker/run-demo.sh`` (the compose file's one-shot ``demo`` service, and
``tests/test_deploy.py``, which runs the same script natively)::

    python docker/stage_demo.py BUCKET WORKDIR [--pairs N]

Creates the bucket unless it exists (waiting up to a minute for the S3
endpoint, which may still be starting), simulates the demo BAM with
:func:`bams3_spark.demo.make_sample_bam` in WORKDIR and uploads it with its
index to ``s3://BUCKET/input/sample.bam``. Prints that URL. The endpoint and
credentials come from the environment (``AWS_ENDPOINT_URL``, the AWS chain).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PROG = "stage_demo.py"


def create_bucket(bucket: str, wait: float = 60.0) -> None:
    """Create ``bucket`` unless it exists, retrying while the endpoint is unreachable."""
    import boto3
    from botocore.exceptions import ClientError, EndpointConnectionError

    from bams3_spark.io.storage import normalize_options

    endpoint = normalize_options("s3", {}).get("endpoint_url")
    client = boto3.client("s3", endpoint_url=endpoint)
    deadline = time.monotonic() + wait
    while True:
        try:
            client.create_bucket(Bucket=bucket)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "BucketAlreadyOwnedByYou":
                return
            raise
        except EndpointConnectionError:
            # MinIO may still be starting when the demo service starts.
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def stage(bucket: str, workdir: Path, pairs: int) -> str:
    """Create the bucket, generate and upload the demo BAM; return its S3 URL."""
    from bams3_spark.demo import make_sample_bam
    from bams3_spark.io.storage import Storage

    create_bucket(bucket)
    workdir.mkdir(parents=True, exist_ok=True)
    bam = workdir / "sample.bam"
    make_sample_bam(bam, pairs=pairs)
    inputs = Storage(f"s3://{bucket}/input")
    for name in ("sample.bam", "sample.bam.bai"):
        inputs.write_bytes(name, (workdir / name).read_bytes())
    return inputs.url_of("sample.bam")


def main(argv: list[str] | None = None) -> int:
    """Run the staging; return the exit status."""
    p = argparse.ArgumentParser(prog=PROG, description="Create the demo bucket and upload the demo BAM.")
    p.add_argument("bucket")
    p.add_argument("workdir", type=Path)
    p.add_argument("--pairs", type=int, default=40_000, help="read pairs to simulate (default 40000)")
    args = p.parse_args(argv)
    try:
        print(stage(args.bucket, args.workdir, args.pairs))
    except Exception as exc:  # noqa: BLE001 - one line for any failure: this is a demo step
        print(f"{PROG}: error: s3://{args.bucket}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
