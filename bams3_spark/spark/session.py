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
}
#: Only when this module picks local mode itself: keep the embedded driver on
#: loopback (a laptop's hostname may not resolve). A driver submitted to a
#: cluster must advertise an address its executors can reach, so never there.
LOCAL_CONF: dict[str, str] = {
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
}


def get_session(
    master: str | None = None, app_name: str = "bams3", conf: dict[str, Any] | None = None
) -> Any:
    """Return a SparkSession, with the bams3 data source registered where pyspark has the API (4.0+).

    Args:
        master: Spark master URL; default: the one set by spark-submit, else
            ``SPARK_MASTER``, else ``local[*]``.
        app_name: Application name.
        conf: Extra Spark settings.

    Returns:
        The (possibly already running) SparkSession.

    Raises:
        UnsupportedSparkError: For a pyspark outside 3.5-4.3.
    """
    from pyspark.sql import SparkSession

    from bams3_spark.spark.compat import check_pyspark, has_data_source_api, has_filter_pushdown

    check_pyspark()
    builder = SparkSession.builder.appName(app_name)
    active = SparkSession.getActiveSession()
    # Python workers default to "python3" on PATH, which may lack this package
    # and pyarrow: use this interpreter unless spark-submit or the user chose.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    chosen = master or os.environ.get("SPARK_MASTER")
    settings = dict(DEFAULT_CONF)
    if chosen:
        builder = builder.master(chosen)
        if chosen.startswith("local"):
            settings.update(LOCAL_CONF)
    elif (
        active is None
        and "spark.master" not in os.environ.get("PYSPARK_SUBMIT_ARGS", "")
        # Under spark-submit the JVM (and its --master) already exists, but
        # SparkConf() cannot see it before a SparkContext: never override it.
        and "PYSPARK_GATEWAY_PORT" not in os.environ
    ):
        from pyspark import SparkConf

        if not SparkConf().contains("spark.master"):
            builder = builder.master("local[*]")
            settings.update(LOCAL_CONF)
    for key, value in {**settings, **(conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    if has_filter_pushdown():
        session.conf.set("spark.sql.python.filterPushdown.enabled", "true")
    if has_data_source_api():
        # format("bams3") needs pyspark 4.0+; read_bams3 works everywhere.
        from bams3_spark.spark.datasource import register

        register(session)
    return session
