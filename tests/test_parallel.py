"""The one worker-pool policy (bams3_spark.parallel): order, bounds, errors, start methods."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest

from bams3_spark.exceptions import InvalidArgumentError
from bams3_spark.parallel import caller_shared_map, process_map, process_pool, resolve_workers, thread_map


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
