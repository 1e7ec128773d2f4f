#!/usr/bin/env bash
# EMR bootstrap action: install bams3-spark on every node, in its own virtualenv.
#
#   aws emr create-cluster ... \
#     --bootstrap-actions Path=s3://YOUR-BUCKET/bams3/conf/emr/bootstrap.sh,Args=[s3://YOUR-BUCKET/bams3/dist]
#
# DIST_URL is the S3 prefix `make dist` output was uploaded to (aws s3 sync dist/ s3://.../dist/):
# it must hold the wheel (bams3_spark-*.whl), requirements-runtime.txt and constraints.txt (the
# tested versions, which also spare pip minutes of resolver backtracking). The steps in
# conf/emr/steps.json then run jobs with spark.pyspark.python=/opt/bams3/venv/bin/python.
# pyspark is deliberately not installed: the cluster's Spark (3.5 to 4.3) provides it.
#
# Environment: BAMS3_PYTHON, the interpreter to build the venv with (default python3.11, right for
# EMR 7.x, whose default python3 is 3.9, and EMR 8.0; the
# package needs Python 3.10+, installed with dnf when missing).
set -euo pipefail

DIST_URL=${1:?usage: bootstrap.sh s3://BUCKET/PREFIX/dist}
PYTHON=${BAMS3_PYTHON:-python3.11}
ROOT=/opt/bams3
VENV=$ROOT/venv

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    sudo dnf install -y "$PYTHON" || sudo yum install -y "$PYTHON"
fi
sudo mkdir -p "$ROOT/dist"
sudo chown -R "$(id -u):$(id -g)" "$ROOT"
aws s3 cp --recursive "$DIST_URL/" "$ROOT/dist/" --exclude "*" \
    --include "bams3_spark-*.whl" --include "requirements-runtime.txt" --include "constraints.txt"

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r "$ROOT/dist/requirements-runtime.txt" \
    -c "$ROOT/dist/constraints.txt"
"$VENV/bin/python" -m pip install --quiet --no-deps "$ROOT"/dist/bams3_spark-*.whl
"$VENV/bin/python" -c "import bams3_spark, pyarrow, pysam; print('bams3-spark', bams3_spark.__version__)"
