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


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/*/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _pss_kb(pid: int) -> int:
    """Proportional set size of a process (shared pages split between their users), in KB."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measured(cmd: Sequence[str], interval: float = 0.02, **kwargs: object) -> tuple[float, float, float]:
    """Run a command once; return (wall seconds, CPU seconds, peak memory in MB).

    CPU is user + system time of the command and every process it waited for.
    Peak memory is the highest sum of the proportional set sizes (PSS) of the
    command and its descendants, sampled every ``interval`` seconds: worker
    processes forked from one parent share pages, which PSS counts once (RSS
    would count them in every worker).
    """
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sum(_pss_kb(p) for p in _tree(proc.pid)))
        time.sleep(interval)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, peak / 1024
