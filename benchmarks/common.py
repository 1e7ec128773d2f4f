"""Helpers shared by the benchmark scripts: timing commands and printing tables."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(cmd: Sequence[str], repeat: int = 1, **kwargs: object) -> float:
    """Run a command ``repeat`` times; return the best wall time in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(list(cmd), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]
        best = min(best, time.perf_counter() - t0)
    return best


def bams3_cmd(*args: str) -> list[str]:
    """The ``bams3`` command of this environment."""
    exe = BIN / "bams3"
    return [str(exe) if exe.exists() else shutil.which("bams3") or "bams3", *args]


def dir_bytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """Render a Markdown table with a title line."""
    out = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"
