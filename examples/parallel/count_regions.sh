#!/usr/bin/env bash
# One count per region for a list of regions (one samtools region per line, e.g. 100 of them),
# JOBS at once (GNU parallel): the same numbers as `samtools view -c BAM REGION` for each line.
# Output (stdout): region<TAB>reads, in the input's order.
#
#   examples/parallel/count_regions.sh NA12878.bams3 regions.txt [JOBS]
#   seq 1 10 | awk '{print "chr1:" $1 "M-" $1+1 "M"}' | examples/parallel/count_regions.sh ds.bams3 - 10
#
# On S3, each count is a few small requests (an index, and the two chunk columns a region edge
# cuts), so many at once hide the per-request latency.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DATASET REGIONS.txt|- [JOBS]" >&2; exit 2; }
dataset=$1
regions=$2
jobs=${3:-16}
bams3=${BAMS3:-bams3}
export dataset bams3

grep -v '^[[:space:]]*\(#\|$\)' "$regions" \
  | parallel --will-cite -k -j "$jobs" 'printf "%s\t%s\n" {} "$("$bams3" query "$dataset" {} --count)"'
