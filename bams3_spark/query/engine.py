"""Running a planned region query: reading chunks in threads, filtering records, in order.

Records of each chunk are matched against the selection's intervals with
htslib's overlap rule (:func:`bams3_spark.format.regions.overlap_mask`) and
the optional filter; chunks are read with only the needed columns through
:meth:`bams3_spark.dataset.chunks.ChunkRef.read`, by a thread pool, results
in output order. A count answers chunks lying entirely inside a region from
the index alone.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from bams3_spark.arrays import bool_array
from bams3_spark.dataset.chunks import ChunkRef
from bams3_spark.exceptions import InvalidArgumentError
from bams3_spark.format.regions import overlap_mask
from bams3_spark.format.schema import project, subschema
from bams3_spark.io.storage import Storage
from bams3_spark.parallel import ProgressCallback, thread_map
from bams3_spark.query.arrays import int_values
from bams3_spark.query.filter import RecordFilter, compile_filter
from bams3_spark.query.plan import DEFAULT_WORKERS, ChunkTask, QueryPlan


def check_workers(workers: int) -> int:
    """Return ``workers`` if it is a positive integer.

    Raises:
        InvalidArgumentError: Otherwise.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidArgumentError(f"workers/--parallel must be a positive integer, got {workers!r}")
    return workers


@dataclass
class Query:
    """A planned query with its columns and filter; run with :meth:`tables` or :meth:`count`.

    Args:
        plan: The plan (see :func:`plan_query`).
        columns: Columns of the result (None: every record column).
        filter: A filter expression or compiled :class:`RecordFilter`.
        storage: Storage for chunk reads (default: the dataset's).
    """

    plan: QueryPlan
    columns: Sequence[str] | None = None
    filter: str | RecordFilter | None = None
    storage: Storage | None = None

    def __post_init__(self) -> None:
        try:
            self.out_columns = project(list(self.columns) if self.columns is not None else None)
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        self.record_filter: RecordFilter | None = (
            compile_filter(self.filter) if isinstance(self.filter, str) else self.filter
        )

    def read_columns(self, count: bool = False) -> list[str]:
        """Return the columns read from each chunk (output, overlap test, filter)."""
        wanted = set() if count else set(self.out_columns)
        if any(not s.whole for s in self.plan.selections):
            wanted |= {"pos", "end"}
        if self.record_filter is not None:
            wanted |= set(self.record_filter.columns)
        if not wanted:
            wanted = {"pos"}
        return project(list(wanted))

    def _overlap(self, table: pa.Table, task: ChunkTask) -> npt.NDArray[np.bool_]:
        where = task.chunk.url
        pos, end = int_values(table.column("pos"), where), int_values(table.column("end"), where)
        return overlap_mask(pos, end, self.plan.selections[task.selection].intervals)

    def _matching(self, task: ChunkTask, cols: list[str], cache: _ChunkCache) -> pa.Table:
        table = cache.read(task.chunk, cols)
        mask = None
        if not task.whole:
            mask = bool_array(self._overlap(table, task))
        if self.record_filter is not None:
            import pyarrow.compute as pc

            fmask = self.record_filter.mask(table)
            mask = fmask if mask is None else pc.and_(mask, fmask)
        return table if mask is None else table.filter(mask)

    def tables(
        self, workers: int = DEFAULT_WORKERS, progress: ProgressCallback | None = None
    ) -> Iterator[pa.Table]:
        """Yield the matching records chunk by chunk, in output order.

        Args:
            workers: Concurrent chunk reads.
            progress: Called after each chunk task with (tasks done, tasks,
                bytes of their chunk objects).

        Yields:
            Tables with the requested columns (some may be empty).
        """
        workers = check_workers(workers)
        cols = self.read_columns()
        out = self.out_columns
        tasks = self.plan.tasks
        cache = _ChunkCache(tasks, self.storage, 2 * workers)

        def run(task: ChunkTask) -> pa.Table:
            return self._matching(task, cols, cache).select(out)

        nbytes = 0
        for i, table in enumerate(thread_map(run, tasks, workers, "bams3-query")):
            if progress is not None:
                nbytes += tasks[i].chunk.info.bytes
                progress(i + 1, len(tasks), nbytes)
            yield table

    def table(self, workers: int = DEFAULT_WORKERS, progress: ProgressCallback | None = None) -> pa.Table:
        """Return every matching record as one table, in output order (``progress`` as for :meth:`tables`)."""
        parts = [t for t in self.tables(workers, progress) if t.num_rows]
        if not parts:
            return subschema(self.out_columns).empty_table()
        return pa.concat_tables(parts)

    def count(self, workers: int = DEFAULT_WORKERS, progress: ProgressCallback | None = None) -> int:
        """Count the matching records (``samtools view -c``), reading as little as possible.

        Chunks wholly inside a region count from the index. The others are
        grouped by chunk object, since a count needs no order: each object is
        read once, for ``pos`` and ``end`` (plus the filter's columns), however
        many regions it serves and whatever the number of workers.

        Args:
            workers: Concurrent chunk reads.
            progress: Called as groups finish with (tasks done, tasks, bytes
                of their chunk objects); tasks answered by the index count as
                done at once.
        """
        workers = check_workers(workers)
        total = 0
        from_index = nbytes = 0
        groups: dict[str, list[ChunkTask]] = {}
        for task in self.plan.tasks:
            if task.whole and self.record_filter is None:
                total += task.chunk.info.records
                from_index += 1
            else:
                groups.setdefault(task.chunk.info.path, []).append(task)
        cols = self.read_columns(count=True)

        def count_group(tasks: list[ChunkTask]) -> tuple[int, int]:
            table = tasks[0].chunk.read(cols, self.storage)
            return sum(self._count_in(table, task) for task in tasks), len(tasks)

        done = from_index
        results = thread_map(count_group, groups.values(), workers, "bams3-query")
        for (n, n_tasks), group in zip(results, groups.values(), strict=True):
            total += n
            if progress is not None:
                done += n_tasks
                nbytes += group[0].chunk.info.bytes
                progress(done, len(self.plan.tasks), nbytes)
        return total

    def _count_in(self, table: pa.Table, task: ChunkTask) -> int:
        mask = None if task.whole else self._overlap(table, task)
        if self.record_filter is None:
            return int(table.num_rows if mask is None else np.count_nonzero(mask))
        import pyarrow.compute as pc

        fmask = self.record_filter.mask(table)
        both = fmask if mask is None else pc.and_(bool_array(mask), fmask)
        return int(pc.sum(both, min_count=0).as_py())


