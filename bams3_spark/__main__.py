"""``python -m bams3_spark`` runs the ``bams3`` command."""

from bams3_spark.cli.main import entry

entry()
