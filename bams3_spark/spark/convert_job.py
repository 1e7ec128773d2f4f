"""Distributed conversion: BAMs -> BAMS3 datasets on Spark (``spark-submit jobs/convert.py``).

The job is the local converter (:mod:`bams3_spark.convert`) cut along the same
seams, with Spark as the process pool (FORMAT.md, "Writing a dataset"):

1. **Plan (driver).** For every sample the driver reads only the BAM header
   and its BAI/CSI index, refuses or clears the output (``prepare_output``)
   and cuts the references into balanced window tasks (``plan_tasks``), plus
   one task for the unplaced unmapped reads. Neighbouring small window tasks
   (short contigs, scaffolds) are bundled up to the same byte budget, so a
   genome with thousands of contigs does not make thousands of Spark tasks.
   No record is read here.
2. **Convert (executors).** One Spark task per bundle, for all samples in
   one Spark job. A task reads only its slice of the BAM and writes its chunk
   objects (``run_window_task`` = ``window_table`` + ``write_window``), then
   returns their :class:`ChunkInfo` index entries to the driver.
3. **Commit (driver).** A sample whose every task succeeded is committed with
   ``commit_dataset`` (indexes, header, manifest last). A sample with a failed
   task is aborted: its partial output is deleted, so it never looks complete,
   and the other samples are unaffected.

Remote BAMs are read by ranged slices (:mod:`bams3_spark.bam.slices`); local
(and ``file://``) inputs are read in place, so on a cluster they must sit on a
filesystem every executor mounts; otherwise put them on S3.
"""

from __future__ import annotations

import concurrent.futures as cf
import posixpath
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any

from bams3_spark.bam.index import BinIndex, byte_range, union_range
from bams3_spark.bam.reader import BamInfo
from bams3_spark.bam.slices import BamSource, inspect_source, local_slice
from bams3_spark.convert import TASKS_PER_WORKER, WindowTask, parse_size, plan_tasks, run_window_task
from bams3_spark.dataset.writer import commit_dataset, prepare_output
from bams3_spark.exceptions import Bams3Error, InputFormatError, InvalidArgumentError, one_line
from bams3_spark.format.layout import DEFAULT_MAX_CHUNK_RECORDS, UNPLACED_NAME
from bams3_spark.format.manifest import ChunkInfo, Manifest
from bams3_spark.io.storage import Storage, shared_storage, storage_for_file
from bams3_spark.spark.costs import GET_PRICE_PER_1000, request_cost
from bams3_spark.spark.jobs import spark_error_line

#: Planning reads headers and indexes of several samples at once.
PLAN_THREADS = 8


# --------------------------------------------------------------------------- samples


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class Sample:
    """One conversion of a cohort: an input BAM and its output dataset."""

    input: str
    output: str


def parse_sample_sheet(text: str, where: str = "samples.tsv") -> list[Sample]:
    """Parse a conversion sample sheet: ``INPUT<TAB>OUTPUT`` lines, or columns named by a header.

    The rule is :func:`bams3_spark.spark.cohort.parse_sample_sheet` (shared
    with the cohort jobs' ``--manifest``).

    Raises:
        InvalidArgumentError: For a line without exactly two columns, or no samples.
    """
    from bams3_spark.spark.cohort import parse_sample_sheet as parse_sheet

    return [Sample(str(r.input), r.dataset) for r in parse_sheet(text, where, conversion=True)]


def read_sample_sheet(url: str, storage_options: dict[str, Any] | None = None) -> list[Sample]:
    """Read and parse a sample sheet from a path or URL (see :func:`parse_sample_sheet`)."""
    storage, name = storage_for_file(url, **(storage_options or {}))
    if not storage.exists(name):
        raise FileNotFoundError(f"{url}: no such file")
    return parse_sample_sheet(storage.read_bytes(name).decode("utf-8", "replace"), url)


