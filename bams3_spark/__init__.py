"""bams3-spark: aligned reads as cloud-native, Spark-native BAMS3 datasets.

See README.md for the user guide and FORMAT.md for the on-disk format.
"""

from __future__ import annotations

__version__ = "0.1.0"

from bams3_spark.dataset import open_dataset  # noqa: E402 - after __version__, which modules import

__all__ = ["__version__", "open_dataset"]
