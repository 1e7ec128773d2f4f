"""The ``bams3 coverage`` sub-command: mosdepth's files from BAMS3 datasets.

Flags mirror mosdepth's (``-b``, ``-n``, ``-T``, ``-x``, ``-Q``, ``-F``, ``-i``,
``-t``) so pipelines can switch by changing the command name; heavy modules are
imported inside the handler.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bams3_spark.cli.common import add_storage_flags, flag_value, storage_options
from bams3_spark.cli.progress import progress_for
from bams3_spark.format.flags import DEFAULT_EXCLUDE


def _mapq(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a MAPQ from 0 to 255, got {text!r}") from None
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"expected a MAPQ from 0 to 255, got {text!r}")
    return value


def _thresholds(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated non-negative integers, got {text!r}")
    return values


def add_parsers(sub: Any) -> None:
    """Add ``coverage`` to the ``bams3`` parser."""
    p = sub.add_parser(
        "coverage",
        help="read depth (mosdepth's files) from one or more datasets",
        description=(
            "Compute read depth of BAMS3 datasets with mosdepth's rules and write mosdepth's files "
            "(PREFIX.mosdepth.summary.txt, PREFIX.mosdepth.global.dist.txt, PREFIX.per-base.bed.gz, "
            "and with --by PREFIX.regions.bed.gz, PREFIX.mosdepth.region.dist.txt, with --thresholds "
            "PREFIX.thresholds.bed.gz), identical to mosdepth 0.3.3's after zcat. Only the columns "
            "the counting needs are read. With several datasets each sample gets PREFIX.SAMPLE.*."
        ),
    )
    p.add_argument("datasets", nargs="+", metavar="DATASET", help="dataset prefix (directory or s3://...)")
    p.add_argument("-o", "--output", metavar="PREFIX", help="output prefix (mosdepth's positional prefix)")
    p.add_argument(
        "-b", "--by", metavar="N|BED",
        help="mean depth per N-base window, or per region of a BED file (PREFIX.regions.bed.gz)",
    )
    pb = p.add_mutually_exclusive_group()
    pb.add_argument("--per-base", dest="per_base", action="store_true", default=True,
                    help="write PREFIX.per-base.bed.gz (the default, as mosdepth)")
    pb.add_argument("-n", "--no-per-base", dest="per_base", action="store_false",
                    help="do not write the per-base file (mosdepth -n)")
    p.add_argument("-T", "--thresholds", type=_thresholds, metavar="1,10,30",
                   help="bases at or above each depth, per window/region (needs --by)")
    p.add_argument("--region", metavar="R",
                   help="only this samtools region (chr1:10,000-20,000); files then describe the region")
    p.add_argument("-t", "--workers", default="1", metavar="N",
                   help="worker processes, or 'auto' for one per core (default 1)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-x", "--fast-mode", action="store_true",
                      help="mosdepth -x: whole read span, no mate-overlap correction")
    mode.add_argument("--samtools", action="store_true",
                      help="samtools depth rules: CIGAR-aware, no mate-overlap correction")
    p.add_argument("-J", "--count-deletions", action="store_true",
                   help="count deletions as covered (samtools depth -J; needs --samtools)")
    p.add_argument("-Q", "--mapq", type=_mapq, default=0, metavar="Q", help="ignore reads with MAPQ < Q")
    p.add_argument("-F", "--flag-exclude", type=flag_value, default=None, metavar="F",
                   help=f"ignore reads with any of these FLAG bits (default {DEFAULT_EXCLUDE})")
    p.add_argument("-i", "--flag-include", type=flag_value, default=0, metavar="F",
                   help="only reads with at least one of these FLAG bits")
    p.add_argument("--plot", metavar="PNG",
                   help="also draw depth along the region (or the references with reads), a line per dataset")
    p.add_argument("--quiet", action="store_true",
                   help="no progress display (shown on stderr when it is a terminal) and no summary")
    add_storage_flags(p)
    p.set_defaults(handler=_coverage)


def _coverage(args: argparse.Namespace) -> int:
    from bams3_spark.coverage.engine import write_coverage
    from bams3_spark.coverage.options import coverage_options
    from bams3_spark.exceptions import InvalidArgumentError
    from bams3_spark.parallel import keep_freed_memory

    # This process counts its share of the references too (write_coverage);
    # a command may set the process-wide malloc policy a library call may not.
    keep_freed_memory()
    if args.output is None and args.plot is None:
        raise InvalidArgumentError("give -o PREFIX (mosdepth's files) and/or --plot PNG")
    if args.thresholds and args.by is None:
        raise InvalidArgumentError("--thresholds needs --by (a window size or a BED file)")
    options = coverage_options(
        fast_mode=args.fast_mode, samtools=args.samtools, mapq=args.mapq, flag_exclude=args.flag_exclude,
        flag_include=args.flag_include, count_deletions=args.count_deletions,
    )
    plot = None
    if args.plot is not None:
        from bams3_spark.coverage.plot import CoveragePlot, track

        plot = CoveragePlot(options.mode, args.region)
    with progress_for(args, "coverage") as progress:
        run = write_coverage(
            args.datasets,
            args.output,
            by=args.by,
            thresholds=args.thresholds,
            per_base=args.per_base,
            options=options,
            region=args.region,
            workers=args.workers,
            reduce_slice=track if plot is not None else None,
            on_reduced=plot.add_track if plot is not None else None,
            progress=progress,
            **storage_options(args),
        )
    if plot is not None:
        plot.save(args.plot)
    if args.quiet:
        return 0
    for sample, paths in run.paths.items():
        print(f"{sample}: {len(paths)} file(s): {' '.join(paths)}", file=sys.stderr)
    if args.plot is not None:
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0
