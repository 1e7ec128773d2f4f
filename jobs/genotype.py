"""Distributed genotyping: ``spark-submit jobs/genotype.py DATASET... --sites SITES --out OUT``.

Allele counts (``samtools mpileup -B`` rules) of one or many samples at the
sites of a BED or VCF file, written as Parquet or TSV partitioned by sample,
or as one multi-sample bgzipped VCF (FORMAT ``DP:AD``). Prints a one-line
summary with the job's costs. The work is done by
:func:`bams3_spark.spark.genotype_job.run_genotype`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bams3_spark.cli.common import add_cohort_inputs, add_job_flags, require_cohort_inputs, storage_options
from bams3_spark.cli.genotype import add_counting_flags, counting_options
from bams3_spark.spark.jobs import run_job

PROG = "jobs/genotype.py"
FORMATS = ("parquet", "tsv", "vcf")


def build_parser() -> argparse.ArgumentParser:
    """The job's command line (counting options as ``bams3 genotype``'s, samtools mpileup's names)."""
    p = argparse.ArgumentParser(prog=PROG, description="Allele counts at known sites across BAMS3 datasets.")
    add_cohort_inputs(p)
    p.add_argument("--sites", required=True, help="BED or VCF/VCF.gz of sites")
    p.add_argument("--out", required=True, help="output directory (parquet, tsv) or .vcf.gz file (vcf)")
    p.add_argument("--format", choices=FORMATS, default="parquet", help="output format (default parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_counting_flags(p)
    add_job_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; return the exit status (0 done, 1 error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    require_cohort_inputs(parser, args)

    def work() -> int:
        from bams3_spark.spark.genotype_job import run_genotype
        from bams3_spark.spark.session import get_session

        options = counting_options(args)
        spark = get_session(master=args.master, app_name="bams3-genotype")
        result = run_genotype(spark, args.datasets, args.sites, args.out, fmt=args.format, options=options,
                              overwrite=args.overwrite, manifest=args.manifest, **storage_options(args))
        for w in result.warnings:
            print(f"{PROG}: warning: {w}", file=sys.stderr)
        print(f"{args.out}: genotypes written ({args.format}); {result.costs.line()}")
        return 0

    return run_job(PROG, work, args.debug)


if __name__ == "__main__":
    sys.exit(main())
