#!/usr/bin/env bash
# Create a Dataproc cluster for bams3-spark jobs (submitted with conf/dataproc/submit.sh).
#
#   CLUSTER=my-cluster REGION=europe-west1 conf/dataproc/create-cluster.sh
#
# IMAGE_VERSION picks the image: 2.2 (default) or 2.3 bring Spark 3.5, 3.0 brings Spark 4.0.
# bams3-spark supports Spark 3.5 to 4.3. The package itself is shipped with each job as the
# packed environment of `make dist` (built on a cluster node with the image's python3, so the
# archive's interpreter link matches: make dist PYTHON="$(command -v python3)" DIST_EXTRAS=gcsfs).
set -euo pipefail

: "${CLUSTER:?set CLUSTER to the cluster name}"
: "${REGION:?set REGION to the region}"
IMAGE=${IMAGE_VERSION:-2.2}
case "$IMAGE" in
    2.2*|2.3*|3.0*) ;;
    *) echo "create-cluster.sh: image $IMAGE: bams3-spark needs Spark 3.5 to 4.3 (images 2.2, 2.3, 3.0)" >&2
       exit 2 ;;
esac

exec gcloud dataproc clusters create "$CLUSTER" \
    --region="$REGION" \
    --image-version="$IMAGE" \
    --master-machine-type="${MACHINE_TYPE:-n2-standard-8}" \
    --worker-machine-type="${MACHINE_TYPE:-n2-standard-8}" \
    --num-workers="${WORKERS:-2}"
