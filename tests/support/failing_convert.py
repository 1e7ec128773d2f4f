"""``jobs/convert.py`` whose Spark task number N fails after writing its chunks, for spark-submit tests.

Usage: ``spark-submit failing_convert.py N ARGS...`` (ARGS as for ``jobs/convert.py``). The
failure is injected here, in test code: the package has no failure hook.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from bams3_spark.spark import convert_job


def main() -> int:
    number = int(sys.argv[1])
    run_task = convert_job.run_slice_task

    def run_or_fail(task: Any) -> Any:
        # Defined in __main__, so Spark pickles it by value to the executors.
        result = run_task(task)
        if task.number == number:
            raise RuntimeError(f"injected failure in task {number}")
        return result

    convert_job.run_slice_task = run_or_fail  # type: ignore[assignment]
    job = Path(__file__).resolve().parents[2] / "jobs" / "convert.py"
    spec = importlib.util.spec_from_file_location("bams3_jobs_convert", job)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.main(sys.argv[2:]))


if __name__ == "__main__":
    sys.exit(main())
