#!/usr/bin/env bash
# Reads per reference, every reference counted at once (GNU parallel), as `samtools view -c BAM REF`
# would count them one by one. Output (stdout): reference<TAB>reads, in the dataset's order
# (references with reads, then '*' for the unplaced reads if any).
#
#   examples/parallel/count_references.sh s3://bucket/NA12878.bams3 [JOBS] [bams3 query options...]
#   examples/parallel/count_references.sh NA12878.bams3 24 --filter 'mapq >= 30'
#
# Each count reads only its reference's index (and the few chunks a filter needs), so 24 references
# cost 24 small jobs; JOBS (default 24) of them run at once.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 DATASET [JOBS] [bams3 query options...]" >&2; exit 2; }
dataset=$1
jobs=${2:-24}
shift $(( $# >= 2 ? 2 : 1 ))
bams3=${BAMS3:-bams3}

count_one() {  # REFERENCE: one line, "name<TAB>count"
  local region
  # Braces quote names with ':' (HLA-A*01:01:01:01); '*' is the unplaced reads.
  if [ "$1" = "*" ]; then region='*'; else region="{$1}"; fi
  printf '%s\t%s\n' "$1" "$("$bams3" query "$dataset" "$region" --count "${options[@]}")"
}
export -f count_one
export dataset bams3
# An array cannot be exported: pass the query options through a string parallel splits again.
options_text=""
[ $# -eq 0 ] || options_text=$(printf '%q ' "$@")
export options_text

# The references with reads, in order: column 2 of `bams3 chunks -l`, one per chunk.
"$bams3" chunks -l "$dataset" | cut -f2 | uniq \
  | parallel --will-cite -k -j "$jobs" 'eval "options=($options_text)"; count_one {}'
