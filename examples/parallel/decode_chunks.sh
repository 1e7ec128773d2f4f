#!/usr/bin/env bash
# Every chunk object of a dataset (or of some regions) decoded to SAM by its own job, JOBS at once
# (GNU parallel): the fan-out for tools that read SAM. Writes OUTDIR/<reference-key>.<window>.sam,
# one file per chunk object; together they hold every record of the dataset (or of the chunks the
# regions touch) once. Replace `bams3 cat` by `bams3 cat ... | your-tool` for your own step.
#
#   examples/parallel/decode_chunks.sh s3://bucket/NA12878.bams3 out/ [JOBS] [REGION...]
#
# --joblog and --retries make reruns cheap: `parallel --resume-failed` reruns only failed chunks.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DATASET OUTDIR [JOBS] [REGION...]" >&2; exit 2; }
dataset=$1
outdir=$2
jobs=${3:-16}
shift $(( $# >= 3 ? 3 : 2 ))
bams3=${BAMS3:-bams3}
mkdir -p "$outdir"
export outdir bams3

decode_one() {  # CHUNK_URL: .../data/<reference-key>/<start>-<end>[.<part>].chunk
  local key name
  key=$(basename "$(dirname "$1")")
  name=$(basename "$1" .chunk)
  "$bams3" cat "$1" > "$outdir/$key.$name.sam.tmp" && mv "$outdir/$key.$name.sam.tmp" "$outdir/$key.$name.sam"
}
export -f decode_one

"$bams3" chunks "$dataset" "$@" \
  | parallel --will-cite -j "$jobs" --retries 2 --joblog "$outdir/jobs.log" decode_one {}
