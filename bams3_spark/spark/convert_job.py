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

**Reading a slice of a BAM on S3.** The index says which BGZF blocks htslib
will read for a window: the chunks of the bins overlapping the window, minus
those before the bin-offset ``min_off`` or after ``max_off`` (the same rules
as htslib's ``hts_itr_query``, reproduced by :meth:`BinIndex.region_chunks`).
A task downloads the header blocks plus the byte range covering its windows
through the storage layer (plain ranged GETs, so any S3-compatible endpoint
works), writes them at their original offsets into a *sparse* local file of
the same layout, puts the index beside it and lets pysam fetch windows from
that file exactly as ``bams3 convert`` does from a local BAM. htslib never
touches the holes; if it ever did, it would fail on them (zeros are not a
BGZF block), never read wrong records. htslib's own S3/HTTP support was not
used: pysam wheels load libcurl at run time (absent from slim images), custom
endpoints need htslib-specific configuration, and against moto its second
ranged request stalls behind the first, still-open response.

Local (and ``file://``) inputs are read in place, so on a cluster they must
sit on a filesystem every executor mounts; otherwise put them on S3.

**Test hook.** ``BAMS3_FAIL_TASK=<n>`` in the driver's environment makes task
number ``n`` (0-based, in submission order) raise after writing its chunks, on
every attempt, so the Spark job fails mid-way. Unset (the normal case) it does
nothing.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import gzip
import os
import posixpath
import re
import shutil
import struct
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bams3_spark.bam import BamInfo, inspect_bam
from bams3_spark.convert import (
    TASKS_PER_WORKER,
    WindowTask,
    commit_dataset,
    parse_size,
    plan_tasks,
    prepare_output,
    run_window_task,
)
from bams3_spark.exceptions import Bams3Error, InputFormatError, InvalidArgumentError
from bams3_spark.format.manifest import DEFAULT_MAX_CHUNK_RECORDS, UNPLACED_NAME, ChunkInfo, Manifest
from bams3_spark.io import Storage, shared_storage, split_url, storage_for_file

#: Environment variable of the failure-injection test hook (see the module docstring).
FAIL_TASK_ENV = "BAMS3_FAIL_TASK"

#: The empty BGZF block that ends every BAM (SAM/BAM spec, section 4.1.2).
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
#: A BGZF block is at most 64 KiB, compressed.
MAX_BLOCK = 1 << 16
#: Give up looking for the end of a header after this many bytes.
MAX_HEADER_PREFIX = 64 << 20
#: Download slices in ranged GETs of this size (bounds task memory).
FETCH_PIECE = 16 << 20
#: Planning reads headers and indexes of several samples at once.
PLAN_THREADS = 8

_U64_MAX = (1 << 64) - 1


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class Sample:
    """One conversion of a cohort: an input BAM and its output dataset."""

    input: str
    output: str


def parse_sample_sheet(text: str, where: str = "samples.tsv") -> list[Sample]:
    """Parse a sample sheet: one ``INPUT<TAB>OUTPUT`` line per sample.

    Blank lines and ``#`` comments are skipped, as is a first line whose first
    column is ``input`` or ``bam`` (a header). Without tabs, columns are split
    on whitespace.

    Raises:
        InvalidArgumentError: For a line without exactly two columns, or no samples.
    """
    samples: list[Sample] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cols = [c.strip() for c in line.split("\t")] if "\t" in line else line.split()
        if not samples and cols[0].lower() in ("input", "bam", "input_bam"):
            continue
        if len(cols) != 2 or not all(cols):
            raise InvalidArgumentError(
                f"{where} line {number}: expected 2 columns (input BAM, output dataset), got {len(cols)}"
            )
        samples.append(Sample(cols[0], cols[1]))
    if not samples:
        raise InvalidArgumentError(f"{where}: no samples")
    return samples


def read_sample_sheet(url: str, storage_options: dict[str, Any] | None = None) -> list[Sample]:
    """Read and parse a sample sheet from a path or URL (see :func:`parse_sample_sheet`)."""
    storage, name = storage_for_file(url, **(storage_options or {}))
    if not storage.exists(name):
        raise FileNotFoundError(f"{url}: no such file")
    return parse_sample_sheet(storage.read_bytes(name).decode("utf-8", "replace"), url)


# --------------------------------------------------------------------------- BAI / CSI


def _bin_first(level: int) -> int:
    return ((1 << (3 * level)) - 1) // 7


def _bin_parent(b: int) -> int:
    return (b - 1) >> 3


def _bin_level(b: int) -> int:
    level = 0
    while b:
        b = _bin_parent(b)
        level += 1
    return level


@dataclass
class _Bin:
    loff: int
    chunks: np.ndarray  # (n, 2) uint64 virtual offsets [begin, end)


@dataclass
class BinIndex:
    """The binning index of a BAM (BAI or CSI), enough to find a region's bytes.

    Only the parts htslib uses to plan a region query are kept: per reference,
    each bin's chunks and its ``loff`` (for BAI derived from the linear index
    exactly as htslib does when loading it).
    """

    min_shift: int
    n_lvls: int
    refs: list[dict[int, _Bin]]
    n_no_coor: int

    @property
    def n_bins(self) -> int:
        return ((1 << (3 * self.n_lvls + 3)) - 1) // 7

    @property
    def meta_bin(self) -> int:
        return self.n_bins + 1

    def region_chunks(self, tid: int, beg: int, end: int) -> list[tuple[int, int]]:
        """Virtual-offset chunks htslib visits for ``fetch(tid, beg, end)`` (0-based, half-open).

        Mirrors htslib's ``hts_itr_query``: bins from ``reg2bins``, keeping chunks
        with ``end > min_off`` and ``begin < max_off``.
        """
        if tid < 0 or tid >= len(self.refs) or not self.refs[tid] or end <= beg:
            return []
        bins = self.refs[tid]
        beg = max(beg, 0)
        # min_off: the lowest-level bin holding beg, else its left siblings, else parents.
        b = _bin_first(self.n_lvls) + (beg >> self.min_shift)
        while True:
            if b in bins:
                break
            first = (_bin_parent(b) << 3) + 1
            b = b - 1 if b > first else _bin_parent(b)
            if b == 0:
                break
        min_off = bins[b].loff if b in bins else 0
        # max_off: the first chunk of the next extant bin to the right of end.
        b = _bin_first(self.n_lvls) + ((end - 1) >> self.min_shift) + 1
        if b >= self.n_bins:
            b = 0
        while True:
            while b % 8 == 1:
                b = _bin_parent(b)
            if b == 0:
                max_off = _U64_MAX
                break
            if b in bins and len(bins[b].chunks):
                max_off = int(bins[b].chunks[0, 0])
                break
            b += 1
        out: list[tuple[int, int]] = []
        for b in self._reg2bins(beg, end):
            found = bins.get(b)
            if found is None or not len(found.chunks):
                continue
            ch = found.chunks
            keep = ch[(ch[:, 1] > np.uint64(min_off)) & (ch[:, 0] < np.uint64(max_off))]
            out.extend((int(u), int(v)) for u, v in keep)
        return out

    def _reg2bins(self, beg: int, end: int) -> Iterator[int]:
        s = self.min_shift + 3 * self.n_lvls
        end = min(end, 1 << s) - 1
        t = 0
        for level in range(self.n_lvls + 1):
            yield from range(t + (beg >> s), t + (end >> s) + 1)
            s -= 3
            t += 1 << (3 * level)

    def first_record_offset(self) -> int | None:
        """Virtual offset of the first placed record (htslib's ``HTS_IDX_START``), if any."""
        starts = [int(r[self.meta_bin].chunks[0, 0]) for r in self.refs if self.meta_bin in r]
        return min(starts) if starts else None

    def unplaced_offset(self) -> int | None:
        """Virtual offset where the unplaced reads start (htslib's ``HTS_IDX_NOCOOR``).

        0 when the index knows no placed read (read from the header on); None
        when there are no unplaced reads either.
        """
        ends = [int(r[self.meta_bin].chunks[0, 1]) for r in self.refs if self.meta_bin in r]
        if ends:
            return max(ends)
        return 0 if self.n_no_coor else None


def parse_index(data: bytes, where: str) -> BinIndex:
    """Parse a BAI or CSI index (SAM/BAM spec section 5, CSIv1 spec).

    Raises:
        InputFormatError: If the bytes are not a valid BAI/CSI index.
    """
    try:
        if data[:4] != b"BAI\x01" and data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)  # CSI is BGZF-compressed; BGZF is multi-member gzip
        if data[:4] == b"BAI\x01":
            min_shift, n_lvls, pos, csi = 14, 5, 4, False
        elif data[:4] == b"CSI\x01":
            min_shift, n_lvls, l_aux = struct.unpack_from("<iiI", data, 4)
            pos, csi = 16 + l_aux, True
        else:
            raise ValueError("unknown magic")
        (n_ref,) = struct.unpack_from("<i", data, pos)
        pos += 4
        refs: list[dict[int, _Bin]] = []
        for _ in range(n_ref):
            (n_bin,) = struct.unpack_from("<i", data, pos)
            pos += 4
            bins: dict[int, _Bin] = {}
            for _ in range(n_bin):
                if csi:
                    b, loff, n_chunk = struct.unpack_from("<IQi", data, pos)
                    pos += 16
                else:
                    b, n_chunk = struct.unpack_from("<Ii", data, pos)
                    loff, pos = 0, pos + 8
                if n_chunk < 0 or pos + 16 * n_chunk > len(data):
                    raise ValueError("chunk list out of bounds")
                chunks = np.frombuffer(data, "<u8", 2 * n_chunk, pos).reshape(-1, 2)
                pos += 16 * n_chunk
                bins[b] = _Bin(loff, chunks)
            if not csi:
                (n_intv,) = struct.unpack_from("<i", data, pos)
                pos += 4
                linear = np.frombuffer(data, "<u8", n_intv, pos).copy()
                pos += 8 * n_intv
                _set_bai_loff(bins, linear, n_lvls)
            refs.append(bins)
        n_no_coor = struct.unpack_from("<Q", data, pos)[0] if pos + 8 <= len(data) else 0
    except (ValueError, struct.error, OSError, EOFError) as exc:
        raise InputFormatError(f"{where}: not a valid BAI/CSI index ({exc})") from None
    return BinIndex(min_shift, n_lvls, refs, n_no_coor)


def _set_bai_loff(bins: dict[int, _Bin], linear: np.ndarray, n_lvls: int) -> None:
    # As htslib's idx_read_core + update_loff: zero entries take the previous
    # value, then each bin's loff is the linear offset of its first 16 kb tile.
    if len(linear):
        idx = np.where(linear != 0, np.arange(len(linear)), 0)
        linear = linear[np.maximum.accumulate(idx)]
    n_bins = ((1 << (3 * n_lvls + 3)) - 1) // 7
    for b, entry in bins.items():
        if b >= n_bins:
            continue
        level = _bin_level(b)
        bot = (b - _bin_first(level)) << (3 * (n_lvls - level))
        entry.loff = int(linear[bot]) if bot < len(linear) else 0


def byte_range(chunks: Sequence[tuple[int, int]], size: int) -> tuple[int, int] | None:
    """File byte range [lo, hi) holding every BGZF block of these chunks."""
    if not chunks:
        return None
    lo = min(u for u, _ in chunks) >> 16
    hi = max(v for _, v in chunks) >> 16
    # The end offset points into the block starting at hi, which spans at most 64 KiB.
    return lo, min(size, hi + MAX_BLOCK)


def _union(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), max(a[1], b[1])


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class BamSource:
    """How a task reaches an input BAM: in place (local) or by ranged reads."""

    url: str
    storage_options: dict[str, Any]
    size: int
    index_name: str
    index_size: int
    header_bytes: int
    local_path: str | None = None

    @property
    def index_suffix(self) -> str:
        return ".csi" if self.index_name.endswith(".csi") else ".bai"


def _index_candidates(name: str) -> list[str]:
    # Where htslib and samtools put an index: x.bam.bai, x.bai, x.bam.csi.
    names = [name + ".bai"]
    if name.endswith(".bam"):
        names.append(name[:-4] + ".bai")
    names.append(name + ".csi")
    return names


def _no_index(url: str) -> InputFormatError:
    return InputFormatError(
        f"{url}: no BAI/CSI index next to it; run 'samtools index' on it (and upload the .bai "
        "beside it), or use 'bams3 convert', which streams unindexed sorted input"
    )


@contextmanager
def _header_stub(
    storage: Storage, name: str, size: int, index: bytes, suffix: str, prefix: int
) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bams3-plan-") as tmp:
        stub = os.path.join(tmp, "input.bam")
        with open(stub, "wb") as fh:
            _fetch_into(storage, name, fh, 0, prefix)
            if prefix < size:
                fh.write(BGZF_EOF)
        with open(stub + suffix, "wb") as fh:
            fh.write(index)
        yield stub


_PYSAM_LOCK = threading.Lock()


def _inspect(path: str) -> BamInfo:
    # inspect_bam runs samtools inside pysam, which captures its output by
    # redirecting the process's stdout: one at a time across planning threads.
    with _PYSAM_LOCK:
        return inspect_bam(path)


def _inspect_remote(url: str, opts: dict[str, Any]) -> tuple[BamInfo, BinIndex, BamSource]:
    storage, name = storage_for_file(url, **opts)
    if not storage.exists(name):
        raise FileNotFoundError(f"{url}: not found")
    size = storage.size(name)
    index_name = next((n for n in _index_candidates(name) if storage.exists(n)), None)
    if index_name is None:
        raise _no_index(url)
    index_bytes = storage.read_bytes(index_name)
    index = parse_index(index_bytes, storage.url_of(index_name))
    magic = storage.read_bytes(name, 0, min(size, 18))
    if len(magic) < 18 or magic[:4] != b"\x1f\x8b\x08\x04" or magic[12:14] != b"BC":
        raise InputFormatError(f"{url}: not a BAM file")
    first = index.first_record_offset()
    # The header ends where the first record starts; without placed reads, probe.
    prefix = min(size, (first >> 16) + MAX_BLOCK if first else 1 << 20)
    suffix = ".csi" if index_name.endswith(".csi") else ".bai"
    while True:
        problem = ""
        with _header_stub(storage, name, size, index_bytes, suffix, prefix) as stub:
            try:
                info = _inspect(stub)
                break
            except (Bams3Error, OSError, ValueError) as exc:
                problem = _one_line(exc).replace(stub + ": ", "").replace(stub, url)
        if prefix >= size or prefix >= MAX_HEADER_PREFIX:
            raise InputFormatError(f"{url}: cannot read the BAM header ({problem})")
        prefix = min(size, prefix * 2)
    info = replace(info, path=url)
    source = BamSource(url, dict(opts), size, index_name, len(index_bytes), prefix)
    return info, index, source


def _inspect_local(url: str) -> tuple[BamInfo, BinIndex, BamSource]:
    path = split_url(url)[1]
    info = _inspect(path)
    if not info.has_index:
        raise _no_index(url)
    folder, name = os.path.split(path)
    index_name = next((n for n in _index_candidates(name) if os.path.exists(os.path.join(folder, n))), None)
    if index_name is None:
        raise InputFormatError(
            f"{url}: the Spark job converts BAM with a .bai/.csi index only; use 'bams3 convert'"
        )
    with open(os.path.join(folder, index_name), "rb") as fh:
        raw = fh.read()
    index = parse_index(raw, os.path.join(folder, index_name))
    size = os.path.getsize(path)
    return info, index, BamSource(url, {}, size, index_name, len(raw), 0, local_path=path)


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
    fail: bool = False


@dataclass
class TaskResult:
    """What a task returns to the driver: its chunks, or why the sample failed."""

    sample: int
    chunks: dict[str, list[ChunkInfo]]
    fetched: int
    error: str | None = None


def _window_ranges(index: BinIndex, task: WindowTask, size: int) -> tuple[int, int] | None:
    if task.rname == UNPLACED_NAME:
        off = index.unplaced_offset()
        return None if off is None else (off >> 16, size)
    rng: tuple[int, int] | None = None
    for start in task.starts:
        end = min(start + task.chunk_size, task.length)
        rng = _union(rng, byte_range(index.region_chunks(task.tid, start, end), size))
    return rng


def _fetch_into(storage: Storage, name: str, fh: Any, lo: int, hi: int) -> int:
    fh.seek(lo)
    pos = lo
    while pos < hi:
        piece = storage.read_bytes(name, pos, min(hi, pos + FETCH_PIECE))
        if not piece:
            raise OSError(f"{storage.url_of(name)}: shorter than expected (changed during the job?)")
        fh.write(piece)
        pos += len(piece)
    return hi - lo


# Per executor process (Python workers are reused): every task of a sample
# needs the same index and header bytes, so each is downloaded once (storage
# clients are shared per process too, by io.shared_storage).
_INDEX_CACHE: dict[tuple[str, int], str] = {}
_HEADER_CACHE: dict[tuple[str, int], bytes] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_DIR: list[str] = []


def _cached_header(source: BamSource, storage: Storage, name: str) -> tuple[bytes, int]:
    """Return the input's first ``header_bytes`` bytes and how many were downloaded now."""
    key = (storage.url_of(name), source.size)
    with _CACHE_LOCK:
        data = _HEADER_CACHE.get(key)
        if data is not None and len(data) == source.header_bytes:
            return data, 0
    data = storage.read_bytes(name, 0, source.header_bytes)
    if len(data) != source.header_bytes:
        raise OSError(f"{storage.url_of(name)}: shorter than expected (changed during the job?)")
    with _CACHE_LOCK:
        if len(_HEADER_CACHE) > 64:
            _HEADER_CACHE.clear()
        _HEADER_CACHE[key] = data
    return data, len(data)


def _cached_index(source: BamSource, storage: Storage) -> str:
    """Download an input's index once per executor process; return its local path."""
    key = (storage.url_of(source.index_name), source.index_size)
    with _CACHE_LOCK:
        path = _INDEX_CACHE.get(key)
        if path and os.path.exists(path):
            return path
        if not _CACHE_DIR:
            _CACHE_DIR.append(tempfile.mkdtemp(prefix="bams3-index-cache-"))
            atexit.register(shutil.rmtree, _CACHE_DIR[0], True)
        path = os.path.join(_CACHE_DIR[0], uuid.uuid4().hex + source.index_suffix)
        with open(path, "wb") as fh:
            fh.write(storage.read_bytes(source.index_name))
        _INDEX_CACHE[key] = path
        return path


@contextmanager
def _task_bam(task: SliceTask) -> Iterator[tuple[str, int]]:
    """Yield (local BAM path, bytes downloaded) holding everything the task reads."""
    src = task.source
    if src.local_path is not None:
        yield src.local_path, 0
        return
    folder, name = posixpath.split(src.url)
    storage = shared_storage(folder, **src.storage_options)
    with tempfile.TemporaryDirectory(prefix="bams3-slice-") as tmp:
        stub = os.path.join(tmp, "input.bam")
        end = src.header_bytes
        with open(stub, "wb") as fh:
            header, fetched = _cached_header(src, storage, name)
            fh.write(header)
            if task.byte_range is not None:
                lo, hi = task.byte_range
                lo = max(lo, src.header_bytes)
                if lo < hi:
                    fetched += _fetch_into(storage, name, fh, lo, hi)
                end = max(end, hi)
            if end < src.size:
                # The holes stay sparse; only the EOF marker htslib checks is added.
                fh.seek(end)
                fh.write(BGZF_EOF)
        os.symlink(_cached_index(src, storage), stub + src.index_suffix)
        yield stub, fetched


def run_slice_task(task: SliceTask) -> TaskResult:
    """Run one task on an executor: fetch its slice, write its chunks, return their entries.

    Input and storage errors become a failed :class:`TaskResult` (the sample
    fails, the job goes on); anything else fails the Spark task, which Spark
    retries.
    """
    chunks: dict[str, list[ChunkInfo]] = defaultdict(list)
    try:
        with _task_bam(task) as (path, fetched):
            output = shared_storage(task.output_url, **task.output_options)
            for wt in task.windows:
                try:
                    key, infos = run_window_task(path, output, wt, task.max_records)
                except (Bams3Error, OSError) as exc:
                    raise type(exc)(str(exc).replace(path, task.source.url)) from None
                chunks[key].extend(infos)
    except (Bams3Error, OSError) as exc:
        return TaskResult(task.sample, {}, 0, _one_line(exc))
    if task.fail:
        raise RuntimeError(f"injected failure in task {task.number} ({FAIL_TASK_ENV}={task.number})")
    return TaskResult(task.sample, dict(chunks), fetched)


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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.splitlines()[0].split())


