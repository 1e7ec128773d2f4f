"""Building a SparkSession configured for bams3-spark.

Local mode (``local[*]``) is the embedded default, so the same code runs on a
laptop; ``spark-submit --master ...`` or ``SPARK_MASTER`` pick a cluster.
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: Settings the package relies on (also in conf/spark-defaults.conf).
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # pushFilters() on Python data sources is behind this flag (pyspark 4.1+).
    "spark.sql.python.filterPushdown.enabled": "true",
    "spark.python.worker.reuse": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
}


def get_session(
    master: str | None = None, app_name: str = "bams3", conf: dict[str, Any] | None = None
) -> Any:
    """Return a SparkSession with the bams3 data source registered.

    Args:
        master: Spark master URL; default: the one set by spark-submit, else
            ``SPARK_MASTER``, else ``local[*]``.
        app_name: Application name.
        conf: Extra Spark settings.

    Returns:
        The (possibly already running) SparkSession.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    active = SparkSession.getActiveSession()
    # Python workers default to "python3" on PATH, which may lack this package
    # and pyarrow: use this interpreter unless spark-submit or the user chose.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    chosen = master or os.environ.get("SPARK_MASTER")
    if chosen:
        builder = builder.master(chosen)
    elif active is None and "spark.master" not in os.environ.get("PYSPARK_SUBMIT_ARGS", ""):
        from pyspark import SparkConf

        if not SparkConf().contains("spark.master"):
            builder = builder.master("local[*]")
    for key, value in {**DEFAULT_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    for key in ("spark.sql.python.filterPushdown.enabled", "spark.sql.execution.arrow.pyspark.enabled"):
        session.conf.set(key, "true")
    from bams3_spark.spark.datasource import register

    register(session)
    return session
