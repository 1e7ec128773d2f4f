"""What the ``spark-submit`` entry points share: one run path, one error line.

``jobs/*.py`` parse their arguments and hand :func:`run_job` the work; a
failure anywhere (our own errors, storage errors, and Spark's, whose messages
wrap the Python error of a failed task in a JVM stack trace) becomes one line
on stderr and exit status 1, with the traceback only under ``--debug``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Callable

from bams3_spark.exceptions import Bams3Error, one_line

#: "Name: message" lines of the Python errors inside Spark's messages.
_CAUSE = re.compile(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$", re.MULTILINE)
#: Spark's own wrappers around the error that matters.
_WRAPPERS = frozenset({"AnalysisException", "Py4JJavaError", "PythonException", "SparkException"})


def spark_error_line(exc: BaseException) -> str:
    """One line for a failure: the Python error inside a Spark error, else the message's first line.

    Spark wraps a Python error raised in a task, or on the driver's planner, in
    an error holding the remote traceback; its last ``Name: message`` line that
    is not a Spark wrapper is the cause.
    """
    text = str(exc)
    for name, message in reversed(_CAUSE.findall(text)):
        if name not in _WRAPPERS:
            return " ".join(message.split())
    return one_line(exc)


class _StderrLines(logging.Handler):
    """The package's log records as ``PROG: message`` lines on the current stderr (the plan line)."""

    def __init__(self, prog: str) -> None:
        super().__init__(logging.INFO)
        self.prog = prog

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"{self.prog}: {record.getMessage()}", file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - logging must never fail the job
            self.handleError(record)


def run_job(prog: str, action: Callable[[], int], debug: bool = False) -> int:
    """Run a job's work; return its exit status, or 1 with one error line on stderr.

    Args:
        prog: The job's name, prefixed to the error line (``jobs/coverage.py``).
        action: The work; prints its own summary and returns the exit status.
        debug: Print the traceback too (also with ``BAMS3_DEBUG=1``).
    """
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    from bams3_spark.spark.compat import check_pyspark

    # The job's plan and scan-path lines (INFO of the package's logger) go to stderr
    # while it runs; the handler looks up sys.stderr at each line.
    log = logging.getLogger("bams3_spark")
    handler, level = _StderrLines(prog), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        check_pyspark()
        return action()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (Bams3Error, OSError, ValueError, PySparkException, Py4JJavaError) as exc:
        if debug or os.environ.get("BAMS3_DEBUG") == "1":
            traceback.print_exc()
        print(f"{prog}: error: {spark_error_line(exc)}", file=sys.stderr)
        return 1
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
