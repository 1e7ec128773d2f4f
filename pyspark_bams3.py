"""Automatic lookup of the ``bams3`` Spark data source.

pyspark (4.x) imports every top-level module named ``pyspark_*`` and registers
its ``DefaultSource``, so ``spark.read.format("bams3")`` works without a
registration call once bams3-spark is installed. This module stays light: it
only names the class (pyarrow and storage clients are imported on use).
"""

from bams3_spark.spark.datasource import Bams3DataSource as DefaultSource

__all__ = ["DefaultSource"]
