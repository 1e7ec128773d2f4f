#!/usr/bin/env bash
# The Docker demo, step by step: the one-shot "demo" service of docker/compose.yml runs it, and
# tests/test_deploy.py runs this same script natively (loopback Spark cluster, moto for MinIO).
#
#   1. create the bucket and upload the demo BAM (docker/stage_demo.py)
#   2. convert it into a BAMS3 dataset in the bucket, on the cluster      (jobs/convert.py)
#   3. validate the dataset (every checksum)                              (bams3 validate)
#   4. compute its per-base coverage on the cluster, as bedGraph          (jobs/coverage.py)
#
# Environment:
#   SPARK_MASTER      Spark master URL (required), e.g. spark://spark-master:7077
#   BAMS3_BUCKET      bucket to create and use (default bams3-demo)
#   RESULTS_DIR       a directory every Spark node mounts, for the coverage output
#                     (default /data/results): Spark's writers put part files there from executors
#   AWS_ENDPOINT_URL  S3-compatible endpoint (MinIO); unset for AWS itself. Credentials come from
#                     the standard AWS chain on the driver and on the workers.
#   DEMO_PAIRS        read pairs in the simulated BAM (default 40000)
#   WORK_DIR          local scratch directory for the BAM (default /tmp/bams3-demo)
#   PYTHON            Python with bams3-spark installed (default python3)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${SPARK_MASTER:?set SPARK_MASTER to the Spark master URL, e.g. spark://spark-master:7077}"
BUCKET=${BAMS3_BUCKET:-bams3-demo}
RESULTS=${RESULTS_DIR:-/data/results}
WORK=${WORK_DIR:-/tmp/bams3-demo}
PAIRS=${DEMO_PAIRS:-40000}
PYTHON=${PYTHON:-python3}
DATASET=s3://$BUCKET/sample.bams3
# log4j2.properties (WARN for Spark internals) is read from here.
export SPARK_CONF_DIR=${SPARK_CONF_DIR:-$HERE/conf}

submit() {
    local args=(--master "$SPARK_MASTER" --properties-file "$HERE/conf/spark-defaults.conf")
    # Executors read and write S3 themselves: they need the endpoint too.
    if [[ -n "${AWS_ENDPOINT_URL:-}" ]]; then
        args+=(--conf "spark.executorEnv.AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL")
    fi
    echo "== spark-submit ${*}"
    spark-submit "${args[@]}" "$@"
}

echo "== staging the demo BAM in s3://$BUCKET"
BAM=$("$PYTHON" "$HERE/docker/stage_demo.py" "$BUCKET" "$WORK" --pairs "$PAIRS")

submit "$HERE/jobs/convert.py" "$BAM" "$DATASET" --overwrite

echo "== bams3 validate $DATASET"
bams3 validate "$DATASET"

mkdir -p "$RESULTS"
submit "$HERE/jobs/coverage.py" "$DATASET" --out "$RESULTS/coverage" --format bedgraph --overwrite

echo "== done: per-base coverage of $DATASET in $RESULTS/coverage"
