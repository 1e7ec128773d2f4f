"""``bams3 convert``: BAM -> BAMS3 dataset on one machine, in parallel.

Plan (FORMAT.md, "Writing a dataset"):

1. Read the header and, when the BAM is indexed, the index statistics.
2. Indexed input: cut every reference into windows and convert groups of
   windows in worker processes, each reading only its part of the BAM through
   the index. Unindexed but sorted input: one sequential scan cuts windows and
   hands them to worker processes for encoding and upload.
3. Each worker writes its chunk objects and returns their index entries.
4. The driver writes one index object per reference, the header, and last the
   manifest, which commits the dataset. Until then readers see "incomplete".
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from bams3_spark.bam.reader import BamInfo, inspect_bam, local_bam
from bams3_spark.bam.scan import BamScanner, RawRecords, decode_window
from bams3_spark.dataset.writer import commit_dataset, prepare_output, write_window
from bams3_spark.exceptions import InputFormatError, InvalidArgumentError, UnsortedInputError
from bams3_spark.format.layout import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CHUNK_RECORDS,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    UNPLACED_KEY,
    UNPLACED_NAME,
    UNPLACED_WINDOW,
    reference_key,
)
from bams3_spark.format.manifest import ChunkInfo, Manifest
from bams3_spark.io.storage import Storage, shared_storage
from bams3_spark.parallel import ProgressCallback, keep_freed_memory, process_pool, resolve_workers

_T = TypeVar("_T")

#: Aim for this many tasks per worker so that uneven windows still balance.
TASKS_PER_WORKER = 4


def parse_size(text: str | int) -> int:
    """Parse a window size such as ``1M``, ``256K`` or ``2097152`` into base pairs.

    Raises:
        InvalidArgumentError: If it is not a size within 256K..4M.
    """
    if isinstance(text, int):
        value = text
    else:
        raw = text.strip().upper().removesuffix("B").removesuffix("BP")
        mult = 1
        if raw[-1:] in ("K", "M"):
            mult = 1 << (10 if raw[-1] == "K" else 20)
            raw = raw[:-1]
        try:
            value = int(float(raw) * mult)
        except ValueError:
            raise InvalidArgumentError(f"--chunk-size {text!r}: not a size (e.g. 1M, 256K)") from None
    if not MIN_CHUNK_SIZE <= value <= MAX_CHUNK_SIZE:
        raise InvalidArgumentError(f"--chunk-size {text!r}: must be between 256K and 4M (bp), got {value}")
    return value


@dataclass(frozen=True)
class WindowTask:
    """Windows [first, last) of one reference (0-based starts, step chunk_size)."""

    tid: int
    rname: str
    key: str
    starts: tuple[int, ...]
    chunk_size: int
    length: int


@dataclass
class ConvertResult:
    """What a conversion produced."""

    url: str
    manifest: Manifest
    seconds: float


def run_window_task(
    bam_path: str, storage: Storage, task: WindowTask, max_records: int
) -> tuple[str, list[ChunkInfo]]:
    """Convert the windows of one task from a local indexed BAM; return (key, chunk infos).

    Also the unit of work of the Spark job (``bams3_spark.spark.convert_job``).
    """
    infos: list[ChunkInfo] = []
    # Streaming compression: a window's Parquet/zstd encoding, checksum and
    # upload (outside the GIL, in pyarrow, hashlib and I/O) run in a thread
    # while this one inflates and decodes the next window.
    with BamScanner(bam_path) as scan, cf.ThreadPoolExecutor(1, thread_name_prefix="bams3-encode") as encoder:
        tid = -1 if task.rname == UNPLACED_NAME else task.tid
        pending: cf.Future[list[ChunkInfo]] | None = None
        for raw in scan.windows(tid, task.starts, task.chunk_size, task.length):
            start = raw.window_start
            window = UNPLACED_WINDOW if raw.tid < 0 else (start, min(start + task.chunk_size, task.length))
            table = decode_window(raw, scan.names, scan.header)
            if pending is not None:
                infos.extend(pending.result())  # at most one window waits: memory stays bounded
            pending = encoder.submit(write_window, storage, table, task.rname, task.key, window, max_records)
        if pending is not None:
            infos.extend(pending.result())
    return task.key, infos


def _write_raw(
    storage: Storage, raw: RawRecords, names: list[str], header: bytes, rname: str, key: str,
    chunk_size: int, length: int, max_records: int, first_part: int = 0,
) -> list[ChunkInfo]:
    """Decode one window's raw records and write its chunk objects."""
    start = raw.window_start
    window = UNPLACED_WINDOW if raw.tid < 0 else (start, min(start + chunk_size, length))
    table = decode_window(raw, names, header)
    return write_window(storage, table, rname, key, window, max_records, first_part=first_part)


