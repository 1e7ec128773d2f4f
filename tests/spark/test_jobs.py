"""The jobs' shared error line: the Python error inside Spark's wrapped messages."""

from __future__ import annotations

from bams3_spark.spark.jobs import spark_error_line


def test_spark_error_line_finds_the_python_cause() -> None:
    wrapped = Exception(
        "An error occurred while calling o41.collect.\n"
        ": org.apache.spark.SparkException: Job aborted due to stage failure: Task 2 in stage 0.0 failed\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in run\n'
        "RuntimeError: injected failure in task 2\n"
        "\tat org.apache.spark.api.python.BasePythonRunner...\n"
    )
    assert spark_error_line(wrapped) == "injected failure in task 2"
    planner = Exception(
        "[PYTHON_DATA_SOURCE_ERROR] Failed to create Python data source instance.\n"
        "pyspark.errors.exceptions.base.PySparkException: wrapper\n"
        "bams3_spark.exceptions.RegionError: region 'chrX': unknown reference 'chrX'\n"
    )
    assert spark_error_line(planner) == "region 'chrX': unknown reference 'chrX'"
    assert spark_error_line(OSError("s3://b/x: not found\nmore")) == "s3://b/x: not found"
    assert spark_error_line(ValueError()) == "ValueError"
