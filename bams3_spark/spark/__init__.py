"""Spark integration: the ``bams3`` data source and the distributed jobs.

``register(spark)`` makes ``spark.read.format("bams3")`` available;
``read_bams3(spark, paths, columns=..., region=...)`` loads datasets with
validation up front and an optional column projection.
"""

from __future__ import annotations

from bams3_spark.spark.datasource import Bams3DataSource, bams3_schema, read_bams3, register

__all__ = ["Bams3DataSource", "bams3_schema", "read_bams3", "register"]