# --------------------------------------------------------------------------- tasks


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class SliceTask:
    """One Spark task: consecutive window tasks of one sample, and the bytes they read."""

    sample: int
    number: int
    source: BamSource
    output_url: str
    output_options: dict[str, Any]
    windows: tuple[WindowTask, ...]
    byte_range: tuple[int, int] | None
    max_records: int


@dataclass
class TaskResult:
    """What a task returns to the driver: its chunks, or why the sample failed."""

    sample: int
    chunks: dict[str, list[ChunkInfo]]
    fetched: int
    error: str | None = None
    requests: int = 0


def _window_ranges(index: BinIndex, task: WindowTask, size: int) -> tuple[int, int] | None:
    if task.rname == UNPLACED_NAME:
        off = index.unplaced_offset()
        return None if off is None else (off >> 16, size)
    rng: tuple[int, int] | None = None
    for start in task.starts:
        end = min(start + task.chunk_size, task.length)
        rng = union_range(rng, byte_range(index.region_chunks(task.tid, start, end), size))
    return rng


def run_slice_task(task: SliceTask) -> TaskResult:
    """Run one task on an executor: fetch its slice, write its chunks, return their entries.

    Input and storage errors become a failed :class:`TaskResult` (the sample
    fails, the job goes on); anything else fails the Spark task, which Spark
    retries.
    """
    chunks: dict[str, list[ChunkInfo]] = defaultdict(list)
    try:
        with local_slice(task.source, task.byte_range) as (path, fetched, requests):
            output = shared_storage(task.output_url, **task.output_options)
            for wt in task.windows:
                try:
                    key, infos = run_window_task(path, output, wt, task.max_records)
                except (Bams3Error, OSError) as exc:
                    raise type(exc)(str(exc).replace(path, task.source.url)) from None
                chunks[key].extend(infos)
    except (Bams3Error, OSError) as exc:
        return TaskResult(task.sample, {}, 0, one_line(exc))
    return TaskResult(task.sample, dict(chunks), fetched, requests=requests)


# --------------------------------------------------------------------------- driver


@dataclass
class SampleResult:
    """The outcome of one sample of a conversion job."""

    input: str
    output: str
    error: str | None = None
    manifest: Manifest | None = None
    tasks: int = 0
    input_bytes: int = 0
    fetched_bytes: int = 0
    largest_fetch: int = 0
    requests: int = 0

    @property
    def ok(self) -> bool:
        """Whether the sample was converted and committed."""
        return self.error is None and self.manifest is not None


@dataclass
class JobResult:
    """The outcome of a conversion job: one result per sample, in input order."""

    samples: list[SampleResult]
    tasks: int
    seconds: float

    @property
    def failed(self) -> list[SampleResult]:
        """The samples that were not converted."""
        return [s for s in self.samples if not s.ok]


@dataclass
class _Plan:
    result: SampleResult
    info: BamInfo
    output: Storage
    tasks: list[SliceTask] = field(default_factory=list)


def _plan_sample(
    number: int, sample: Sample, size: int, workers: int, overwrite: bool, allow_empty: bool,
    max_records: int, opts: dict[str, Any],
) -> _Plan:
    info, index, source = inspect_source(sample.input, opts)
    empty = info.mapped_per_ref is not None and sum(info.mapped_per_ref) + (info.unplaced or 0) == 0
    if empty and not allow_empty:
        raise InputFormatError(f"{sample.input}: no records (header only)")
    output = Storage(sample.output, **opts)
    prepare_output(output, overwrite)
    plan = _Plan(SampleResult(sample.input, sample.output, input_bytes=source.size), info, output)
    windows = plan_tasks(info, size, workers)
    ranges = [_window_ranges(index, wt, source.size) for wt in windows]
    for group in _bundle(ranges, workers * TASKS_PER_WORKER):
        rng = None
        for i in group:
            rng = union_range(rng, ranges[i])
        wts = tuple(windows[i] for i in group)
        plan.tasks.append(SliceTask(number, -1, source, sample.output, opts, wts, rng, max_records))
    plan.result.tasks = len(plan.tasks)
    return plan