def _plan_sample(
    number: int, sample: Sample, size: int, workers: int, overwrite: bool, allow_empty: bool,
    max_records: int, opts: dict[str, Any],
) -> _Plan:
    if split_url(sample.input)[0] == "file":
        info, index, source = _inspect_local(sample.input)
    else:
        info, index, source = _inspect_remote(sample.input, opts)
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
            rng = _union(rng, ranges[i])
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


def _failure_reason(exc: BaseException) -> str:
    # Spark wraps the Python error of the failed task in a long JVM message;
    # keep the Python exception line.
    text = str(exc)
    found = re.findall(r"^\s*(\w+(?:Error|Exception): .+)$", text, re.MULTILINE)
    return _one_line(Exception(found[-1] if found else text))


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
                results[i].error = _one_line(exc)

    # Biggest slices first, so the last tasks to finish are short ones.
    tasks = sorted(
        (t for p in plans.values() for t in p.tasks),
        key=lambda t: -(t.byte_range[1] - t.byte_range[0] if t.byte_range else 0),
    )
    fail_at = os.environ.get(FAIL_TASK_ENV, "").strip()
    tasks = [replace(t, number=n, fail=fail_at == str(n)) for n, t in enumerate(tasks)]

    outputs: list[TaskResult] = []
    if tasks:
        group = f"bams3-convert-{uuid.uuid4().hex[:8]}"
        sc.setJobGroup(group, f"bams3 convert: {len(plans)} sample(s), {len(tasks)} tasks", True)
        try:
            outputs = sc.parallelize(tasks, len(tasks)).map(run_slice_task).collect()
        except Exception as exc:  # noqa: BLE001 - py4j/Spark raise many types
            reason = f"Spark job failed: {_failure_reason(exc)}"
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
            res.error = _one_line(exc)
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
    summary = f"converted {len(result.samples) - len(failed)} of {len(result.samples)} sample(s) " \
              f"in {result.seconds:.1f} s ({result.tasks} tasks)"
    if failed:
        names = (posixpath.basename(s.input.rstrip("/")) or s.input for s in failed)
        summary += "; failed: " + ", ".join(names)
    (err if failed else out).append(summary)
    return out, err
