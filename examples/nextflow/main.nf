#!/usr/bin/env nextflow
// Reads per reference passing a filter, fanned out over shards of a BAMS3 dataset's chunk objects:
// the pipeline of examples/snakemake/Snakefile in Nextflow DSL2, calling the same script
// (../workflows/bams3-steps.sh), so both run the same commands.
//
//   nextflow run examples/nextflow/main.nf --dataset s3://bucket/NA12878.bams3 --shards 64
//
// Each SHARD task takes its share of the chunk objects (`bams3 chunks --shard I/N`, balanced by
// bytes) and decodes them with a filter (`bams3 cat --filter`); MERGE sums the per-reference
// counts into OUTDIR/reads_per_reference.tsv. With the awsbatch executor each SHARD is one
// AWS Batch job; `bams3` must be on the tasks' PATH (container or conda environment).

nextflow.enable.dsl = 2

params.dataset = null
params.shards = 4
params.outdir = 'results'
params.filter = 'mapq >= 30 and flag & 1024 == 0'

process SHARD {
    tag "${i}/${params.shards}"

    input:
    val i

    output:
    path "shard_${i}.tsv"

    script:
    """
    bash '${projectDir}/../workflows/bams3-steps.sh' shard '${params.dataset}' ${i} ${params.shards} '${params.filter}' > shard_${i}.tsv
    """
}

process MERGE {
    publishDir params.outdir, mode: 'copy'

    input:
    path parts

    output:
    path 'reads_per_reference.tsv'

    script:
    """
    bash '${projectDir}/../workflows/bams3-steps.sh' merge ${parts} > reads_per_reference.tsv
    """
}

workflow {
    if (!params.dataset) {
        error "give the dataset: --dataset PATH_OR_S3_URL"
    }
    Channel.of(0..<(params.shards as int)) | SHARD | collect | MERGE
}
