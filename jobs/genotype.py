"""Distributed genotyping: ``spark-submit jobs/genotype.py DATASET... --sites SITES --out OUT``.

Allele counts (``samtools mpileup -B`` rules) of one or many samples at the
sites of a BED or VCF file, written as Parquet or TSV partitioned by sample,
or as one multi-sample bgzipped VCF (FORMAT ``DP:AD``). The work is done by
:func:`bams3_spark.spark.genotype_job.run_genotype`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bams3_spark.cli.common import add_job_flags, storage_options
from bams3_spark.spark.jobs import run_job

PROG = "jobs/genotype.py"
FORMATS = ("parquet", "tsv", "vcf")


def build_parser() -> argparse.ArgumentParser:
    """The job's command line (counting options as ``bams3 genotype``'s, samtools mpileup's names)."""
    p = argparse.ArgumentParser(prog=PROG, description="Allele counts at known sites across BAMS3 datasets.")
    p.add_argument("datasets", nargs="*", metavar="DATASET",
                   help="dataset paths, URLs or quoted globs (one sample each)")
    p.add_argument("--manifest", metavar="TSV",
                   help="sample sheet: DATASET or SAMPLE<TAB>DATASET per line (or a header naming columns)")
    p.add_argument("--sites", required=True, help="BED or VCF/VCF.gz of sites")
    p.add_argument("--out", required=True, help="output directory (parquet, tsv) or .vcf.gz file (vcf)")
    p.add_argument("--format", choices=FORMATS, default="parquet", help="output format (default parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("-Q", "--min-BQ", dest="min_bq", type=int, default=13, help="min base quality (13)")
    p.add_argument("-q", "--min-MQ", dest="min_mq", type=int, default=0, help="min mapping quality (0)")
    p.add_argument("--ff", "--excl-flags", dest="ff", default="UNMAP,SECONDARY,QCFAIL,DUP",
                   help="skip reads with any of these flags (default UNMAP,SECONDARY,QCFAIL,DUP)")
    p.add_argument("--rf", "--incl-flags", dest="rf", default="0", help="only reads with one of these flags")
    p.add_argument("-x", "--ignore-overlaps-removal", dest="ignore_overlaps", action="store_true",
                   help="no mate-overlap detection")
    p.add_argument("-A", "--count-orphans", action="store_true",
                   help="keep paired reads not in a proper pair")
    p.add_argument("-d", "--max-depth", type=int, default=8000,
                   help="per-position read limit (8000; 0: none)")
    add_job_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; return the exit status (0 done, 1 error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.datasets and not args.manifest:
        parser.error("give datasets (paths, URLs, quoted globs) or --manifest TSV")

    def work() -> int:
        from bams3_spark.genotype.options import GenotypeOptions, parse_flags
        from bams3_spark.spark.genotype_job import run_genotype
        from bams3_spark.spark.session import get_session

        options = GenotypeOptions(
            min_base_quality=args.min_bq, min_mapping_quality=args.min_mq, exclude_flags=parse_flags(args.ff),
            require_flags=parse_flags(args.rf), count_orphans=args.count_orphans,
            ignore_overlaps=args.ignore_overlaps, max_depth=args.max_depth,
        )
        spark = get_session(master=args.master, app_name="bams3-genotype")
        warns = run_genotype(spark, args.datasets, args.sites, args.out, fmt=args.format, options=options,
                             overwrite=args.overwrite, manifest=args.manifest, **storage_options(args))
        for w in warns:
            print(f"{PROG}: warning: {w}", file=sys.stderr)
        print(f"{args.out}: genotypes written ({args.format})")
        return 0

    return run_job(PROG, work, args.debug)


if __name__ == "__main__":
    sys.exit(main())
