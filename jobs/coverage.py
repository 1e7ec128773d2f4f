"""Distributed coverage: ``spark-submit jobs/coverage.py DATASET... [--by N] --out OUT``.

Per-base depth as run-length intervals (default) or mean depth per ``--by N``
window, over a cohort (dataset paths, URLs, quoted globs, ``--manifest TSV``),
with mosdepth's rules (or ``--fast-mode`` / ``--samtools``); written as
Parquet, CSV, bedGraph or each sample's mosdepth files (``--format mosdepth``).
Prints a one-line summary with the job's costs. The work is done by
:func:`bams3_spark.spark.coverage_job.run_coverage`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bams3_spark.cli.common import (
    add_cohort_inputs,
    add_job_flags,
    flag_value,
    positive_int,
    require_cohort_inputs,
    storage_options,
)
from bams3_spark.coverage.options import coverage_options
from bams3_spark.format.flags import DEFAULT_EXCLUDE
from bams3_spark.spark.coverage_job import FORMATS, run_coverage
from bams3_spark.spark.jobs import run_job
from bams3_spark.spark.session import get_session

PROG = "jobs/coverage.py"


def _thresholds(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("thresholds must be non-negative")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The job's command line."""
    p = argparse.ArgumentParser(prog=PROG, description="Read depth of BAMS3 datasets with Spark.")
    add_cohort_inputs(p)
    p.add_argument("--out", required=True, help="output directory (local path or URL Spark can write)")
    p.add_argument("--by", type=positive_int, metavar="N",
                   help="mean depth per N-base window (default: per-base runs)")
    p.add_argument("--format", choices=FORMATS, default="parquet", help="output format (default parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("-n", "--no-per-base", action="store_true",
                   help="--format mosdepth: no per-base file (mosdepth -n)")
    p.add_argument("-T", "--thresholds", type=_thresholds, default=(), metavar="N,N",
                   help="--format mosdepth: bases at or above each threshold per window (needs --by)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fast-mode", action="store_true",
                      help="mosdepth -x: whole read span, no mate correction")
    mode.add_argument("--samtools", action="store_true", help="samtools depth rules (no mate correction)")
    p.add_argument("--count-deletions", action="store_true", help="count deletions (samtools depth -J)")
    p.add_argument("--mapq", type=int, default=0, metavar="Q", help="ignore reads with MAPQ < Q")
    p.add_argument("--flag-exclude", type=flag_value, default=None, metavar="F",
                   help=f"ignore reads with any of these bits (default {DEFAULT_EXCLUDE})")
    p.add_argument("--flag-include", type=flag_value, default=0, metavar="F",
                   help="only reads with one of these bits")
    add_job_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; return the exit status (0 done, 1 error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    require_cohort_inputs(parser, args)

    def work() -> int:
        options = coverage_options(
            fast_mode=args.fast_mode, samtools=args.samtools, mapq=args.mapq, flag_exclude=args.flag_exclude,
            flag_include=args.flag_include, count_deletions=args.count_deletions,
        )
        spark = get_session(master=args.master, app_name="bams3-coverage")
        result = run_coverage(
            spark, args.datasets, args.out, by=args.by, fmt=args.format, options=options,
            overwrite=args.overwrite, manifest=args.manifest, per_base=not args.no_per_base,
            thresholds=args.thresholds, **storage_options(args),
        )
        print(f"{args.out}: coverage written ({args.format}); {result.costs.line()}")
        return 0

    return run_job(PROG, work, args.debug)


if __name__ == "__main__":
    sys.exit(main())
