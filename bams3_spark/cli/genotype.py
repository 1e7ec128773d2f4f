"""The ``bams3 genotype`` sub-command: allele counts at known sites, as a TSV table or a multi-sample VCF.

Options mirror ``samtools mpileup``'s (``-Q``, ``-q``, ``--ff``, ``--rf``,
``-x``, ``-A``, ``-d``), with its defaults; counting is ``samtools mpileup -B``'s
(no reference, BAQ off). Heavy modules are imported inside the handler.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bams3_spark.cli.common import add_storage_flags, non_negative_int, storage_options
from bams3_spark.cli.progress import progress_for


def _flags(text: str) -> int:
    from bams3_spark.exceptions import InvalidArgumentError
    from bams3_spark.genotype.options import parse_flags

    try:
        return parse_flags(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_counting_flags(p: argparse.ArgumentParser) -> None:
    """samtools mpileup's counting options, names and defaults (``bams3 genotype``, jobs/genotype.py)."""
    p.add_argument("-Q", "--min-BQ", dest="min_bq", type=non_negative_int, default=13, metavar="INT",
                   help="skip bases with base quality below INT (default 13)")
    p.add_argument("-q", "--min-MQ", dest="min_mq", type=non_negative_int, default=0, metavar="INT",
                   help="skip reads with mapping quality below INT (default 0)")
    p.add_argument("--ff", "--excl-flags", dest="ff", type=_flags, default=None, metavar="FLAGS",
                   help="skip reads with any of these FLAG bits (default UNMAP,SECONDARY,QCFAIL,DUP)")
    p.add_argument("--rf", "--incl-flags", dest="rf", type=_flags, default=0, metavar="FLAGS",
                   help="only reads with at least one of these FLAG bits")
    p.add_argument("-x", "--ignore-overlaps-removal", dest="ignore_overlaps", action="store_true",
                   help="count overlapping mates twice (no overlap detection)")
    p.add_argument("-A", "--count-orphans", action="store_true",
                   help="do not skip reads that are paired but not in a proper pair")
    p.add_argument("-d", "--max-depth", type=non_negative_int, default=8000, metavar="INT",
                   help="htslib's per-position read limit (default 8000; 0: none)")


def counting_options(args: argparse.Namespace) -> Any:
    """The :class:`~bams3_spark.genotype.options.GenotypeOptions` of :func:`add_counting_flags`' flags."""
    from bams3_spark.format.flags import DEFAULT_EXCLUDE
    from bams3_spark.genotype.options import GenotypeOptions

    return GenotypeOptions(
        min_base_quality=args.min_bq, min_mapping_quality=args.min_mq,
        exclude_flags=DEFAULT_EXCLUDE if args.ff is None else args.ff, require_flags=args.rf,
        count_orphans=args.count_orphans, ignore_overlaps=args.ignore_overlaps, max_depth=args.max_depth,
    )


def add_parsers(sub: Any) -> None:
    """Add ``genotype`` to the ``bams3`` parser."""
    p = sub.add_parser(
        "genotype",
        help="allele counts at known sites (samtools mpileup -B rules), as TSV or a multi-sample VCF",
        description=(
            "Count A, C, G, T, N, deletions and insertions (and per strand) of one or more datasets at "
            "the sites of a BED file (every base of each interval) or a VCF (REF/ALT kept), exactly as "
            "samtools mpileup -B (no reference, BAQ off) counts them. Only the chunks holding sites are "
            "read, with only the needed columns. Output by OUT's suffix: .tsv (default, stdout), "
            ".vcf.gz (bgzipped, tabix-indexed, FORMAT DP:AD, one column per sample)."
        ),
    )
    p.add_argument("datasets", nargs="+", metavar="DATASET", help="dataset prefix (directory or s3://...)")
    p.add_argument("-s", "--sites", required=True, metavar="SITES", help="BED or VCF/VCF.gz of sites")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file: .tsv or .vcf.gz (default: TSV on stdout)")
    add_counting_flags(p)
    p.add_argument("-t", "--workers", default="1", metavar="N",
                   help="worker processes, or 'auto' for one per core (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress display and no warnings")
    add_storage_flags(p)
    p.set_defaults(handler=_genotype)


def _genotype(args: argparse.Namespace) -> int:
    from bams3_spark.exceptions import InvalidArgumentError
    from bams3_spark.genotype.engine import counts_table, genotype, load_sites, open_datasets
    from bams3_spark.genotype.output import tsv_header, tsv_text, write_vcf
    from bams3_spark.io.storage import replacing

    out = args.output
    kind = "tsv"
    if out is not None:
        low = out.lower()
        if low.endswith((".vcf.gz", ".vcf.bgz")):
            kind = "vcf"
        elif not low.endswith(".tsv"):
            raise InvalidArgumentError(f"{out}: unknown output type (use .tsv or .vcf.gz)")
    options = counting_options(args)
    opts = storage_options(args)
    dss = open_datasets(args.datasets, opts)

    def warn(msg: str) -> None:
        if not args.quiet:
            print(f"bams3 genotype: warning: {msg}", file=sys.stderr)

    # TSV on stdout: no bar over the rows when both are the terminal.
    with progress_for(args, "genotype", "units", data_on_stdout=out is None,
                      bytes_label="of chunks") as progress:
        sites = load_sites(args.sites, opts)
        results = genotype(dss, sites, options, workers=args.workers, progress=progress,
                           on_warning=warn, **opts)
        if kind == "vcf":
            samples: list[str] = []
            counts = []
            for sample, _, c in results:
                samples.append(sample)
                counts.append(c)
            write_vcf(out, dss[0].references, samples, sites, counts)
            return 0
        if out is None:
            sys.stdout.write(tsv_header())
            for sample, sites, c in results:
                sys.stdout.write(tsv_text(counts_table(sample, sites.chrom_of(), sites.pos, c)))
            sys.stdout.flush()
            return 0
        with replacing(out) as tmp, open(tmp, "w") as fh:
            fh.write(tsv_header())
            for sample, sites, c in results:
                fh.write(tsv_text(counts_table(sample, sites.chrom_of(), sites.pos, c)))
    return 0
