"""Spark integration: ``read_bams3``, the ``bams3`` data source and the distributed jobs.

``read_bams3(spark, paths, region=..., columns=...)`` (pyspark 3.5-4.3) plans
with the datasets' manifests and indexes and scans with Spark's own Parquet
reader where it can (see :mod:`bams3_spark.spark.read`). ``register(spark)``
makes ``spark.read.format("bams3")`` available on pyspark 4.0+ (the Python
Data Source API); on 3.5 it says so in one line. Importing this package
imports neither pyspark's SQL modules nor the data source.
"""

from __future__ import annotations

from typing import Any

from bams3_spark.spark.read import read_bams3
from bams3_spark.spark.schema import bams3_schema

__all__ = ["bams3_schema", "read_bams3", "register"]


def register(spark: Any) -> None:
    """Register the ``bams3`` data source on ``spark`` (pyspark 4.0+; idempotent).

    Raises:
        UnsupportedSparkError: On pyspark 3.5, naming ``read_bams3`` instead.
    """
    from bams3_spark.spark.compat import require_data_source_api

    require_data_source_api()
    from bams3_spark.spark.datasource import register as _register

    _register(spark)
