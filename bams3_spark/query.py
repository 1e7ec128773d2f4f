"""Region queries on a BAMS3 dataset, with the semantics of ``samtools view``.

A query is planned from the manifest and the per-reference indexes alone
(FORMAT.md §6 and §9), then executed by reading only the chunk objects, and
only the columns, it needs, on a thread pool with results in region order.

Semantics, checked against samtools 1.16 by ``tests/test_query.py``:

* **Region strings** are parsed by :func:`bams3_spark.format.regions.parse_region`
  (samtools' rules; see its module for the coordinate glossary). A record
  matches a region ``[start, end)`` when its aligned span overlaps it:
  ``pos <= end and end_col > start`` (htslib's rule; unmapped placed reads
  cover one base).
* **Several regions** behave as ``samtools view`` without ``-M``: each region
  in the given order, records in file order within a region, and a record
  overlapping several regions is output (and counted) once per region.
* ``*`` selects the unplaced unmapped reads; ``.`` (or no region at all)
  selects every record of the dataset, in file order.
* **A BED file** (``regions_file``) behaves as ``samtools view --regions-file``
  (``-M -L``): the intervals of each reference are merged, each matching record
  is output once, in file order (header order of references). With region
  strings too, the selection is the intersection of the BED intervals with
  the regions, as samtools computes it.

Where samtools only warns and carries on (unknown reference, malformed
region), this module raises :class:`~bams3_spark.exceptions.RegionError`.

I/O: a chunk read for every column is one ranged GET of the whole object,
verified by size and SHA-256. A projection (``--count`` reads only ``pos`` and
``end``) is one GET of the object's tail (the Parquet footer) plus one GET per
run of adjacent needed column chunks, protected by the Parquet page CRCs. A
``count`` answers chunks lying entirely inside a region from the index alone.
"""

from __future__ import annotations

import ast
import bisect
import gzip
import io
import threading
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, Union

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from bams3_spark.dataset import ChunkRef, Dataset
from bams3_spark.exceptions import (
    ChecksumError,
    CorruptDatasetError,
    FilterError,
    InvalidArgumentError,
    RegionError,
)
from bams3_spark.format.chunk import decode_chunk
from bams3_spark.format.manifest import MAX_POSITION, UNPLACED_NAME
from bams3_spark.format.regions import Region, parse_region
from bams3_spark.format.schema import COLUMNS, INT_COLUMNS, project, subschema
from bams3_spark.io import Storage, storage_for_file
from bams3_spark.parallel import ordered_map

#: Bytes read from the end of a chunk object to get its Parquet footer in one
#: request. Footers of 13-column, one-row-group chunks are about 2.5 KB, but
#: pyarrow itself reads the last 64 KiB to find the footer (parquet-cpp's
#: kDefaultFooterReadSize), so prefetching exactly that serves its read.
FOOTER_READ = 64 << 10
#: Needed column chunks closer than this are fetched with one request.
COALESCE_GAP = 64 << 10
#: Default number of concurrent chunk reads.
DEFAULT_WORKERS = 16
#: Longest accepted filter expression (hostile input).
MAX_FILTER_CHARS = 4096
ALL_RECORDS = "."

RegionsArg = Union[str, Region, Sequence[Union[str, Region]], None]  # noqa: UP007 - runtime alias on 3.10


# --------------------------------------------------------------------------
# Arrow values built from buffers
# --------------------------------------------------------------------------
# Converting Python or numpy values with pa.scalar / pa.array / to_numpy makes
# pyarrow import pandas (its pandas shim checks every value), which costs a
# cold `bams3 query --count` 0.3-1 s. Masks and constants are therefore built
# from raw buffers, and column values read as zero-copy numpy views.


def _values(column: pa.ChunkedArray | pa.Array, where: str) -> npt.NDArray[np.int64]:
    """Return an int32 record column as an int64 numpy array, without pandas."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if arr.null_count:
        raise CorruptDatasetError(f"{where}: null values in a non-nullable column")
    raw = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr), offset=arr.offset * 4)
    return raw.astype(np.int64)


def _bool_array(mask: npt.NDArray[np.bool_]) -> pa.Array:
    return pa.Array.from_buffers(
        pa.bool_(), len(mask), [None, pa.py_buffer(np.packbits(mask, bitorder="little"))]
    )


def _const_array(values: Sequence[int | str | bool], kind: str) -> pa.Array:
    """Build an int64, string or bool array from Python values."""
    if kind == _BOOL:
        return _bool_array(np.array(values, dtype=bool))
    if kind == _INT:
        return pa.Array.from_buffers(
            pa.int64(), len(values), [None, pa.py_buffer(np.array(values, dtype=np.int64).tobytes())]
        )
    encoded = [str(v).encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return pa.Array.from_buffers(
        pa.string(), len(values), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(encoded))]
    )


# --------------------------------------------------------------------------
# Selections: what each step of a query selects
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The records one query step selects, in file order.

    Attributes:
        rname: Reference name, ``*`` for unplaced reads, or None for every
            record of the dataset.
        intervals: Sorted, disjoint 0-based half-open intervals; a record is
            selected when it overlaps any of them. Empty means every record
            of ``rname``.
        label: How the user wrote it (for plans and messages).
    """

    rname: str | None
    intervals: tuple[tuple[int, int], ...]
    label: str

    @property
    def whole(self) -> bool:
        """True when every record of the selected chunks matches."""
        return not self.intervals


