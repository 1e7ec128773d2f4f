"""Cohort region query: ``spark-submit jobs/query.py --region REGION DATASET... --out OUT``.

Per-sample counts (``--count``) or records of one or more regions across a
cohort of BAMS3 datasets (paths, URLs, quoted globs, ``--manifest TSV``),
written to OUT as Parquet or CSV partitioned by sample, or one BAM or SAM file
per sample (``--format bam|sam``), by the executors. Prints a one-line summary
with the job's costs. The work is done by :func:`bams3_spark.spark.query_job.run_query`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bams3_spark.cli.common import add_cohort_inputs, add_job_flags, require_cohort_inputs, storage_options
from bams3_spark.spark.jobs import run_job
from bams3_spark.spark.query_job import FORMATS, report, run_query
from bams3_spark.spark.session import get_session

PROG = "jobs/query.py"


def build_parser() -> argparse.ArgumentParser:
    """The job's command line."""
    p = argparse.ArgumentParser(
        prog=PROG, description="Query a region across many BAMS3 datasets (a cohort) with Spark."
    )
    add_cohort_inputs(p)
    p.add_argument("--region", action="append", default=[], metavar="REGION",
                   help="samtools region, e.g. chr17:43044295-43125364 (repeatable; default: every record)")
    p.add_argument("--out", required=True, metavar="OUT", help="output directory (local or s3:// prefix)")
    p.add_argument("--format", choices=FORMATS, default="parquet", help="output format (default parquet)")
    p.add_argument("--count", action="store_true", help="write per-sample record counts instead of records")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_job_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; return the exit status (0 done, 1 error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    require_cohort_inputs(parser, args)

    def work() -> int:
        spark = get_session(master=args.master, app_name="bams3-query")
        result = run_query(
            args.datasets,
            args.out,
            regions=args.region,
            fmt=args.format,
            count=args.count,
            overwrite=args.overwrite,
            manifest=args.manifest,
            storage_options=storage_options(args),
            spark=spark,
        )
        return report(PROG, result)

    return run_job(PROG, work, args.debug)


if __name__ == "__main__":
    sys.exit(main())
