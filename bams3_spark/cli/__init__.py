"""The ``bams3`` command line (:mod:`.main`), its shared parts (:mod:`.common`) and its commands."""

from bams3_spark.cli.main import build_parser, entry, main

__all__ = ["build_parser", "entry", "main"]
