#!/usr/bin/env bash
# Submit one bams3 job to a Dataproc cluster, shipping the package as the packed environment that
# `make dist` builds (dist/env.tar.gz), in cluster deploy mode so that the driver runs in a YARN
# container where the archive is unpacked too:
#
#   gsutil -m rsync -r dist gs://YOUR-BUCKET/bams3/dist
#   export CLUSTER=my-cluster REGION=europe-west1 DIST=gs://YOUR-BUCKET/bams3/dist
#   conf/dataproc/submit.sh convert gs://YOUR-BUCKET/bams/NA12878.bam gs://YOUR-BUCKET/cohort/NA12878.bams3
#   conf/dataproc/submit.sh query "gs://YOUR-BUCKET/cohort/*.bams3" --region chr17:43044295-43125364 \
#       --count --out gs://YOUR-BUCKET/results/brca1-counts
#
# Everything after the job name is passed to the job (jobs/JOB.py --help lists its options).
set -euo pipefail

JOB=${1:?usage: submit.sh convert|query|coverage JOB-ARGS...}
shift
: "${CLUSTER:?set CLUSTER to the Dataproc cluster name}"
: "${REGION:?set REGION to the region of the cluster}"
: "${DIST:?set DIST to the gs:// prefix holding make dist output}"

exec gcloud dataproc jobs submit pyspark "$DIST/jobs/$JOB.py" \
    --cluster="$CLUSTER" \
    --region="$REGION" \
    --archives="$DIST/env.tar.gz#environment" \
    --properties="spark.submit.deployMode=cluster,spark.pyspark.python=./environment/bin/python,spark.pyspark.driver.python=./environment/bin/python,spark.sql.python.filterPushdown.enabled=true" \
    -- "$@"