def _bundle(ranges: Sequence[tuple[int, int] | None], n_tasks: int) -> list[list[int]]:
    """Group consecutive window tasks into about ``n_tasks`` bundles of similar byte size.

    A window task is never split; small neighbours (in file order, so their
    byte ranges are adjacent) share a bundle while it stays within budget.
    """
    weights = [r[1] - r[0] if r else 0 for r in ranges]
    budget = sum(weights) / max(1, n_tasks)
    groups: list[list[int]] = []
    load = 0.0
    for i, w in enumerate(weights):
        if not groups or (load + w > budget and load > 0):
            groups.append([])
            load = 0.0
        groups[-1].append(i)
        load += w
    return groups


def _wait_for_running_tasks(sc: Any, group: str, timeout: float = 120.0) -> None:
    # After a job fails, its other tasks are being killed; wait for them to
    # stop before deleting their output, so no chunk is written afterwards.
    tracker = sc.statusTracker()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = 0
        for job_id in tracker.getJobIdsForGroup(group):
            job = tracker.getJobInfo(job_id)
            for stage_id in job.stageIds if job else ():
                stage = tracker.getStageInfo(stage_id)
                active += stage.numActiveTasks if stage else 0
        if not active:
            return
        time.sleep(0.2)


def _abort(plan: _Plan) -> None:
    # Best effort: the prefix held nothing of value (prepare_output emptied it).
    with suppress(OSError):
        plan.output.delete_tree("")


