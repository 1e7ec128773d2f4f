#!/usr/bin/env bash
# The commands of the example pipelines: examples/snakemake/Snakefile and examples/nextflow/main.nf
# both call this script, so the two run exactly the same steps.
#
#   bams3-steps.sh shard DATASET I N FILTER   records passing FILTER per reference, in shard I
#                                             (0-based) of N of the dataset's chunk objects
#                                             (TSV: reference, reads)
#   bams3-steps.sh merge SHARD.tsv...         the shards' counts summed (TSV with a header line,
#                                             references sorted by name; '*' = unplaced reads)
#
# Every chunk object decodes alone, so the N shard jobs need nothing from each other: `bams3 chunks
# --shard I/N` gives each its share of the objects (balanced by bytes, the same answer in every
# job), `bams3 cat` decodes them. DATASET may be local or s3://... (set AWS_ENDPOINT_URL for an
# S3-compatible store). BAMS3 names the bams3 command (default: bams3 on PATH).
set -euo pipefail
bams3=${BAMS3:-bams3}

case "${1:-}" in
  shard)
    [ $# -eq 5 ] || { echo "usage: $0 shard DATASET I N FILTER" >&2; exit 2; }
    dataset=$2 index=$3 shards=$4 filter=$5
    "$bams3" chunks "$dataset" --shard "$index/$shards" \
      | xargs -r "$bams3" cat --filter "$filter" \
      | awk -F '\t' '{ n[$3]++ } END { for (r in n) print r "\t" n[r] }' \
      | LC_ALL=C sort
    ;;
  merge)
    shift
    printf 'reference\treads\n'
    awk -F '\t' '{ n[$1] += $2 } END { for (r in n) print r "\t" n[r] }' "$@" | LC_ALL=C sort
    ;;
  *)
    echo "usage: $0 shard DATASET I N FILTER | merge SHARD.tsv..." >&2
    exit 2
    ;;
esac
