#!/usr/bin/env bash
# Create an EMR cluster with bams3-spark installed on every node (conf/emr/bootstrap.sh).
#
#   make dist && aws s3 sync dist/ s3://YOUR-BUCKET/bams3/dist/ --exclude env.tar.gz
#   aws s3 cp conf/emr/bootstrap.sh s3://YOUR-BUCKET/bams3/conf/emr/bootstrap.sh
#   BUCKET=YOUR-BUCKET conf/emr/create-cluster.sh
#
# EMR_RELEASE picks the release: emr-7.13.0 (default; Spark 3.5.6, the current EMR 7.x), any other
# emr-7.x (Spark 3.5), or emr-spark-8.0.0 (Spark 4.0.2). bams3-spark supports Spark 3.5 to 4.3.
# The bootstrap action builds the package's venv with BAMS3_PYTHON (python3.11: EMR 7.x's default
# python3 is 3.9, too old for the package; EMR 8.0 has 3.11 to 3.13).
set -euo pipefail

: "${BUCKET:?set BUCKET to the S3 bucket holding bams3/dist and bams3/conf}"
RELEASE=${EMR_RELEASE:-emr-7.13.0}
case "$RELEASE" in
    emr-7.*|emr-spark-8.*) ;;
    *) echo "create-cluster.sh: $RELEASE: bams3-spark needs Spark 3.5 to 4.3 (emr-7.x or emr-spark-8.0.0)" >&2
       exit 2 ;;
esac

exec aws emr create-cluster --name "${NAME:-bams3}" --release-label "$RELEASE" \
    --applications Name=Spark \
    --instance-type "${INSTANCE_TYPE:-m6i.2xlarge}" --instance-count "${INSTANCES:-3}" \
    --use-default-roles \
    --bootstrap-actions "Path=s3://$BUCKET/bams3/conf/emr/bootstrap.sh,Args=[s3://$BUCKET/bams3/dist]"