def _merge(intervals: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sort and merge overlapping or touching intervals (samtools' ``bed_unify``)."""
    merged: list[list[int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((s, e) for s, e in merged)


#: Positions are below 2**31 (FORMAT.md), so intervals are bounded by it
#: without changing what they select; pyarrow compares them as int64.
_POS_LIMIT = MAX_POSITION + 1


def _region_selection(region: Region, label: str) -> Selection:
    if region.unplaced:
        return Selection(UNPLACED_NAME, (), label)
    start, end = min(region.start, _POS_LIMIT), min(region.end, _POS_LIMIT)
    return Selection(region.rname, ((start, end),), label)


def _as_texts(regions: RegionsArg) -> list[str | Region]:
    if regions is None:
        return []
    if isinstance(regions, (str, Region)):
        return [regions]
    return list(regions)


def parse_selections(
    ds: Dataset, regions: RegionsArg, regions_file: str | None = None, **storage_options: Any
) -> tuple[list[Selection], list[str]]:
    """Turn region strings and/or a BED file into the query's selections.

    Args:
        ds: The dataset (its references resolve names).
        regions: Region strings or :class:`Region` objects, in output order.
        regions_file: BED file path or URL (``samtools view --regions-file``).
        **storage_options: fsspec options to read a remote BED file.

    Returns:
        The selections in output order, and warnings (BED lines naming
        references the dataset does not have, which samtools also skips).

    Raises:
        RegionError: For a malformed region or BED line, an unknown reference
            in a region, or a BED file selecting nothing.
    """
    lengths = ds.lengths
    items = _as_texts(regions)
    parsed: list[tuple[Region | None, str]] = []
    for item in items:
        if isinstance(item, Region):
            if item.rname != UNPLACED_NAME and item.rname not in lengths:
                raise RegionError(f"region {item}: unknown reference {item.rname!r}")
            parsed.append((item, str(item)))
        elif item == ALL_RECORDS:
            # htslib: "." is every record from the start of the file.
            parsed.append((None, item))
        else:
            # Not clamped to the reference length, as htslib: a region past
            # the end still finds reads that extend past the end.
            parsed.append((parse_region(item, lengths, clamp=False), item))
    if regions_file is None:
        if not parsed:
            return [Selection(None, (), ALL_RECORDS)], []
        return [
            Selection(None, (), label) if r is None else _region_selection(r, label) for r, label in parsed
        ], []
    bed, warns = read_bed(regions_file, lengths, **storage_options)
    if parsed:
        # samtools' bed_filter: keep, per reference named by both, the
        # intersections of BED intervals with the regions' intervals.
        wanted: dict[str, list[tuple[int, int]]] = {}
        for r, label in parsed:
            if r is None or r.unplaced:
                raise RegionError(f"region {label!r} cannot be combined with --regions-file")
            wanted.setdefault(r.rname, []).append((min(r.start, _POS_LIMIT), min(r.end, _POS_LIMIT)))
        cut: dict[str, list[tuple[int, int]]] = {}
        for name, ivs in bed.items():
            for qs, qe in wanted.get(name, ()):
                for bs, be in ivs:
                    if be > qs and bs < qe:
                        cut.setdefault(name, []).append((max(bs, qs), min(be, qe)))
        bed = cut
    selections = [
        Selection(name, _merge(bed[name]), f"{regions_file}:{name}") for name in lengths if bed.get(name)
    ]
    if not selections:
        raise RegionError(
            f"{regions_file}: no interval on the dataset's references"
            + (" within the given regions" if parsed else "")
        )
    return selections, warns


def read_bed(
    url: str, lengths: dict[str, int] | Any, **storage_options: Any
) -> tuple[dict[str, list[tuple[int, int]]], list[str]]:
    """Read a BED file with the rules of samtools' ``bed_read``.

    Blank lines, ``#`` comments and ``browser``/``track`` lines are skipped;
    fields are separated by any whitespace; ``NAME START END`` is 0-based
    half-open, and ``NAME POS`` (one number) is the single 1-based base POS.
    The file may be gzip-compressed.

    Args:
        url: Path or URL of the BED file.
        lengths: Reference names of the dataset (others are skipped, with a warning).
        **storage_options: fsspec options for a remote file.

    Returns:
        Intervals per reference (in file order), and warnings.

    Raises:
        RegionError: For a malformed line or an empty interval (which samtools'
            multi-region iterator refuses).
        OSError: If the file cannot be read.
    """
    storage, name = storage_for_file(url, **storage_options)
    raw = storage.read_bytes(name)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise RegionError(f"{url}: damaged gzip file ({exc})") from None
    text = raw.decode("utf-8", errors="replace")
    out: dict[str, list[tuple[int, int]]] = {}
    unknown: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        ref = fields[0]
        numbers = _leading_numbers(fields[1:])
        if numbers is None or not numbers:
            if ref in ("browser", "track"):
                continue
            raise RegionError(f"{url} line {lineno}: expected 'NAME START END', got {line.strip()[:80]!r}")
        if len(numbers) == 1:
            if numbers[0] < 1:
                raise RegionError(f"{url} line {lineno}: position must be >= 1")
            start, end = numbers[0] - 1, numbers[0]
        else:
            start, end = numbers
        if end < start:
            if ref in ("browser", "track"):
                continue
            raise RegionError(f"{url} line {lineno}: end {end} is before start {start}")
        if end == start:
            raise RegionError(f"{url} line {lineno}: empty interval {start}-{end}")
        if ref not in lengths:
            unknown[ref] = unknown.get(ref, 0) + 1
            continue
        out.setdefault(ref, []).append((min(start, _POS_LIMIT), min(end, _POS_LIMIT)))
    warns = [
        f"{url}: reference {ref!r} is not in the dataset; {n} interval(s) skipped"
        for ref, n in unknown.items()
    ]
    return out, warns


def _leading_numbers(fields: list[str]) -> list[int] | None:
    """Return the one or two leading unsigned integers (sscanf ``%u %u``)."""
    numbers: list[int] = []
    for f in fields[:2]:
        digits = f[1:] if f.startswith("+") else f
        if not digits.isdigit() or not digits.isascii():
            # sscanf stops at the first non-digit: "12x" still reads 12.
            head = ""
            for ch in digits:
                if not ("0" <= ch <= "9"):
                    break
                head += ch
            if head:
                numbers.append(int(head))
            if f.startswith("-"):
                return None
            break
        numbers.append(int(digits))
    return numbers


# --------------------------------------------------------------------------
# Planning: which chunks, read how
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkTask:
    """One chunk object to read for one selection.

    Attributes:
        selection: Index of the selection in the plan.
        chunk: The chunk object.
        whole: Every record of the chunk matches the selection, so a count
            needs only the index.
    """

    selection: int
    chunk: ChunkRef
    whole: bool


@dataclass
class QueryPlan:
    """The chunk reads a query needs, in output order; built without reading chunks."""

    dataset: Dataset
    selections: list[Selection]
    tasks: list[ChunkTask]
    warnings: list[str] = field(default_factory=list)

    def explain(self, columns: Sequence[str], count: bool = False) -> str:
        """Describe the plan: chunk objects, bytes and requests, without reading them.

        Args:
            columns: Columns the query reads from each chunk.
            count: Whether the query only counts (chunks wholly inside a
                region are then answered from the index).
        """
        names = project(list(columns))
        whole_object = len(names) == len(COLUMNS)
        lines = [
            f"# query plan for {self.dataset.url} (BAMS3 {self.dataset.manifest.format_version})",
            f"# columns read: {','.join(names)}"
            + ("" if whole_object else " (projection: footer + column chunks, ranged reads)"),
            "region\tchunk\trecords\tbytes\taction",
        ]
        fetch = requests = index_only = 0
        fetch_upper = 0
        seen_refs = set()
        fetched: set[str] = set()
        for task in self.tasks:
            sel = self.selections[task.selection]
            info = task.chunk.info
            seen_refs.add(task.chunk.rname)
            # A chunk needed by several selections is read once (see _ChunkCache).
            first = info.path not in fetched
            if count and task.whole:
                action = "count from index"
                index_only += 1
            elif whole_object or info.bytes <= FOOTER_READ:
                action = "read whole object (1 request)" if first else "shared with an earlier read"
                if first:
                    fetch += info.bytes
                    fetch_upper += info.bytes
                    requests += 1
                    fetched.add(info.path)
            else:
                action = f"read {','.join(names)} (2 requests)" if first else "shared with an earlier read"
                if first:
                    fetch_upper += info.bytes
                    requests += 2
                    fetched.add(info.path)
            lines.append(f"{sel.label}\t{task.chunk.url}\t{info.records}\t{info.bytes}\t{action}")
        total = sum(t.chunk.info.bytes for t in self.tasks)
        objects = len({t.chunk.info.path for t in self.tasks})
        lines.append(
            f"# total: {len(self.selections)} selection(s), {len(self.tasks)} chunk read(s) of "
            f"{objects} object(s) holding {total:,} bytes; {index_only} answered from the index; "
            f"about {requests} request(s) fetching at most {fetch_upper:,} bytes"
            + (f" ({fetch:,} as whole objects)" if fetch and fetch != fetch_upper else "")
            + f"; metadata: manifest + {len(seen_refs)} index object(s)"
        )
        lines.extend(f"# warning: {w}" for w in self.warnings)
        return "\n".join(lines) + "\n"


def plan_query(
    ds: Dataset,
    regions: RegionsArg = None,
    regions_file: str | None = None,
    workers: int = DEFAULT_WORKERS,
    **storage_options: Any,
) -> QueryPlan:
    """Plan a query from the manifest and indexes (no chunk is read).

    Args:
        ds: The dataset.
        regions: Region strings (samtools syntax) or :class:`Region` objects;
            None or ``.`` for every record.
        regions_file: BED file (``samtools view --regions-file``).
        workers: Threads used to fetch the reference indexes.
        **storage_options: fsspec options for a remote BED file.

    Returns:
        The plan.

    Raises:
        RegionError: For a bad region, BED file or unknown reference.
        CorruptDatasetError: For a damaged index.
        OSError: For storage failures.
    """
    selections, warns = parse_selections(ds, regions, regions_file, **storage_options)
    names: list[str] = []
    for sel in selections:
        refs = [r.name for r in ds.manifest.references] if sel.rname is None else [sel.rname]
        names.extend(n for n in refs if n not in names)
    # Fetch the indexes concurrently: on S3 each is one round trip.
    for _ in _ordered_map(ds.index, names, min(workers, len(names))):
        pass
    tasks: list[ChunkTask] = []
    for i, sel in enumerate(selections):
        refs = [r.name for r in ds.manifest.references] if sel.rname is None else [sel.rname]
        for name in refs:
            for info in ds.index(name).chunks:
                chunk = ChunkRef(ds.storage, name, info)
                if sel.whole:
                    tasks.append(ChunkTask(i, chunk, True))
                    continue
                # A chunk may hold a matching record when min_start <= end and
                # max_end > start; every record matches when all its records
                # start inside one interval (pos > start and pos <= end).
                if any(info.min_start <= e and info.max_end > s for s, e in sel.intervals):
                    whole = any(info.min_start > s and info.max_start <= e for s, e in sel.intervals)
                    tasks.append(ChunkTask(i, chunk, whole))
    return QueryPlan(ds, selections, tasks, warns)


# --------------------------------------------------------------------------
# Reading chunks: whole objects or footer + needed column chunks
# --------------------------------------------------------------------------


class _KnownRanges(io.RawIOBase):
    """A read-only file of ``size`` bytes of which some ranges are in memory.

    pyarrow reads the Parquet footer and the needed column chunks from it;
    anything else it asks for is fetched with one ranged read.
    """

    def __init__(self, size: int, fetch: Callable[[int, int], bytes]) -> None:
        super().__init__()
        self._size = size
        self._fetch = fetch
        self._starts: list[int] = []
        self._parts: list[bytes] = []
        self._pos = 0

    def add(self, start: int, data: bytes) -> None:
        i = bisect.bisect_left(self._starts, start)
        self._starts.insert(i, start)
        self._parts.insert(i, data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _get(self, start: int, end: int) -> bytes:
        i = bisect.bisect_right(self._starts, start) - 1
        if i >= 0 and end <= self._starts[i] + len(self._parts[i]):
            off = start - self._starts[i]
            return self._parts[i][off : off + end - start]
        data = self._fetch(start, end)
        self.add(start, data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        data = self._get(self._pos, end)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def read_chunk(
    chunk: ChunkRef, columns: Sequence[str] | None = None, storage: Storage | None = None
) -> pa.Table:
    """Read one chunk's records (only ``columns``) with the fewest requests.

    Every column: one ranged read of exactly the indexed size, verified by
    SHA-256. A projection: one read of the object's tail (the Parquet footer;
    the whole object if it is small, then verified by SHA-256 too), then one
    read per run of adjacent needed column chunks, checked by page CRCs.

    Args:
        chunk: The chunk object.
        columns: Columns to read (None: all).
        storage: Storage to read through (default: the chunk's own), e.g. a
            :class:`CountingStorage`.

    Returns:
        The records, in chunk order, with the projected record schema.

    Raises:
        ChecksumError: If the object's size or checksum is wrong.
        CorruptDatasetError: If it is not a valid chunk or disagrees with the index.
        OSError: If storage fails.
    """
    st = storage or chunk.storage
    info = chunk.info
    names = project(list(columns) if columns is not None else None)
    size = info.bytes
    if len(names) == len(COLUMNS) or size <= FOOTER_READ:
        data = st.read_bytes(info.path, 0, size)
        if len(data) != size:
            raise ChecksumError(f"{chunk.url}: {len(data)} bytes, index says {size} (truncated or replaced)")
        return decode_chunk(data, chunk.url, names, info.records, expected_sha256=info.sha256)
    tail = st.read_bytes(info.path, size - FOOTER_READ, size)
    if len(tail) != FOOTER_READ:
        raise ChecksumError(
            f"{chunk.url}: shorter than the {size} bytes the index says (truncated or replaced)"
        )
    if tail[-4:] != b"PAR1":
        raise CorruptDatasetError(f"{chunk.url}: not a valid chunk object (no Parquet footer; replaced?)")
    footer_len = int.from_bytes(tail[-8:-4], "little")
    if footer_len + 12 > size:
        raise CorruptDatasetError(f"{chunk.url}: not a valid chunk object (footer length {footer_len})")
    if footer_len + 8 > len(tail):
        tail = st.read_bytes(info.path, size - footer_len - 8, size - len(tail)) + tail
    meta = _footer_metadata(tail[-(footer_len + 8) :], chunk.url)
    data_end = size - footer_len - 8
    ranges: list[tuple[int, int]] = []
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        for c in range(group.num_columns):
            col = group.column(c)
            if col.path_in_schema not in names:
                continue
            start = col.data_page_offset
            if col.has_dictionary_page and col.dictionary_page_offset is not None:
                start = min(start, col.dictionary_page_offset)
            end = start + col.total_compressed_size
            if not 4 <= start < end <= data_end:
                raise CorruptDatasetError(f"{chunk.url}: column {col.path_in_schema} lies outside the object")
            if start < size - len(tail):  # else it came with the footer
                ranges.append((start, end))
    reader = _KnownRanges(size, lambda s, e: st.read_bytes(info.path, s, e))
    reader.add(size - len(tail), tail)
    reader.add(0, b"PAR1")
    for start, end in _coalesce(ranges):
        reader.add(start, st.read_bytes(info.path, start, end))
    return decode_chunk(reader, chunk.url, names, info.records)  # type: ignore[arg-type]


def _footer_metadata(footer: bytes, where: str) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(pa.BufferReader(b"PAR1" + footer))
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise CorruptDatasetError(f"{where}: not a valid chunk object ({exc})") from None


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for start, end in sorted(ranges):
        if out and start - out[-1][1] <= COALESCE_GAP:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


class CountingStorage(Storage):
    """A :class:`Storage` that counts read requests and bytes (for ``--stats``).

    Args:
        inner: The storage to read through (its configuration is shared).
    """

    def __init__(self, inner: Storage) -> None:
        self.__dict__.update(inner.__dict__)  # same URL, options and client
        self.requests = 0
        self.bytes_read = 0
        self.data_requests = 0
        self.data_bytes = 0
        self._count_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_count_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._count_lock = threading.Lock()

    def read_bytes(self, rel: str, start: int | None = None, end: int | None = None) -> bytes:
        """Read like :meth:`Storage.read_bytes`, counting the request and bytes."""
        data = super().read_bytes(rel, start, end)
        with self._count_lock:
            self.requests += 1
            self.bytes_read += len(data)
            if rel.startswith("data/"):
                self.data_requests += 1
                self.data_bytes += len(data)
        return data


# --------------------------------------------------------------------------
# Filters: a small, safe expression language evaluated with pyarrow compute
# --------------------------------------------------------------------------

_INT, _STR, _BOOL = "int", "str", "bool"
# pyarrow.compute function names (the module is imported when a filter is
# compiled: a plain count never needs it, and it takes ~50 ms to import).
_CMP = {
    ast.Eq: "equal",
    ast.NotEq: "not_equal",
    ast.Lt: "less",
    ast.LtE: "less_equal",
    ast.Gt: "greater",
    ast.GtE: "greater_equal",
}
_CMP_TEXT = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_ARITH = {ast.Add: "add_checked", ast.Sub: "subtract_checked", ast.Mult: "multiply_checked"}
_BITS = {ast.BitAnd: "bit_wise_and", ast.BitOr: "bit_wise_or", ast.BitXor: "bit_wise_xor"}
_LOGIC = {ast.BitAnd: "and_", ast.BitOr: "or_", ast.BitXor: "xor"}
_STR_COLUMNS = frozenset(COLUMNS) - INT_COLUMNS
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

Evaluator = Callable[[pa.Table], Any]


def _show(text: str) -> str:
    """Quote a filter for a one-line message (long ones are shortened)."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


@dataclass(frozen=True)
class RecordFilter:
    """A compiled ``--filter`` expression.

    Attributes:
        text: The expression as written.
        columns: The record columns it reads.
    """

    text: str
    columns: tuple[str, ...]
    _fn: Evaluator = field(repr=False, compare=False)

    def mask(self, table: pa.Table) -> pa.Array:
        """Evaluate the filter on a table; return a boolean mask (one per row)."""
        try:
            result = self._fn(table)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise FilterError(f"filter {_show(self.text)}: {str(exc).splitlines()[0]}") from None
        if isinstance(result, pa.Scalar):
            return _bool_array(np.full(table.num_rows, bool(result.as_py())))
        if isinstance(result, pa.ChunkedArray):
            result = result.combine_chunks()
        return result


def compile_filter(text: str) -> RecordFilter:
    """Compile a filter expression on record columns.

    The syntax is Python's expression syntax restricted to: column names
    (``qname flag rname pos end mapq cigar rnext pnext tlen seq qual tags``),
    integer and string literals, ``True``/``False``, comparisons
    (``== != < <= > >=``, chained), ``and``/``or``/``not``, integer
    arithmetic ``+ - *``, bitwise ``& | ^ ~`` on integers, ``x in (a, b)``
    membership, and ``"text" in column`` substring tests. As in Python,
    ``flag & 1024 == 0`` means ``(flag & 1024) == 0``. Nothing is ever
    evaluated by Python: the syntax tree is translated into pyarrow compute
    calls.

    Args:
        text: The expression, e.g. ``mapq >= 30 and flag & 1024 == 0``.

    Returns:
        The compiled filter.

    Raises:
        FilterError: For a syntax error, an unknown column, a type mismatch,
            or an expression that is not a condition.
    """
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"filter is too long ({len(text)} characters, at most {MAX_FILTER_CHARS})")
    try:
        # Python warns on stderr about some texts (``30and``): the message below is the one line.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise FilterError(f"filter {_show(text)}: syntax error at column {exc.offset or 0}") from None
    except (ValueError, RecursionError, MemoryError):
        raise FilterError(f"filter {_show(text)}: cannot parse") from None
    used: set[str] = set()
    try:
        fn, kind = _compile(tree.body, text, used)
    except RecursionError:
        raise FilterError(f"filter {_show(text)}: too deeply nested") from None
    if kind != _BOOL:
        raise FilterError(f"filter {_show(text)}: not a condition (it gives {kind}, e.g. write 'mapq >= 30')")
    return RecordFilter(text, tuple(c for c in COLUMNS if c in used), fn)


def _compile(node: ast.AST, text: str, used: set[str]) -> tuple[Evaluator, str]:
    import pyarrow.compute as pc

    def fail(msg: str) -> FilterError:
        return FilterError(f"filter {_show(text)}: {msg}")

    if isinstance(node, ast.Name):
        name = node.id
        if name not in COLUMNS:
            raise fail(f"unknown column {name!r}; columns are {', '.join(COLUMNS)}")
        used.add(name)
        if name in INT_COLUMNS:
            return (lambda t: pc.cast(t.column(name), pa.int64())), _INT
        return (lambda t: t.column(name)), _STR
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            scalar = _const_array([value], _BOOL)[0]
            return (lambda t: scalar), _BOOL
        if isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise fail(f"integer {value} out of range")
            scalar = _const_array([value], _INT)[0]
            return (lambda t: scalar), _INT
        if isinstance(value, str):
            scalar = _const_array([value], _STR)[0]
            return (lambda t: scalar), _STR
        raise fail(f"unsupported literal {value!r}")
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, text, used) for v in node.values]
        if any(k != _BOOL for _, k in parts):
            raise fail("'and'/'or' need conditions on both sides")
        op = pc.and_ if isinstance(node.op, ast.And) else pc.or_
        fns = [f for f, _ in parts]

        def boolop(t: pa.Table) -> Any:
            acc = fns[0](t)
            for f in fns[1:]:
                acc = op(acc, f(t))
            return acc

        return boolop, _BOOL
    if isinstance(node, ast.UnaryOp):
        operand, kind = _compile(node.operand, text, used)
        if isinstance(node.op, ast.Not):
            if kind != _BOOL:
                raise fail("'not' needs a condition (use ~ for a bitwise not)")
            return (lambda t: pc.invert(operand(t))), _BOOL
        if isinstance(node.op, ast.Invert):
            if kind == _INT:
                return (lambda t: pc.bit_wise_not(operand(t))), _INT
            if kind == _BOOL:
                return (lambda t: pc.invert(operand(t))), _BOOL
        if isinstance(node.op, ast.USub) and kind == _INT:
            return (lambda t: pc.negate_checked(operand(t))), _INT
        if isinstance(node.op, ast.UAdd) and kind == _INT:
            return operand, _INT
        raise fail(f"operator {type(node.op).__name__} does not apply to {kind}")
    if isinstance(node, ast.BinOp):
        left, lk = _compile(node.left, text, used)
        right, rk = _compile(node.right, text, used)
        op_type = type(node.op)
        if op_type in _ARITH and lk == rk == _INT:
            arith = getattr(pc, _ARITH[op_type])
            return (lambda t: arith(left(t), right(t))), _INT
        if op_type in _BITS and lk == rk == _INT:
            bits = getattr(pc, _BITS[op_type])
            return (lambda t: bits(left(t), right(t))), _INT
        if op_type in _LOGIC and lk == rk == _BOOL:
            logic = getattr(pc, _LOGIC[op_type])
            return (lambda t: logic(left(t), right(t))), _BOOL
        raise fail(f"operator {op_type.__name__} does not apply to {lk} and {rk}")
    if isinstance(node, ast.Compare):
        if any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            if len(node.ops) != 1:
                raise fail("'in' cannot be chained with other comparisons")
            member = _compile_in(node.left, node.comparators[0], text, used, fail)
            if isinstance(node.ops[0], ast.NotIn):
                return (lambda t: pc.invert(member(t))), _BOOL
            return member, _BOOL
        tests: list[Evaluator] = []
        left, lk = _compile(node.left, text, used)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right, rk = _compile(comparator, text, used)
            if type(op) not in _CMP:
                raise fail(f"unsupported comparison {type(op).__name__}")
            if lk != rk or lk == _BOOL:
                raise fail(f"cannot compare {lk} with {rk} using {_CMP_TEXT[type(op)]}")
            tests.append(_comparison(getattr(pc, _CMP[type(op)]), left, right))
            left, lk = right, rk

        def chain(t: pa.Table) -> Any:
            acc = tests[0](t)
            for f in tests[1:]:
                acc = pc.and_(acc, f(t))
            return acc

        return chain, _BOOL
    raise fail(f"unsupported syntax {type(node).__name__}")


def _comparison(cmp: Callable[..., Any], left: Evaluator, right: Evaluator) -> Evaluator:
    return lambda t: cmp(left(t), right(t))


def _compile_in(
    left_node: ast.AST,
    right_node: ast.AST,
    text: str,
    used: set[str],
    fail: Callable[[str], FilterError],
) -> Evaluator:
    import pyarrow.compute as pc

    if isinstance(right_node, (ast.Tuple, ast.List, ast.Set)):
        left, lk = _compile(left_node, text, used)
        values: list[int | str] = []
        want = int if lk == _INT else str
        for elt in right_node.elts:
            # A signed number is a unary operator on a literal in Python's syntax tree.
            sign = 1
            while isinstance(elt, ast.UnaryOp) and isinstance(elt.op, (ast.USub, ast.UAdd)):
                sign = -sign if isinstance(elt.op, ast.USub) else sign
                elt = elt.operand
            if not isinstance(elt, ast.Constant) or isinstance(elt.value, bool):
                raise fail("'in' needs a list of literals, e.g. rname in ('chr1', 'chr2')")
            value = elt.value
            if sign < 0:
                if not isinstance(value, int):
                    raise fail("'in' needs a list of literals, e.g. rname in ('chr1', 'chr2')")
                value = -value
            if lk == _BOOL or not isinstance(value, want):
                raise fail(f"the 'in' list must hold {lk} literals")
            if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
                raise fail(f"integer {value} out of range")
            values.append(value)
        value_set = _const_array(values, lk)
        return lambda t: pc.is_in(left(t), value_set=value_set)
    if (
        isinstance(right_node, ast.Name)
        and right_node.id in _STR_COLUMNS
        and isinstance(left_node, ast.Constant)
        and isinstance(left_node.value, str)
    ):
        column, _ = _compile(right_node, text, used)
        pattern = left_node.value
        return lambda t: pc.match_substring(column(t), pattern)
    raise fail("'in' needs a list of literals on the right, or \"text\" in a text column")


# --------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------


def _ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int) -> Iterator[Any]:
    """Yield ``fn(item)`` for each item, in order, computing up to ``workers`` at once.

    At most ``2 * workers`` results wait in memory; an exception is raised at
    its item's turn, and pending work is cancelled when the consumer stops.
    """
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    yield from ordered_map(fn, items, ThreadPoolExecutor(workers, thread_name_prefix="bams3-query"), workers)


def _check_workers(workers: int) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidArgumentError(f"workers/--parallel must be a positive integer, got {workers!r}")
    return workers


def _overlap(table: pa.Table, intervals: tuple[tuple[int, int], ...], where: str) -> npt.NDArray[np.bool_]:
    """Return which records overlap any of the sorted, disjoint intervals (htslib's rule)."""
    p0 = _values(table.column("pos"), where) - 1  # 0-based first base
    q = _values(table.column("end"), where)  # 0-based exclusive end
    if len(intervals) == 1:
        s, e = intervals[0]
        return (p0 < e) & (q > s)
    starts = np.fromiter((s for s, _ in intervals), np.int64, len(intervals))
    ends = np.fromiter((e for _, e in intervals), np.int64, len(intervals))
    # Intervals are disjoint and sorted, so ends are sorted too: the first
    # interval ending after a record's start is the only one to check.
    idx = np.searchsorted(ends, p0, side="right")
    ok = idx < len(ends)
    hit = np.zeros(len(p0), dtype=bool)
    hit[ok] = starts[idx[ok]] < q[ok]
    return hit


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

    def _matching(self, task: ChunkTask, cols: list[str], cache: _ChunkCache) -> pa.Table:
        table = cache.read(task.chunk, cols)
        mask = None
        if not task.whole:
            mask = _bool_array(
                _overlap(table, self.plan.selections[task.selection].intervals, task.chunk.url)
            )
        if self.record_filter is not None:
            import pyarrow.compute as pc

            fmask = self.record_filter.mask(table)
            mask = fmask if mask is None else pc.and_(mask, fmask)
        return table if mask is None else table.filter(mask)

    def tables(self, workers: int = DEFAULT_WORKERS) -> Iterator[pa.Table]:
        """Yield the matching records chunk by chunk, in output order.

        Yields:
            Tables with the requested columns (some may be empty).
        """
        workers = _check_workers(workers)
        cols = self.read_columns()
        out = self.out_columns
        cache = _ChunkCache(self.plan.tasks, self.storage, 2 * workers)

        def run(task: ChunkTask) -> pa.Table:
            return self._matching(task, cols, cache).select(out)

        yield from _ordered_map(run, self.plan.tasks, workers)

    def table(self, workers: int = DEFAULT_WORKERS) -> pa.Table:
        """Return every matching record as one table, in output order."""
        parts = [t for t in self.tables(workers) if t.num_rows]
        if not parts:
            return subschema(self.out_columns).empty_table()
        return pa.concat_tables(parts)

    def count(self, workers: int = DEFAULT_WORKERS) -> int:
        """Count the matching records (``samtools view -c``), reading as little as possible.

        Chunks wholly inside a region count from the index. The others are
        grouped by chunk object, since a count needs no order: each object is
        read once, for ``pos`` and ``end`` (plus the filter's columns), however
        many regions it serves and whatever the number of workers.
        """
        workers = _check_workers(workers)
        total = 0
        groups: dict[str, list[ChunkTask]] = {}
        for task in self.plan.tasks:
            if task.whole and self.record_filter is None:
                total += task.chunk.info.records
            else:
                groups.setdefault(task.chunk.info.path, []).append(task)
        cols = self.read_columns(count=True)

        def count_group(tasks: list[ChunkTask]) -> int:
            table = read_chunk(tasks[0].chunk, cols, self.storage)
            return sum(self._count_in(table, task) for task in tasks)

        for n in _ordered_map(count_group, groups.values(), workers):
            total += n
        return total

    def _count_in(self, table: pa.Table, task: ChunkTask) -> int:
        mask = (
            None
            if task.whole
            else _overlap(table, self.plan.selections[task.selection].intervals, task.chunk.url)
        )
        if self.record_filter is None:
            return int(table.num_rows if mask is None else np.count_nonzero(mask))
        import pyarrow.compute as pc

        fmask = self.record_filter.mask(table)
        both = fmask if mask is None else pc.and_(_bool_array(mask), fmask)
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
            return read_chunk(chunk, columns, self._storage)
        if owner:
            try:
                shared.set_result(read_chunk(chunk, columns, self._storage))
            except BaseException as exc:
                shared.set_exception(exc)
        return shared.result()


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


#: Records formatted at a time by :func:`write_sam`.
SAM_SLICE_ROWS = 16_384


def sam_bytes(table: pa.Table) -> bytes | memoryview:
    """Format records as SAM text (one line per record, newline-terminated)."""
    import pyarrow.compute as pc

    from bams3_spark.format.sam import sam_lines

    if table.num_rows == 0:
        return b""
    lines = sam_lines(table)
    with_nl = pc.binary_join_element_wise(lines, pa.scalar("\n", lines.type), pa.scalar("", lines.type))
    if isinstance(with_nl, pa.ChunkedArray):
        with_nl = with_nl.combine_chunks()
    offsets = with_nl.buffers()[1]
    data = with_nl.buffers()[2]
    width = 8 if pa.types.is_large_string(with_nl.type) else 4
    off = memoryview(offsets).cast("q" if width == 8 else "i")
    first, last = off[with_nl.offset], off[with_nl.offset + len(with_nl)]
    return memoryview(data)[first:last]


def write_sam(out: IO[bytes] | IO[str], tables: Iterable[pa.Table], header: str | None = None) -> int:
    """Write SAM text (optional header, then records) to a stream; return the record count."""
    binary = not isinstance(out, io.TextIOBase)
    target: Any = out
    if not binary and hasattr(out, "buffer"):
        out.flush()
        target, binary = out.buffer, True

    def put(data: bytes | memoryview | str) -> None:
        if binary:
            target.write(data.encode() if isinstance(data, str) else data)
        else:
            target.write(data if isinstance(data, str) else bytes(data).decode())

    if header:
        put(header)
    n = 0
    for table in tables:
        # Formatting makes several text-sized intermediates: in slices they
        # stay in cache and a chunk never needs them all at once.
        for offset in range(0, table.num_rows, SAM_SLICE_ROWS):
            put(sam_bytes(table.slice(offset, SAM_SLICE_ROWS)))
        n += table.num_rows
    target.flush()
    return n


def write_bam(path: str, tables: Iterable[pa.Table], header: str, threads: int = 1) -> int:
    """Write a BAM file (with ``header``) from record tables; return the record count."""
    from bams3_spark.bam import write_bam as _write_bam

    return _write_bam(path, header, tables, threads=threads)


def output_format(path: str) -> str:
    """Return ``sam`` or ``bam`` from an output path's extension.

    Raises:
        InvalidArgumentError: For another extension.
    """
    lower = path.lower()
    if lower == "-" or lower.endswith(".sam"):
        return "sam"
    if lower.endswith(".bam"):
        return "bam"
    raise InvalidArgumentError(f"{path}: unsupported output format (use a .sam or .bam file name)")


def warn_all(messages: Iterable[str]) -> None:
    """Issue each plan warning as a Python warning (library use)."""
    for msg in messages:
        warnings.warn(msg, stacklevel=3)
