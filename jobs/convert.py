"""Distributed BAM -> BAMS3 conversion: ``spark-submit jobs/convert.py IN.bam OUT.bams3 [IN OUT ...]``.

Or many samples from a sheet: ``spark-submit jobs/convert.py --manifest samples.tsv``
(two tab-separated columns: input BAM, output dataset). Prints one line per
sample; exits 1 if any sample failed (each failure named, with its reason).
The work is done by :func:`bams3_spark.spark.convert_job.convert_samples`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bams3_spark.cli.common import add_job_flags, storage_options
from bams3_spark.format.layout import DEFAULT_MAX_CHUNK_RECORDS
from bams3_spark.spark.convert_job import Sample, convert_samples, read_sample_sheet, report_lines
from bams3_spark.spark.jobs import run_job
from bams3_spark.spark.session import get_session

PROG = "jobs/convert.py"


def build_parser() -> argparse.ArgumentParser:
    """The job's command line."""
    p = argparse.ArgumentParser(
        prog=PROG, description="Convert sorted, indexed BAMs into BAMS3 datasets with Spark."
    )
    p.add_argument("pairs", nargs="*", metavar="IN OUT", help="input BAM and output dataset, repeated")
    p.add_argument("--manifest", metavar="TSV", help="sample sheet: input BAM <TAB> output dataset per line")
    p.add_argument("--chunk-size", default="1M", help="window size, 256K..4M (default 1M)")
    p.add_argument("--max-chunk-records", type=int, default=None,
                   help="split windows above this many records (default 250000)")
    p.add_argument("--overwrite", action="store_true", help="replace existing datasets at the outputs")
    p.add_argument("--allow-empty", action="store_true", help="accept BAMs without records")
    add_job_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; return the exit status (0 all converted, 1 a failure, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.pairs) % 2:
        parser.error("inputs and outputs come in pairs: IN OUT [IN OUT ...]")
    if not args.pairs and not args.manifest:
        parser.error("give IN OUT pairs or --manifest samples.tsv")
    opts = storage_options(args)

    def work() -> int:
        samples = [Sample(i, o) for i, o in zip(args.pairs[::2], args.pairs[1::2], strict=True)]
        if args.manifest:
            samples += read_sample_sheet(args.manifest, opts)
        spark = get_session(master=args.master, app_name="bams3-convert")
        result = convert_samples(
            spark,
            samples,
            chunk_size=args.chunk_size,
            overwrite=args.overwrite,
            max_chunk_records=args.max_chunk_records or DEFAULT_MAX_CHUNK_RECORDS,
            allow_empty=args.allow_empty,
            storage_options=opts,
        )
        out, err = report_lines(result)
        for line in out:
            print(line)
        for line in err:
            print(f"{PROG}: {line}", file=sys.stderr)
        return 1 if result.failed else 0

    return run_job(PROG, work, args.debug)


if __name__ == "__main__":
    sys.exit(main())
