"""bams3-spark: aligned reads as cloud-native, Spark-native BAMS3 datasets.

See README.md for the user guide and FORMAT.md for the on-disk format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from bams3_spark.api import Dataset, open_dataset
    from bams3_spark.spark.read import read_bams3

__all__ = ["Dataset", "__version__", "open_dataset", "read_bams3", "register"]


def __getattr__(name: str) -> Any:
    # Imported on first use (PEP 562): pyarrow and fsspec take ~0.5 s to
    # import, which every `bams3` command would otherwise pay at startup.
    if name in ("open_dataset", "Dataset"):
        from bams3_spark import api

        return getattr(api, name)
    if name == "read_bams3":
        # pyspark is imported only when a Spark reader is asked for.
        from bams3_spark.spark.read import read_bams3

        return read_bams3
    raise AttributeError(f"module 'bams3_spark' has no attribute {name!r}")


def register(spark: object) -> None:
    """Register the ``bams3`` Spark data source on ``spark`` (pyspark 4.0+; see ``bams3_spark.spark``)."""
    from bams3_spark.spark import register as _register

    _register(spark)
