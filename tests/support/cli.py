"""Running the ``bams3`` command as users do: a separate process, its exit status and its output."""

from __future__ import annotations

import os
import subprocess
import sys


def run_bams3(
    args: list[str], env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bams3_spark ARGS`` (the ``bams3`` command) and return the finished process.

    ``stdin`` is fed to the command (default: nothing, as from /dev/null); stdout and stderr come
    back as text.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "bams3_spark", *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )
