"""Sub-commands that make and describe datasets: convert, info, validate.

Heavy modules (pysam, pyarrow, the converter) are imported inside the
handlers, so building the parser stays fast for every sub-command.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bams3_spark.cli.common import add_storage_flags, open_dataset_arg, storage_options
from bams3_spark.cli.progress import progress_for


def add_parsers(sub: Any) -> None:
    """Add convert, info and validate to the ``bams3`` parser."""
    p = sub.add_parser("convert", help="convert a sorted BAM into a BAMS3 dataset")
    p.add_argument("input", metavar="IN.bam", help="coordinate-sorted BAM (path or URL)")
    p.add_argument("output", metavar="OUT", help="dataset prefix (directory or s3://bucket/prefix)")
    p.add_argument("--chunk-size", default="1M", help="window size, 256K..4M (default 1M = 1,048,576 bp)")
    p.add_argument(
        "--workers",
        default="1",
        help="worker processes, or 'auto' for one per usable core (CPU set and container quota; default 1)",
    )
    p.add_argument(
        "--max-chunk-records",
        type=int,
        default=None,
        help="split windows above this many records (default 250000)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at OUT")
    p.add_argument("--allow-empty", action="store_true", help="accept a BAM without records")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress display (shown on stderr when it is a terminal) and no summary",
    )
    add_storage_flags(p)
    p.set_defaults(handler=_convert)

    p = sub.add_parser("info", help="describe a dataset")
    p.add_argument("dataset")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_storage_flags(p)
    p.set_defaults(handler=_info)

    p = sub.add_parser("validate", help="verify every checksum and count of a dataset")
    p.add_argument("dataset")
    add_storage_flags(p)
    p.set_defaults(handler=_validate)


def _convert(args: argparse.Namespace) -> int:
    from bams3_spark.convert import convert
    from bams3_spark.format.layout import DEFAULT_MAX_CHUNK_RECORDS

    with progress_for(args, "convert", unit="reads", bytes_label="written") as progress:
        result = convert(
            args.input,
            args.output,
            chunk_size=args.chunk_size,
            workers=args.workers,
            overwrite=args.overwrite,
            max_chunk_records=args.max_chunk_records or DEFAULT_MAX_CHUNK_RECORDS,
            allow_empty=args.allow_empty,
            progress=progress,
            storage_options=storage_options(args),
        )
    m = result.manifest
    if not args.quiet:
        print(
            f"{result.url}: {m.records:,} records in {m.chunk_count:,} chunks, "
            f"{m.chunk_bytes / 1e6:,.1f} MB, {result.seconds:.1f} s",
            file=sys.stderr,
        )
    return 0


def _info(args: argparse.Namespace) -> int:
    ds = open_dataset_arg(args.dataset, storage_options(args))
    m = ds.manifest
    if args.json:
        doc = {
            "url": ds.url,
            "format_version": m.format_version,
            "created_by": m.created_by,
            "created": m.created,
            "sample": ds.sample,
            "chunk_size": m.chunk_size,
            "records": m.records,
            "chunks": m.chunk_count,
            "bytes": m.chunk_bytes,
            "references": [
                {
                    "name": r.name,
                    "length": r.length,
                    "records": r.records,
                    "chunks": r.chunks,
                    "bytes": r.bytes,
                }
                for r in m.references
            ],
        }
        print(json.dumps(doc, indent=1))
        return 0
    print(f"dataset     {ds.url}")
    print(f"format      BAMS3 {m.format_version} ({m.created_by}, {m.created})")
    print(f"sample      {ds.sample}")
    print(f"window      {m.chunk_size:,} bp")
    print(f"records     {m.records:,}")
    print(f"chunks      {m.chunk_count:,}")
    print(f"bytes       {m.chunk_bytes:,}")
    with_reads = [r for r in m.references if r.records]
    # The unplaced reads ("*") have an entry of their own but are no reference.
    named = sum(1 for r in with_reads if r.name in ds.lengths)
    print(f"references  {len(ds.references):,} ({named:,} with records)")
    width = max((len(r.name) for r in with_reads), default=4)
    for r in with_reads:
        print(
            f"  {r.name:<{width}}  {r.length:>13,} bp  {r.records:>13,} records"
            f"  {r.chunks:>6,} chunks  {r.bytes:>15,} bytes"
        )
    return 0


def _validate(args: argparse.Namespace) -> int:
    ds = open_dataset_arg(args.dataset, storage_options(args))
    problems = ds.validate()
    for p in problems:
        print(f"bams3 validate: {p}", file=sys.stderr)
    if problems:
        print(f"{ds.url}: {len(problems)} problem(s) found", file=sys.stderr)
        return 1
    m = ds.manifest
    print(f"{ds.url}: OK ({m.records:,} records, {m.chunk_count:,} chunks verified)")
    return 0
