"""The one worker-pool policy: threads for I/O, processes for CPU, results in input order.

Also how many workers ``auto`` means (:func:`resolve_workers`: the cores this
process may really use, by CPU set and cgroup quota), and the type of the
progress callback engines accept (:data:`ProgressCallback`).

* **Threads** (:func:`thread_map`) for work that waits on storage: chunk and
  index reads release the GIL while they wait, and pyarrow decodes outside it.
* **Processes** (:func:`process_pool`) for work that holds the GIL: the
  per-record pysam loop of a conversion, the numpy counting of coverage. They
  are forked from this process when it runs no other Python thread (a worker
  then starts in milliseconds, with numpy and pyarrow already imported);
  otherwise a fork could inherit a lock held by another thread (an S3
  client's event loop, py4j's gateway in a Spark driver), so workers come from
  a clean ``forkserver`` (or ``spawn`` where that is missing).
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

from bams3_spark.exceptions import InvalidArgumentError

#: The progress callback engines accept (``progress=``), called in the caller's thread with
#: cumulative figures: work units done (chunks, reads), units in all (0 when unknown), and
#: bytes done (of the chunk objects whose work is done, or written). The command line draws
#: it (``bams3_spark.cli.progress``); engines know nothing of terminals.
ProgressCallback = Callable[[int, int, int], None]


#: Where cgroup v2 is mounted, and where this process's cgroup is named.
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
#: ``--parallel auto`` on object stores: requests mostly wait on the network, not on a core.
#: 16 concurrent reads hide a per-request latency of 50-100 ms and fill about 1 Gbit/s;
#: more than 32 only holds more chunks in memory (up to 2 per worker).
IO_WORKERS_MIN, IO_WORKERS_MAX, IO_WORKERS_PER_CORE = 16, 32, 4


def cgroup_cpu_limit(root: Path | None = None, proc_cgroup: Path | None = None) -> float | None:
    """Return the CPU quota of this process's cgroup v2 (in cores), or None when unlimited.

    The quota is ``cpu.max`` (``QUOTA PERIOD``, or ``max PERIOD``) of the
    process's cgroup and of every ancestor up to the mount's root; the
    tightest one applies. Inside a container with a cgroup namespace the
    process's cgroup is ``/`` and the container's limit is at the root.

    Args:
        root: The cgroup v2 mount (default ``/sys/fs/cgroup``).
        proc_cgroup: The file naming this process's cgroup (default ``/proc/self/cgroup``).
    """
    root = CGROUP_ROOT if root is None else root
    proc_cgroup = PROC_CGROUP if proc_cgroup is None else proc_cgroup
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    # cgroup v2 is the "0::<path>" line; v1-only hierarchies have none.
    rel = next((line[3:] for line in lines if line.startswith("0::")), None)
    if rel is None:
        return None
    here = root / rel.strip().lstrip("/")
    limit: float | None = None
    while True:
        try:
            quota, _, period = (here / "cpu.max").read_text().strip().partition(" ")
            if quota != "max":
                cores = int(quota) / int(period or "100000")
                limit = cores if limit is None else min(limit, cores)
        except (OSError, ValueError):
            pass  # no cpu controller at this level, or unreadable: no limit here
        if here == root or root not in here.parents:
            return limit
        here = here.parent


def usable_cores(root: Path | None = None, proc_cgroup: Path | None = None) -> int:
    """Return how many cores this process may really use (at least 1).

    The smallest of: the CPUs it may run on (``os.sched_getaffinity``, which
    ``taskset``, ``docker --cpuset-cpus`` and Slurm set), and its cgroup v2
    CPU quota rounded up (``docker --cpus``, Kubernetes CPU limits, AWS Batch
    vCPUs). ``os.cpu_count()`` counts the machine's cores and ignores both.
    Arguments as for :func:`cgroup_cpu_limit` (tests point them at fake files).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return max(1, cores)


def resolve_workers(workers: int | str | None, *, io_bound: bool = False) -> int:
    """Return a worker count from an int, ``auto`` or None (= 1).

    ``auto`` is one worker per usable core (:func:`usable_cores`) for work
    that keeps a core busy; with ``io_bound`` (reads from an object store,
    which mostly wait on the network) it is 4 per core, at least 16 and at
    most 32.

    Raises:
        InvalidArgumentError: For anything else, or a count below 1.
    """
    if workers is None:
        return 1
    if workers == "auto":
        cores = usable_cores()
        if io_bound:
            return min(IO_WORKERS_MAX, max(IO_WORKERS_MIN, IO_WORKERS_PER_CORE * cores))
        return cores
    if isinstance(workers, bool):
        raise InvalidArgumentError(f"--workers {workers!r}: expected a number or 'auto'")
    try:
        n = int(workers)
    except ValueError:
        raise InvalidArgumentError(f"--workers {workers!r}: expected a number or 'auto'") from None
    if n < 1:
        raise InvalidArgumentError(f"--workers {workers!r}: must be at least 1")
    return n


