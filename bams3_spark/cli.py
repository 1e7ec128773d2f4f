"""The ``bams3`` command line.

Every failure is one line on stderr naming the input and the problem, with a
non-zero exit status (1 for errors, 2 for usage, 130 when interrupted); a
traceback is printed only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from bams3_spark import __version__
from bams3_spark.exceptions import Bams3Error

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, Handler] = {}


def storage_options(args: argparse.Namespace) -> dict[str, Any]:
    """Return the fsspec options implied by the common storage flags."""
    opts: dict[str, Any] = {}
    if getattr(args, "s3_endpoint", None):
        opts["endpoint_url"] = args.s3_endpoint
    if getattr(args, "anon", False):
        opts["anon"] = True
    if getattr(args, "profile", None):
        opts["profile"] = args.profile
    return opts


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def flag_value(text: str) -> int:
    """An argparse type: a SAM FLAG mask in decimal or hexadecimal (``0x904``), as samtools accepts."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a FLAG value (decimal or 0x hex), got {text!r}") from None
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"FLAG value {text!r} is out of range 0..65535")
    return value


def add_storage_flags(p: argparse.ArgumentParser) -> None:
    """Add the common S3 flags (``--s3-endpoint``, ``--anon``, ``--profile``) to a parser."""
    g = p.add_argument_group("storage")
    g.add_argument(
        "--s3-endpoint", metavar="URL", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS)"
    )
    g.add_argument("--anon", action="store_true", help="anonymous S3 access (public buckets)")
    g.add_argument("--profile", help="AWS profile name from ~/.aws/config")


def command(name: str) -> Callable[[Handler], Handler]:
    """Register a sub-command handler (used by the modules that define commands)."""

    def deco(fn: Handler) -> Handler:
        _COMMANDS[name] = fn
        return fn

    return deco


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for every sub-command."""
    parser = argparse.ArgumentParser(
        prog="bams3", description="Cloud-native, Spark-native aligned reads (BAMS3)."
    )
    parser.add_argument("--version", action="version", version=f"bams3-spark {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("convert", help="convert a sorted BAM into a BAMS3 dataset")
    p.add_argument("input", metavar="IN.bam", help="coordinate-sorted BAM (path or URL)")
    p.add_argument("output", metavar="OUT", help="dataset prefix (directory or s3://bucket/prefix)")
    p.add_argument("--chunk-size", default="1M", help="window size, 256K..4M (default 1M = 1,048,576 bp)")
    p.add_argument("--workers", default="1", help="worker processes, or 'auto' for one per core (default 1)")
    p.add_argument(
        "--max-chunk-records",
        type=int,
        default=None,
        help="split windows above this many records (default 250000)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at OUT")
    p.add_argument("--allow-empty", action="store_true", help="accept a BAM without records")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    add_storage_flags(p)

    p = sub.add_parser("info", help="describe a dataset")
    p.add_argument("dataset")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_storage_flags(p)

    p = sub.add_parser("validate", help="verify every checksum and count of a dataset")
    p.add_argument("dataset")
    add_storage_flags(p)

    from bams3_spark import query_cli

    query_cli.add_parsers(sub, add_storage_flags)
    from bams3_spark import coverage_cli

    coverage_cli.add_parsers(sub, add_storage_flags)
    return parser


@command("convert")
def _convert(args: argparse.Namespace) -> int:
    from bams3_spark.convert import convert
    from bams3_spark.format.manifest import DEFAULT_MAX_CHUNK_RECORDS

    result = convert(
        args.input,
        args.output,
        chunk_size=args.chunk_size,
        workers=args.workers,
        overwrite=args.overwrite,
        max_chunk_records=args.max_chunk_records or DEFAULT_MAX_CHUNK_RECORDS,
        allow_empty=args.allow_empty,
        progress=not args.quiet,
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


@command("info")
def _info(args: argparse.Namespace) -> int:
    from bams3_spark.dataset import open_dataset

    ds = open_dataset(args.dataset, **storage_options(args))
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
    print(f"references  {len(ds.references):,} ({len(with_reads):,} with records)")
    width = max((len(r.name) for r in with_reads), default=4)
    for r in with_reads:
        print(
            f"  {r.name:<{width}}  {r.length:>13,} bp  {r.records:>13,} records"
            f"  {r.chunks:>6,} chunks  {r.bytes:>15,} bytes"
        )
    return 0


@command("validate")
def _validate(args: argparse.Namespace) -> int:
    from bams3_spark.dataset import open_dataset

    ds = open_dataset(args.dataset, **storage_options(args))
    problems = ds.validate()
    for p in problems:
        print(f"bams3 validate: {p}", file=sys.stderr)
    if problems:
        print(f"{ds.url}: {len(problems)} problem(s) found", file=sys.stderr)
        return 1
    m = ds.manifest
    print(f"{ds.url}: OK ({m.records:,} records, {m.chunk_count:,} chunks verified)")
    return 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split("\n")[0].split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bams3`` command; return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("BAMS3_DEBUG") == "1"
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("bams3: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Downstream closed the pipe (e.g. `| head`): not an error for us.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (Bams3Error, OSError, ValueError) as exc:
        if debug:
            traceback.print_exc()
        print(f"bams3 {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