class _ChunkCache:
    """Reads each chunk once for the tasks of a query that share it.

    Several regions often fall in one chunk (exons of a gene, overlapping
    windows). A chunk used by more than one task is kept until its last use,
    with at most ``capacity`` chunks held (the oldest is dropped and read
    again if needed); concurrent tasks wait for the read already under way.
    """

    def __init__(self, tasks: Sequence[ChunkTask], storage: Storage | None, capacity: int) -> None:
        self._storage = storage
        self._capacity = max(1, capacity)
        self._uses = Counter(t.chunk.info.path for t in tasks)
        self._held: OrderedDict[str, Future[pa.Table]] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, chunk: ChunkRef, columns: list[str]) -> pa.Table:
        path = chunk.info.path
        with self._lock:
            self._uses[path] -= 1
            shared = self._held.get(path)
            if shared is None and self._uses[path] > 0:
                shared = self._held[path] = Future()
                owner = True
            else:
                owner = False
            if shared is not None:
                self._held.move_to_end(path)
                if self._uses[path] <= 0:
                    del self._held[path]  # last use: nothing keeps it any more
                while len(self._held) > self._capacity:
                    self._held.popitem(last=False)
        if shared is None:
            return chunk.read(columns, self._storage)
        if owner:
            try:
                shared.set_result(chunk.read(columns, self._storage))
            except BaseException as exc:
                shared.set_exception(exc)
        return shared.result()