def plan_tasks(info: BamInfo, chunk_size: int, workers: int) -> list[WindowTask]:
    """Cut references into windows and group them into balanced tasks.

    The index statistics only weight the tasks: every reference and the
    unplaced reads are planned, since a BAI without statistics reports 0 reads.
    """
    windows: list[tuple[int, str, str, int, int, float]] = []
    for tid, (name, length) in enumerate(info.references):
        # A reference the index statistics call empty is still planned: a BAI
        # without statistics pseudo-bins reports 0 everywhere, and skipping
        # would lose its reads silently. An empty window costs one index lookup.
        reads = max(info.mapped_per_ref[tid], 1) if info.mapped_per_ref else 1
        n_windows = max(1, -(-length // chunk_size))
        per_window = reads / n_windows
        for w in range(n_windows):
            windows.append((tid, name, reference_key(tid, name), length, w * chunk_size, per_window))
    total = sum(w[5] for w in windows) or 1.0
    target = total / max(1, workers * TASKS_PER_WORKER)
    tasks: list[WindowTask] = []
    group: list[int] = []
    load = 0.0
    for i, (tid, name, key, length, start, weight) in enumerate(windows):
        group.append(start)
        load += weight
        nxt = windows[i + 1] if i + 1 < len(windows) else None
        if nxt is None or nxt[0] != tid or load >= target:
            tasks.append(WindowTask(tid, name, key, tuple(group), chunk_size, length))
            group, load = [], 0.0
    # Always planned, for the same reason: the index's count may be missing.
    tasks.append(WindowTask(-1, UNPLACED_NAME, UNPLACED_KEY, (0,), chunk_size, 0))
    return tasks


class _Tally:
    """Reads, chunks and bytes written so far, reported to the caller's progress callback."""

    def __init__(self, callback: ProgressCallback | None, total_reads: int) -> None:
        self.callback = callback
        self.total = total_reads
        self.reads = self.bytes = 0

    def update(self, infos: Iterable[ChunkInfo]) -> None:
        for c in infos:
            self.reads += c.records
            self.bytes += c.bytes
        if self.callback is not None:
            self.callback(self.reads, self.total, self.bytes)


def convert(
    input_url: str,
    output_url: str,
    chunk_size: int | str = DEFAULT_CHUNK_SIZE,
    workers: int | str | None = 1,
    overwrite: bool = False,
    max_chunk_records: int = DEFAULT_MAX_CHUNK_RECORDS,
    allow_empty: bool = False,
    progress: ProgressCallback | None = None,
    storage_options: dict[str, Any] | None = None,
) -> ConvertResult:
    """Convert a coordinate-sorted BAM into a BAMS3 dataset.

    Args:
        input_url: BAM path or URL (its ``.bai``/``.csi`` beside it is used).
        output_url: Dataset prefix (directory or ``s3://bucket/prefix``).
        chunk_size: Window size in bp (``256K``..``4M``), default 1 Mbp.
        workers: Worker processes (``auto`` = number of cores).
        overwrite: Replace an existing dataset at ``output_url``.
        max_chunk_records: Split windows holding more records than this.
        allow_empty: Accept an input without records (refused by default).
        progress: Called as chunks are written with (reads written, reads
            in the BAM from its index statistics or 0 when unknown, bytes
            written); the command line draws it on a terminal.
        storage_options: fsspec options for both input and output.

    Returns:
        The committed manifest and the wall time.

    Raises:
        Bams3Error: For bad input or arguments (one-line message).
        OSError: For storage failures.
    """
    t0 = time.monotonic()
    size = parse_size(chunk_size)
    n_workers = resolve_workers(workers)
    if max_chunk_records < 1:
        raise InvalidArgumentError("max_chunk_records must be at least 1")
    opts = storage_options or {}
    storage = Storage(output_url, **opts)
    with local_bam(input_url, **opts) as bam_path:
        info = inspect_bam(bam_path)
        if info.sort_order and info.sort_order not in ("coordinate", "unknown") and not info.has_index:
            raise UnsortedInputError(
                f"{input_url}: header says SO:{info.sort_order}; run 'samtools sort' first"
            )
        prepare_output(storage, overwrite)
        tally = _Tally(progress, sum(info.mapped_per_ref or ()) + (info.unplaced or 0))
        by_key: dict[str, list[ChunkInfo]] = defaultdict(list)
        run = _convert_indexed if info.has_index else _convert_stream
        run(bam_path, storage, info, size, n_workers, max_chunk_records, by_key, tally.update)
        if not allow_empty and not any(by_key.values()):
            raise InputFormatError(f"{input_url}: no records (header only)")
        manifest = commit_dataset(storage, info, by_key, size, max_chunk_records, input_url)
    return ConvertResult(storage.url, manifest, time.monotonic() - t0)


def _convert_indexed(
    bam_path: str,
    storage: Storage,
    info: BamInfo,
    size: int,
    workers: int,
    max_records: int,
    by_key: dict[str, list[ChunkInfo]],
    report: Callable[[Iterable[ChunkInfo]], None],
) -> None:
    tasks = plan_tasks(info, size, workers)
    if workers == 1 or len(tasks) == 1:
        for task in tasks:
            key, infos = run_window_task(bam_path, storage, task, max_records)
            by_key[key].extend(infos)
            report(infos)
        return
    with process_pool(workers, initializer=keep_freed_memory) as pool:
        futures = [
            pool.submit(_in_worker, run_window_task, storage, bam_path, task=t, max_records=max_records)
            for t in tasks
        ]
        try:
            for fut in cf.as_completed(futures):
                key, infos = fut.result()
                by_key[key].extend(infos)
                report(infos)
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _in_worker(fn: Callable[..., _T], storage: Storage, *args: Any, **kwargs: Any) -> _T:
    """Run ``fn`` in a pool worker with the worker's shared Storage (one client per process, not per task)."""
    return fn(*args, storage=shared_storage(storage.url, **storage.options), **kwargs)


def _encode_batch(
    storage: Storage, raw: RawRecords, info: BamInfo, header: bytes, chunk_size: int, part: int,
    max_records: int,
) -> tuple[str, list[ChunkInfo]]:
    if raw.tid < 0:
        rname, key, length = UNPLACED_NAME, UNPLACED_KEY, 0
    else:
        rname, length = info.references[raw.tid]
        key = reference_key(raw.tid, rname)
    names = [n for n, _ in info.references]
    return key, _write_raw(storage, raw, names, header, rname, key, chunk_size, length, max_records, part)


def _convert_stream(
    bam_path: str,
    storage: Storage,
    info: BamInfo,
    size: int,
    workers: int,
    max_records: int,
    by_key: dict[str, list[ChunkInfo]],
    report: Callable[[Iterable[ChunkInfo]], None],
) -> None:
    parts: dict[tuple[int, int], int] = defaultdict(int)

    def part_of(raw: RawRecords) -> int:
        # A window bigger than max_records comes in several batches: number their parts.
        part = parts[(raw.tid, raw.window_start)]
        parts[(raw.tid, raw.window_start)] += 1
        return part

    with BamScanner(bam_path) as scan:
        batches = scan.stream(size, max_records)
        if workers == 1:
            for raw in batches:
                k, infos = _encode_batch(storage, raw, info, scan.header, size, part_of(raw), max_records)
                by_key[k].extend(infos)
                report(infos)
            return
        # Reading (inflating, cutting windows) here overlaps decoding and
        # encoding in the workers: both cores work from the first window.
        with process_pool(workers, initializer=keep_freed_memory) as pool:
            pending: set[cf.Future[tuple[str, list[ChunkInfo]]]] = set()

            def drain(block_until: int) -> None:
                while len(pending) > block_until:
                    done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        pending.discard(fut)
                        k, infos = fut.result()
                        by_key[k].extend(infos)
                        report(infos)

            for raw in batches:
                pending.add(
                    pool.submit(_in_worker, _encode_batch, storage, raw=raw, info=info, header=scan.header,
                                chunk_size=size, part=part_of(raw), max_records=max_records)
                )
                drain(2 * workers)  # bound memory: at most 2 batches queued per worker
            drain(0)
