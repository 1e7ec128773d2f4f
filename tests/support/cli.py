"""Running the ``bams3`` command as users do: a separate process, its exit status and its output."""

from __future__ import annotations

import os
import subprocess
import sys


def run_bams3(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bams3_spark ARGS`` (the ``bams3`` command) and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "bams3_spark", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