def ordered_map(
    fn: Callable[[Any], Any], items: Iterable[Any], executor: Executor, workers: int
) -> Iterator[Any]:
    """Yield ``fn(item)`` for each item, in order, computed on ``executor``.

    At most ``2 * workers`` calls are in flight, so results waiting behind a
    slow earlier item stay bounded in memory; an exception is raised at its
    item's turn, and pending work is cancelled (and the executor shut down)
    when the consumer stops.
    """
    it = iter(items)
    pending: deque[Future[Any]] = deque()
    try:
        for item in it:
            pending.append(executor.submit(fn, item))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.popleft().result()
            for item in it:  # refill one slot
                pending.append(executor.submit(fn, item))
                break
            yield result
    finally:
        for fut in pending:
            fut.cancel()
        executor.shutdown(wait=True, cancel_futures=True)


def thread_map(
    fn: Callable[[Any], Any], items: Iterable[Any], workers: int, name: str = "bams3-io"
) -> Iterator[Any]:
    """Yield ``fn(item)`` for each item, in order, with up to ``workers`` threads (I/O-bound work).

    With one worker, items are processed in this thread, one at a time.
    """
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    yield from ordered_map(fn, items, cf.ThreadPoolExecutor(workers, thread_name_prefix=name), workers)


def keep_freed_memory() -> None:
    """Ask glibc to reuse freed memory instead of returning it to the system.

    Counting coverage and decoding BAM records allocate and free arrays of a
    few to tens of MB per chunk; with glibc's default, each is a fresh
    ``mmap`` whose pages fault in again, which cost a fifth (coverage) to a
    third (conversion) of the CPU time. For worker processes (a pool
    initializer): the setting is process-wide. No-op where glibc is missing.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_trim_threshold, 1 << 30)
    mallopt(m_mmap_threshold, 64 << 20)


def process_pool(
    workers: int, initializer: Callable[[], None] | None = None
) -> cf.ProcessPoolExecutor:
    """A pool of ``workers`` processes for CPU-bound work (start method: see the module notes)."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        method = "fork"
    elif "forkserver" in methods:
        method = "forkserver"
    else:
        method = "spawn"
    return cf.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context(method), initializer=initializer
    )


def process_map(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int,
    initializer: Callable[[], None] | None = None,
) -> Iterator[Any]:
    """Yield ``fn(item)`` for each item, in order, with up to ``workers`` processes (CPU-bound work).

    ``fn`` and the items must pickle. With one worker, items are processed in
    this process, one at a time.
    """
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    yield from ordered_map(fn, items, process_pool(workers, initializer), workers)


def caller_shared_map(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int,
    weights: Iterable[float],
    initializer: Callable[[], None] | None = None,
) -> Iterator[Any]:
    """Like :func:`process_map`, but the calling process computes its share: ``workers - 1`` processes.

    The items are dealt by weight, heaviest first, to the least loaded of the
    caller and the pool's processes (so the caller takes, e.g., the longest
    reference); the caller computes its items while the pool computes the
    others, then the results are yielded in input order. One process fewer
    than :func:`process_map` for the same parallelism: a whole interpreter's
    memory less. The caller's results wait for their turn, and every item is
    submitted at once: for small results only. ``initializer`` runs in the
    pool's processes only.
    """
    todo = list(items)
    weight = list(weights)
    if workers <= 1 or len(todo) <= 1:
        for item in todo:
            yield fn(item)
        return
    loads = [0.0] * workers
    mine: set[int] = set()
    for i in sorted(range(len(todo)), key=lambda k: -weight[k]):
        who = loads.index(min(loads))
        loads[who] += weight[i]
        if who == 0:
            mine.add(i)
    pool = process_pool(min(workers - 1, len(todo) - len(mine)) or 1, initializer)
    futures: dict[int, Future[Any]] = {}
    try:
        futures = {i: pool.submit(fn, item) for i, item in enumerate(todo) if i not in mine}
        done = {i: fn(todo[i]) for i in sorted(mine)}
        for i in range(len(todo)):
            yield done.pop(i) if i in done else futures.pop(i).result()
    finally:
        for fut in futures.values():
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
