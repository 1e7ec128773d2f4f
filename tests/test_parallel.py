"""The one worker-pool policy (bams3_spark.parallel): order, bounds, errors, start methods."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bams3_spark import parallel
from bams3_spark.exceptions import InvalidArgumentError
from bams3_spark.parallel import (
    caller_shared_map,
    cgroup_cpu_limit,
    process_map,
    process_pool,
    resolve_workers,
    thread_map,
    usable_cores,
)


def _square(x: int) -> int:
    return x * x


def _pid(_: int) -> int:
    return os.getpid()


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def test_resolve_workers() -> None:
    assert resolve_workers(None) == 1 and resolve_workers("3") == 3 and resolve_workers(2) == 2
    assert resolve_workers("auto") >= 1
    for bad in ("0", "-1", "many"):
        with pytest.raises(InvalidArgumentError, match="--workers"):
            resolve_workers(bad)


def _fake_cgroup(tmp_path: Path, limits: dict[str, str], own: str = "/") -> tuple[Path, Path]:
    """A cgroup v2 tree under tmp_path with ``cpu.max`` files at the given levels, and a
    /proc/self/cgroup naming ``own`` (and v1 lines, as hybrid hierarchies have)."""
    root = tmp_path / "cgroup"
    (root / own.strip("/")).mkdir(parents=True, exist_ok=True)
    for rel, text in limits.items():
        d = root / rel.strip("/")
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(text + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"4:memory:/x\n1:cpu:/\n0::{own}\n")
    return root, proc


def test_cgroup_cpu_max(tmp_path: Path) -> None:
    # A container's own limit at the root of its namespace (docker --cpus 1.5).
    root, proc = _fake_cgroup(tmp_path / "a", {"/": "150000 100000"})
    assert cgroup_cpu_limit(root, proc) == 1.5
    assert usable_cores(root, proc) == min(2, len(os.sched_getaffinity(0)))
    # No limit, and no cpu.max at all (controller not enabled).
    root, proc = _fake_cgroup(tmp_path / "b", {"/": "max 100000"})
    assert cgroup_cpu_limit(root, proc) is None
    assert usable_cores(root, proc) == len(os.sched_getaffinity(0))
    root, proc = _fake_cgroup(tmp_path / "c", {})
    assert cgroup_cpu_limit(root, proc) is None
    # A nested cgroup: the tightest quota on the way up applies.
    root, proc = _fake_cgroup(
        tmp_path / "d", {"/batch": "50000 100000", "/batch/job7": "max 100000"}, own="/batch/job7"
    )
    assert cgroup_cpu_limit(root, proc) == 0.5 and usable_cores(root, proc) == 1
    # cgroup v1 only (no "0::" line): no v2 limit to read.
    proc.write_text("4:memory:/x\n1:cpu:/\n")
    assert cgroup_cpu_limit(root, proc) is None
    assert cgroup_cpu_limit(root, tmp_path / "missing") is None


def test_resolve_workers_auto_follows_the_cgroup_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, proc = _fake_cgroup(tmp_path, {"/": "100000 100000"})
    monkeypatch.setattr(parallel, "CGROUP_ROOT", root)
    monkeypatch.setattr(parallel, "PROC_CGROUP", proc)
    assert resolve_workers("auto") == 1
    # I/O-bound work (object stores): several requests per core, within bounds.
    assert resolve_workers("auto", io_bound=True) == parallel.IO_WORKERS_MIN
    assert resolve_workers(3, io_bound=True) == 3


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) missing")
def test_resolve_workers_auto_follows_the_cpu_set() -> None:
    code = "from bams3_spark.parallel import resolve_workers; print(resolve_workers('auto'))"
    proc = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


def test_thread_map_keeps_order_and_raises_at_the_items_turn() -> None:
    def slow_first(x: int) -> int:
        time.sleep(0.05 if x == 0 else 0)
        return x

    assert list(thread_map(slow_first, range(20), 4)) == list(range(20))
    got = []
    with pytest.raises(ValueError, match="three"):
        for x in thread_map(_fail_on_three, range(6), 3):
            got.append(x)
    assert got == [0, 1, 2]


def test_process_map_runs_in_other_processes_in_order() -> None:
    assert list(process_map(_square, range(10), 2)) == [x * x for x in range(10)]
    assert os.getpid() not in set(process_map(_pid, range(4), 2))
    assert set(process_map(_pid, range(3), 1)) == {os.getpid()}  # one worker: here


def test_start_method_follows_the_threads_of_this_process() -> None:
    stop = threading.Event()
    methods = multiprocessing.get_all_start_methods()
    with process_pool(1) as pool:
        lone = pool._mp_context.get_start_method()  # type: ignore[attr-defined]
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        with process_pool(1) as pool:
            busy = pool._mp_context.get_start_method()  # type: ignore[attr-defined]
    finally:
        stop.set()
        helper.join()
    if threading.active_count() == 1 and "fork" in methods:
        assert lone == "fork"
    assert busy == ("forkserver" if "forkserver" in methods else "spawn")


def _pid_of(x: int) -> tuple[int, int]:
    return x, os.getpid()


def test_caller_shared_map_in_order_with_the_caller_taking_the_heaviest() -> None:
    items = list(range(7))
    weights = [1, 1, 50, 1, 1, 1, 1]
    out = list(caller_shared_map(_pid_of, items, 2, weights))
    assert [x for x, _ in out] == items
    pids = dict(out)
    # The heaviest item is the caller's; the light ones went to the one pool process.
    assert pids[2] == os.getpid()
    assert {pids[x] for x in items if x != 2} != {os.getpid()}
    assert len(set(pids.values())) == 2
    assert [x for x, _ in caller_shared_map(_pid_of, items, 1, weights)] == items


def test_caller_shared_map_raises_the_first_failure() -> None:
    with pytest.raises(ValueError, match="three"):
        list(caller_shared_map(_fail_on_three, range(6), 2, [1] * 6))
