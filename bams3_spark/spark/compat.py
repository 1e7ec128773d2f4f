"""Which pyspark is installed, and which of its APIs this package may use.

bams3-spark supports pyspark 3.5 (EMR 7.x, Dataproc 2.2/2.3) through 4.3. Some
APIs exist only in newer releases (see docs/sections/deploy.md):

============================================  =====  =====  =====
API                                            3.5    4.0    4.1+
============================================  =====  =====  =====
``pyspark.sql.datasource`` (Python sources)    no     yes    yes
``DataSourceReader.pushFilters``, filters      no     no     yes
``GroupedData.applyInArrow``                   no     yes    yes
``DataFrame.mapInArrow``, ``applyInPandas``    yes    yes    yes
Spark's vectorized Parquet reader on
``DELTA_LENGTH_BYTE_ARRAY`` (FORMAT 1.0)       no     yes    yes
============================================  =====  =====  =====

Code that needs one of the newer APIs asks here first and imports it on use,
so nothing imported when a job starts touches an API a supported version lacks.
Nothing here imports pyspark's SQL modules; only ``pyspark.__version__`` is read.
"""

from __future__ import annotations

import re

from bams3_spark.exceptions import UnsupportedSparkError

#: Supported pyspark releases: from MIN_VERSION up to, not including, MAX_VERSION.
MIN_VERSION = (3, 5)
MAX_VERSION = (4, 4)
SUPPORTED = ">=3.5,<4.4"


def installed_version() -> str:
    """The installed pyspark's version string (``"3.5.6"``)."""
    import pyspark

    return str(pyspark.__version__)


def _parse(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise UnsupportedSparkError(f"pyspark {version!r}: not a version number; bams3-spark needs pyspark"
                                    f" {SUPPORTED}")
    return int(match.group(1)), int(match.group(2))


def spark_version(version: str | None = None) -> tuple[int, int]:
    """(major, minor) of ``version``, default the installed pyspark."""
    return _parse(installed_version() if version is None else version)


def check_pyspark(version: str | None = None) -> tuple[int, int]:
    """Refuse a pyspark outside the supported range, in one line naming both versions.

    Args:
        version: The version to check; default the installed pyspark.

    Returns:
        (major, minor) of the checked version.

    Raises:
        UnsupportedSparkError: For a version outside ``>=3.5,<4.4``.
    """
    text = installed_version() if version is None else version
    parsed = _parse(text)
    if not MIN_VERSION <= parsed < MAX_VERSION:
        raise UnsupportedSparkError(
            f"pyspark {text} is not supported: bams3-spark needs pyspark {SUPPORTED} (Spark 3.5 to 4.3)"
        )
    return parsed


def has_data_source_api(version: str | None = None) -> bool:
    """Whether ``pyspark.sql.datasource`` (``spark.read.format("bams3")``) exists (pyspark >= 4.0)."""
    return spark_version(version) >= (4, 0)


def has_filter_pushdown(version: str | None = None) -> bool:
    """Whether Python data sources can push filters (``pushFilters``, filter classes; pyspark >= 4.1)."""
    return spark_version(version) >= (4, 1)


def has_apply_in_arrow(version: str | None = None) -> bool:
    """Whether ``GroupedData.applyInArrow`` exists (pyspark >= 4.0)."""
    return spark_version(version) >= (4, 0)


def vectorized_reads_format_1_0(version: str | None = None) -> bool:
    """Whether Spark's vectorized Parquet reader decodes FORMAT 1.0 chunks (Spark >= 4.0).

    Spark 3.5's vectorized reader fails on the ``DELTA_LENGTH_BYTE_ARRAY``
    string columns of FORMAT 1.0 chunks (``ParquetDecodingException``); its
    row-based reader and Spark 4 read them. FORMAT 1.1 chunks avoid that encoding.
    """
    return spark_version(version) >= (4, 0)


def require_data_source_api(version: str | None = None) -> None:
    """Refuse, in one line, to register ``format("bams3")`` on a pyspark without Python data sources.

    Raises:
        UnsupportedSparkError: On pyspark < 4.0.
    """
    text = installed_version() if version is None else version
    if not has_data_source_api(text):
        raise UnsupportedSparkError(
            f"format('bams3') needs Spark 4.0+ (pyspark {text} has no Python data sources); "
            "use bams3_spark.read_bams3(spark, ...)"
        )
