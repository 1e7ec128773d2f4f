"""The ``bams3`` command line: one parser, one sub-command module per command group.

Every failure is one line on stderr naming the input and the problem, with a
non-zero exit status (1 for errors, 2 for usage, 130 when interrupted); a
traceback is printed only with ``--debug`` (see :mod:`bams3_spark.cli.common`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bams3_spark import __version__
from bams3_spark.cli import coverage, datasets, genotype, query
from bams3_spark.cli.common import CommandParser, debug_wanted, run_command


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for every sub-command."""
    parser = CommandParser(prog="bams3", description="Cloud-native, Spark-native aligned reads (BAMS3).")
    parser.add_argument("--version", action="version", version=f"bams3-spark {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    sub.required = True
    datasets.add_parsers(sub)
    query.add_parsers(sub)
    coverage.add_parsers(sub)
    genotype.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bams3`` command; return its exit status."""
    args = build_parser().parse_args(argv)
    return run_command(f"bams3 {args.command}", lambda: int(args.handler(args)), debug_wanted(args))


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