def convert_samples(
    spark: Any,
    samples: Sequence[Sample],
    chunk_size: int | str = "1M",
    overwrite: bool = False,
    max_chunk_records: int = DEFAULT_MAX_CHUNK_RECORDS,
    allow_empty: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> JobResult:
    """Convert BAMs into BAMS3 datasets with one Spark job; one sample's failure spares the others.

    Args:
        spark: A SparkSession (local or cluster).
        samples: Input BAM and output dataset of each sample (outputs must differ).
        chunk_size: Window size in bp (``256K``..``4M``), as for ``bams3 convert``.
        overwrite: Replace existing datasets at the outputs.
        max_chunk_records: Split windows holding more records than this.
        allow_empty: Accept inputs without records.
        storage_options: fsspec options for inputs and outputs (``endpoint_url``...).

    Returns:
        One :class:`SampleResult` per sample, in input order; failed samples
        carry a one-line reason and left no dataset behind.

    Raises:
        InvalidArgumentError: For bad options or two samples with the same output.
    """
    t0 = time.monotonic()
    size = parse_size(chunk_size)
    if max_chunk_records < 1:
        raise InvalidArgumentError("--max-chunk-records must be at least 1")
    if not samples:
        raise InvalidArgumentError("no samples to convert")
    seen: dict[str, str] = {}
    for s in samples:
        where = Storage(s.output).url_of()
        if where in seen:
            raise InvalidArgumentError(f"{s.output}: output of both {seen[where]} and {s.input}")
        seen[where] = s.input
    opts = dict(storage_options or {})
    sc = spark.sparkContext
    workers = max(1, int(sc.defaultParallelism))

    results: list[SampleResult] = [SampleResult(s.input, s.output) for s in samples]
    plans: dict[int, _Plan] = {}
    with cf.ThreadPoolExecutor(min(PLAN_THREADS, len(samples))) as pool:
        futures = {
            pool.submit(_plan_sample, i, s, size, workers, overwrite, allow_empty, max_chunk_records, opts): i
            for i, s in enumerate(samples)
        }
        for fut in cf.as_completed(futures):
            i = futures[fut]
            try:
                plans[i] = fut.result()
                results[i] = plans[i].result
            except (Bams3Error, OSError, ValueError) as exc:
                results[i].error = one_line(exc)

    # Biggest slices first, so the last tasks to finish are short ones.
    tasks = sorted(
        (t for p in plans.values() for t in p.tasks),
        key=lambda t: -(t.byte_range[1] - t.byte_range[0] if t.byte_range else 0),
    )
    tasks = [replace(t, number=n) for n, t in enumerate(tasks)]

    outputs: list[TaskResult] = []
    if tasks:
        from bams3_spark.spark.costs import logger

        logger.info(f"plan: {len(plans):,} sample(s), {len(tasks):,} task(s) (BAM slices by reference and "
                    f"window); planned in {time.monotonic() - t0:.2f} s")
        group = f"bams3-convert-{uuid.uuid4().hex[:8]}"
        sc.setJobGroup(group, f"bams3 convert: {len(plans)} sample(s), {len(tasks)} tasks", True)
        try:
            outputs = sc.parallelize(tasks, len(tasks)).map(run_slice_task).collect()
        except Exception as exc:  # noqa: BLE001 - py4j/Spark raise many types
            reason = f"Spark job failed: {spark_error_line(exc)}"
            sc.cancelJobGroup(group)
            _wait_for_running_tasks(sc, group)
            for plan in plans.values():
                plan.result.error = reason
                _abort(plan)
            return JobResult(results, len(tasks), time.monotonic() - t0)
        finally:
            for prop in ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel"):
                sc.setLocalProperty(prop, None)  # null removes it: later jobs are not in our group

    by_sample: dict[int, dict[str, list[ChunkInfo]]] = defaultdict(lambda: defaultdict(list))
    for out in outputs:
        res = plans[out.sample].result
        res.fetched_bytes += out.fetched
        res.largest_fetch = max(res.largest_fetch, out.fetched)
        res.requests += out.requests
        if out.error and res.error is None:
            res.error = out.error
        for key, infos in out.chunks.items():
            by_sample[out.sample][key].extend(infos)
    for i, plan in sorted(plans.items()):
        res = plan.result
        chunks = by_sample[i]
        if res.error is None and not allow_empty and not any(chunks.values()):
            res.error = f"{res.input}: no records (header only)"
        if res.error is not None:
            _abort(plan)
            continue
        try:
            res.manifest = commit_dataset(plan.output, plan.info, chunks, size, max_chunk_records, res.input)
        except (Bams3Error, OSError) as exc:
            res.error = one_line(exc)
            _abort(plan)
    return JobResult(results, len(tasks), time.monotonic() - t0)


def report_lines(result: JobResult) -> tuple[list[str], list[str]]:
    """Return (stdout lines, stderr lines) describing a job's outcome."""
    out: list[str] = []
    err: list[str] = []
    for s in result.samples:
        if s.ok and s.manifest is not None:
            m = s.manifest
            read = "input read in place"
            if s.fetched_bytes:
                read = f"fetched {s.fetched_bytes / max(s.input_bytes, 1):.0%} of the input"
            out.append(
                f"OK      {s.input} -> {s.output}: {m.records:,} records in {m.chunk_count:,} chunks, "
                f"{m.chunk_bytes / 1e6:,.1f} MB; {s.tasks} tasks, {read}"
            )
        else:
            err.append(f"FAILED  {s.input} -> {s.output}: {s.error}")
    failed = result.failed
    requests = sum(s.requests for s in result.samples)
    fetched = sum(s.fetched_bytes for s in result.samples)
    summary = f"converted {len(result.samples) - len(failed)} of {len(result.samples)} sample(s) " \
              f"in {result.seconds:.1f} s ({result.tasks} tasks); {requests:,} GET request(s), " \
              f"{fetched / 1e6:,.1f} MB fetched; request cost ~${request_cost(requests):.4f} " \
              f"(${GET_PRICE_PER_1000} per 1,000 GETs)"
    if failed:
        names = (posixpath.basename(s.input.rstrip("/")) or s.input for s in failed)
        summary += "; failed: " + ", ".join(names)
    (err if failed else out).append(summary)
    return out, err
