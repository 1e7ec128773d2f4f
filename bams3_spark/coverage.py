"""Local coverage engine: per-base depth from BAMS3 chunk tables.

This module computes read depth for one reference at a time from the Arrow
tables of its chunks (see :mod:`bams3_spark.format.schema`) and reproduces the
output of ``mosdepth`` (0.3.3) and ``samtools depth`` (1.16) exactly. It uses
numpy and pyarrow only, so the Spark coverage job can call it inside executors.

Three counting modes exist (:class:`CoverageOptions`):

* ``"mosdepth"`` (default): mosdepth without ``-x``. Every aligned block of a
  read (CIGAR ``M``/``=``/``X``) counts; ``D``/``N`` do not. Overlapping
  proper-pair mates are counted once, with mosdepth's exact rule (see
  :class:`DepthAccumulator`).
* ``"fast"``: ``mosdepth -x``. The whole span ``pos..end`` of each read counts
  and mates are not corrected.
* ``"samtools"``: ``samtools depth``. CIGAR-aware like mosdepth (``D`` counts
  with ``count_deletions``, i.e. ``-J``) and no mate correction.

Semantics were taken from reading the public sources: ``mosdepth.nim`` and
``depthstat.nim`` of brentp/mosdepth (the ``coverage``, ``gen_start_ends``,
``imean``, ``write_distribution``, ``write_summary``, ``write_thresholds`` and
``main`` procedures), and ``bam2depth.c`` of samtools (the 2021 rewrite,
``fastdepth_core``/``add_depth``). Every behaviour relied on here is checked
against the installed binaries by ``tests/test_coverage.py``.

Typical use::

    acc = DepthAccumulator(length, CoverageOptions(), name="chr1")
    for table in chunk_tables_of_chr1:          # coordinate order
        acc.add(table)
    depth = acc.finish()                        # ReferenceDepth
    intervals_table(depth)                      # rname, start, end, depth
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Union

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

logger = logging.getLogger(__name__)

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]

#: Counting modes accepted by :class:`CoverageOptions`.
MODES: tuple[str, ...] = ("mosdepth", "fast", "samtools")

#: UNMAP | SECONDARY | QCFAIL | DUP: the default of ``mosdepth -F`` and the
#: default filter of ``samtools depth``.
DEFAULT_FLAG_EXCLUDE = 1796

FLAG_PROPER_PAIR = 0x2
FLAG_SUPPLEMENTARY = 0x800

#: mosdepth clamps depths above this when building distributions
#: (``MAX_COVERAGE`` in mosdepth.nim) ...
_DIST_MAX_COVERAGE = 400_000
#: ... and replaces them by this value.
_DIST_CLAMPED = _DIST_MAX_COVERAGE - 10
#: Highest slot of mosdepth's per-window region distribution (``--by N``).
_REGION_DIST_WINDOW_CAP = 999
#: mosdepth's ``depth_stat.min_depth`` starts at ``uint32.high``.
_UINT32_MAX = 2**32 - 1

#: Columns the engine reads in each mode (for column projection).
FAST_COLUMNS: tuple[str, ...] = ("flag", "pos", "end", "mapq")
CIGAR_COLUMNS: tuple[str, ...] = ("flag", "pos", "end", "mapq", "cigar")
MATE_COLUMNS: tuple[str, ...] = (
    "qname", "flag", "pos", "end", "mapq", "cigar", "rnext", "pnext",
)


def required_columns(options: CoverageOptions) -> tuple[str, ...]:
    """Return the record columns :meth:`DepthAccumulator.add` needs.

    Args:
        options: The coverage options.

    Returns:
        Column names in schema order.
    """
    if options.mode == "fast":
        return FAST_COLUMNS
    if options.mode == "samtools":
        return CIGAR_COLUMNS
    return MATE_COLUMNS


@dataclass(frozen=True)
class CoverageOptions:
    """How reads are filtered and counted.

    Attributes:
        mode: ``"mosdepth"`` (default), ``"fast"`` (``mosdepth -x``) or
            ``"samtools"`` (``samtools depth``).
        mapq: Reads with a MAPQ below this are ignored (``-Q`` of both tools).
        flag_exclude: Reads with any of these FLAG bits are ignored (mosdepth
            ``-F``; for samtools this is the final filter after ``-g``/``-G``).
        flag_include: If non-zero, only reads with at least one of these bits
            are counted (mosdepth ``-i``).
        count_deletions: Count ``D`` CIGAR operations (``samtools depth -J``);
            only valid with mode ``"samtools"``.
    """

    mode: str = "mosdepth"
    mapq: int = 0
    flag_exclude: int = DEFAULT_FLAG_EXCLUDE
    flag_include: int = 0
    count_deletions: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"coverage mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        for name, value, high in (
            ("mapq", self.mapq, 255),
            ("flag_exclude", self.flag_exclude, 0xFFFF),
            ("flag_include", self.flag_include, 0xFFFF),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an integer; got {value!r}")
            if not 0 <= int(value) <= high:
                raise ValueError(f"{name} must be between 0 and {high}; got {value}")
        if not isinstance(self.count_deletions, bool):
            raise ValueError(f"count_deletions must be a bool; got {self.count_deletions!r}")
        if self.count_deletions and self.mode != "samtools":
            raise ValueError("count_deletions (samtools depth -J) requires mode 'samtools'")


# --------------------------------------------------------------------------
# CIGAR parsing (vectorized over the distinct CIGAR strings of a chunk)
# --------------------------------------------------------------------------

# BAM op codes: M I D N S H P = X B
_OPS = "MIDNSHP=XB"
_LUT = np.full(256, -1, dtype=np.int8)
for _i, _c in enumerate(_OPS):
    _LUT[ord(_c)] = _i
_LUT[ord("0"):ord("9") + 1] = -2
_CONSUMES_REF = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 0], dtype=np.int64)
# Blocks that add depth: M, =, X (mosdepth's ops consuming query and
# reference; samtools' BAM_CMATCH/CEQUAL/CDIFF) ...
_BLOCK_OPS = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1, 0], dtype=bool)
# ... plus D for samtools depth -J.
_BLOCK_OPS_DEL = np.array([1, 0, 1, 0, 0, 0, 0, 1, 1, 0], dtype=bool)
_POW10 = 10 ** np.arange(19, dtype=np.int64)


@dataclass(frozen=True)
class _Cigars:
    """Parsed CIGAR strings: op counts and reference blocks per string."""

    n_ops: I64  # number of CIGAR operations per string ("*" -> 0)
    block_ptr: I64  # blocks of string i are block_*[ptr[i]:ptr[i+1]]
    block_start: I64  # reference offset of each block from the read start
    block_end: I64


def _as_string_array(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Return a column as one plain (large_)string array without nulls."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())
    if arr.null_count:
        raise ValueError("string column contains nulls; BAMS3 record columns are non-null")
    return arr


def _as_int64(col: pa.ChunkedArray | pa.Array) -> I64:
    """Return an integer column as a numpy int64 array."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        raise ValueError("integer column contains nulls; BAMS3 record columns are non-null")
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)


def _string_bytes(arr: pa.Array) -> tuple[npt.NDArray[np.uint8], I64]:
    """Return (bytes, offsets relative to bytes) of a string array."""
    bufs = arr.buffers()
    otype = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=otype)[arr.offset: arr.offset + len(arr) + 1]
    offsets = offsets.astype(np.int64)
    data = (
        np.frombuffer(bufs[2], dtype=np.uint8)
        if bufs[2] is not None
        else np.zeros(0, dtype=np.uint8)
    )
    data = data[offsets[0]: offsets[-1]]
    return data, offsets - offsets[0]


def _parse_cigars(cigars: pa.Array, count_deletions: bool = False) -> _Cigars:
    """Parse CIGAR strings without a per-string Python loop.

    Args:
        cigars: SAM CIGAR texts (``"*"`` or ``""`` for none).
        count_deletions: Treat ``D`` as a depth block (samtools ``-J``).

    Returns:
        Op counts and reference blocks of every string.

    Raises:
        ValueError: On a malformed CIGAR string.
    """
    n = len(cigars)
    data, offsets = _string_bytes(_as_string_array(cigars))
    lengths = np.diff(offsets)
    str_of_byte = np.repeat(np.arange(n, dtype=np.int64), lengths)
    first_byte = np.zeros(n, dtype=np.uint8)
    nonempty = lengths > 0
    first_byte[nonempty] = data[offsets[:-1][nonempty]]
    no_cigar = (lengths == 0) | ((lengths == 1) & (first_byte == ord("*")))
    keep = ~no_cigar[str_of_byte]
    data = data[keep]
    str_of_byte = str_of_byte[keep]

    code = _LUT[data]
    if (code == -1).any():
        bad = int(str_of_byte[np.flatnonzero(code == -1)[0]])
        raise ValueError(f"invalid CIGAR string {cigars[bad].as_py()!r}")
    is_op = code >= 0
    op_pos = np.flatnonzero(is_op)
    op_code = code[op_pos].astype(np.int64)
    op_str = str_of_byte[op_pos]
    n_op = len(op_pos)

    digit_idx = np.flatnonzero(~is_op)
    op_of_digit = np.cumsum(is_op)[digit_idx]  # ops strictly before the digit
    bad_digit = op_of_digit >= n_op
    if not bad_digit.any():
        bad_digit = str_of_byte[digit_idx] != op_str[op_of_digit]
    if bad_digit.any():
        bad = int(str_of_byte[digit_idx[np.flatnonzero(bad_digit)[0]]])
        raise ValueError(f"invalid CIGAR string {cigars[bad].as_py()!r}")
    n_digits = np.bincount(op_of_digit, minlength=n_op)
    if n_op and ((n_digits == 0) | (n_digits > 10)).any():
        bad = int(op_str[np.flatnonzero((n_digits == 0) | (n_digits > 10))[0]])
        raise ValueError(f"invalid CIGAR string {cigars[bad].as_py()!r}")
    exponent = op_pos[op_of_digit] - digit_idx - 1
    values = (data[digit_idx].astype(np.int64) - ord("0")) * _POW10[exponent]
    # Float weights are exact here: every partial sum is an integer < 2**53.
    op_len = np.rint(np.bincount(op_of_digit, weights=values, minlength=n_op)).astype(np.int64)

    ref_len = op_len * _CONSUMES_REF[op_code]
    cum = np.cumsum(ref_len)
    first_op = np.searchsorted(op_str, np.arange(n), side="left")
    base = np.concatenate(([0], cum))[first_op]
    op_off = cum - ref_len - base[op_str]

    block_table = _BLOCK_OPS_DEL if count_deletions else _BLOCK_OPS
    is_block = block_table[op_code] & (op_len > 0)
    block_str = op_str[is_block]
    block_start = op_off[is_block]
    block_end = block_start + op_len[is_block]
    # Merge blocks that touch (separated only by I/S/H/P), as mosdepth's
    # gen_start_ends does: its mate-overlap sweep relies on a read never
    # having an end and a start event at the same position.
    if len(block_str):
        new = np.ones(len(block_str), dtype=bool)
        new[1:] = (block_str[1:] != block_str[:-1]) | (block_start[1:] != block_end[:-1])
        last = np.concatenate((np.flatnonzero(new)[1:] - 1, [len(new) - 1]))
        block_str = block_str[new]
        block_end = block_end[last]
        block_start = block_start[new]
    block_ptr = np.concatenate(([0], np.cumsum(np.bincount(block_str, minlength=n))))
    return _Cigars(
        n_ops=np.bincount(op_str, minlength=n).astype(np.int64),
        block_ptr=block_ptr.astype(np.int64),
        block_start=block_start,
        block_end=block_end,
    )


def _expand_blocks(parsed: _Cigars, codes: I64, starts: I64) -> tuple[I64, I64, I64]:
    """Return (owner index, start, end) of every reference block of reads.

    Args:
        parsed: Parsed distinct CIGARs.
        codes: Index into ``parsed`` of each read's CIGAR.
        starts: 0-based start of each read.
    """
    first = parsed.block_ptr[codes]
    count = parsed.block_ptr[codes + 1] - first
    total = int(count.sum())
    owner = np.repeat(np.arange(len(codes), dtype=np.int64), count)
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    bi = np.repeat(first, count) + within
    base = starts[owner]
    return owner, base + parsed.block_start[bi], base + parsed.block_end[bi]


# --------------------------------------------------------------------------
# Per-reference depth
# --------------------------------------------------------------------------


class ReferenceDepth:
    """Final depth of one reference.

    Holds mosdepth's per-base array (``length + 1`` values; the extra value is
    the depth "after" the last base, normally 0, which mosdepth reads for a BED
    region ending at ``length + 1``) plus the facts mosdepth and samtools use to
    decide which rows they print.

    Attributes:
        name: Reference name.
        length: Reference length in bases.
        has_records: At least one record lies on the reference, filtered or
            not (mosdepth prints summary rows only for such references; its
            ``coverage`` proc returns -2 otherwise).
        n_passing: Records that passed the filters (``samtools depth -a``
            prints a reference only if this is non-zero).
        options: Options used to compute the depth.
        extent: Positions ``samtools depth -a`` prints: the reference length,
            or more when passing reads extend past the end (mode
            ``"samtools"`` only; samtools prints those positions too).
    """

    __slots__ = ("name", "length", "has_records", "n_passing", "options", "extent", "_buf")

    def __init__(
        self,
        name: str,
        length: int,
        depth: npt.ArrayLike | None = None,
        *,
        has_records: bool = True,
        n_passing: int = 0,
        options: CoverageOptions | None = None,
    ) -> None:
        """Build a depth from a per-base array.

        Args:
            name: Reference name.
            length: Reference length.
            depth: ``length`` (or ``length + 1``) per-base depths; None for all
                zero.
            has_records: See the class attributes.
            n_passing: See the class attributes.
            options: Options used to compute the depth.
        """
        if length < 0:
            raise ValueError(f"reference length must be >= 0; got {length}")
        buf = np.zeros(length + 2, dtype=np.int32)
        if depth is not None:
            arr = np.asarray(depth)
            if arr.shape not in ((length,), (length + 1,)):
                raise ValueError(f"depth must have {length} or {length + 1} values; got {arr.shape}")
            buf[: len(arr)] = arr
        self.name = name
        self.length = length
        self.has_records = has_records
        self.n_passing = n_passing
        self.options = options or CoverageOptions()
        self.extent = length
        # buf[:length] per-base depth, buf[length] mosdepth's trailing value,
        # buf[length + 1] a 0 sentinel so that reduceat can address length+1.
        self._buf = buf

    @classmethod
    def empty(cls, name: str, length: int, options: CoverageOptions | None = None) -> ReferenceDepth:
        """Return the depth of a reference without any record."""
        return cls(name, length, None, has_records=False, n_passing=0, options=options)

    @classmethod
    def _from_buffer(
        cls, name: str, length: int, buf: I32, has_records: bool, n_passing: int,
        options: CoverageOptions, extent: int,
    ) -> ReferenceDepth:
        obj = cls.__new__(cls)
        obj.extent = extent
        obj.name = name
        obj.length = length
        obj.has_records = has_records
        obj.n_passing = n_passing
        obj.options = options
        obj._buf = buf
        return obj

    @property
    def depth(self) -> I32:
        """Per-base depth, ``length`` values (0-based positions); read-only view."""
        view = self._buf[: self.length]
        view.flags.writeable = False
        return view

    @property
    def _padded(self) -> I32:
        """mosdepth's ``arr`` (``length + 1`` values) plus one 0 sentinel."""
        return self._buf

    def intervals(self) -> tuple[I64, I64, I32]:
        """Run-length encode the depth like mosdepth's per-base output.

        Returns:
            ``(starts, ends, depth)``: 0-based starts, exclusive ends and depth
            of maximal runs of equal depth covering the whole reference
            (including 0-depth runs).
        """
        d = self._buf[: self.length]
        if self.length == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
        change = np.flatnonzero(d[1:] != d[:-1]) + 1
        starts = np.concatenate(([0], change)).astype(np.int64)
        ends = np.concatenate((change, [self.length])).astype(np.int64)
        return starts, ends, d[starts].astype(np.int32)


@dataclass
class _Pending:
    """First mates stored by mosdepth's ``seen`` table, kept between chunks."""

    qname: pa.Array
    start: I64
    stop: I64
    n_ops: I64
    cigar: pa.Array

    @classmethod
    def empty(cls) -> _Pending:
        z = np.zeros(0, dtype=np.int64)
        return cls(pa.array([], pa.string()), z, z.copy(), z.copy(), pa.array([], pa.string()))

    def __len__(self) -> int:
        return len(self.start)


_S1, _S2, _E = 0, 1, 2  # store / store-if-unseen / take (see _mate_overlaps)


class DepthAccumulator:
    """Accumulate the depth of one reference from its chunk tables.

    Call :meth:`add` once per chunk table, in coordinate order (the order of
    the source BAM), then :meth:`finish`. The result is exact across chunk
    boundaries: reads are added to a difference array covering the whole
    reference (mosdepth's ``int32`` array of ``length + 1``), whatever chunk
    they come from, and the mate-overlap state is carried between calls.

    Mate-overlap correction (mode ``"mosdepth"``), as in mosdepth's
    ``coverage`` proc: a read passing the filters that has the proper-pair bit
    (0x2) and not the supplementary bit (0x800) is *stored* under its QNAME if
    its mate is on the same reference, ``stop > mate_pos`` and either
    ``start < mate_pos``, or ``start == mate_pos`` and no read of that QNAME is
    stored yet (``stop`` is htslib's ``bam_endpos``; positions 0-based).
    Otherwise, if a read of that QNAME is stored, it is removed and the overlap
    is subtracted: when both reads have a single CIGAR operation mosdepth
    subtracts ``[rec.start, mate.stop)`` -- which *over*-subtracts when the
    stored mate extends past the later read (a known mosdepth behaviour that
    is reproduced here) -- otherwise it subtracts the intersection of the two
    reads' aligned blocks. Storing a QNAME again overwrites the stored read.
    The stored reads pending at the end of a chunk are kept for the next one.
    This is done with array operations; QNAMEs seen three or more times in a
    chunk (not produced by normal pairs) go through a small Python loop.
    """

    def __init__(self, ref_length: int, options: CoverageOptions | None = None, *, name: str = "") -> None:
        """Create an accumulator.

        Args:
            ref_length: Length of the reference (``@SQ LN``).
            options: Filtering and counting options.
            name: Reference name; ``rnext`` equal to it counts as "same
                reference" like ``"="``.
        """
        if isinstance(ref_length, bool) or not isinstance(ref_length, (int, np.integer)) or ref_length < 0:
            raise ValueError(f"ref_length must be a non-negative integer; got {ref_length!r}")
        self.name = name
        self.length = int(ref_length)
        self.options = options or CoverageOptions()
        self._buf = np.zeros(self.length + 2, dtype=np.int32)
        self._pending = _Pending.empty()
        self._last_pos = 0
        self._max_end = 0
        self._n_records = 0
        self._n_passing = 0
        self._finished = False

    @property
    def n_pending(self) -> int:
        """Number of stored first mates waiting for their mate."""
        return len(self._pending)

    # -- public API ---------------------------------------------------------

    def add(self, table: pa.Table | pa.RecordBatch) -> None:
        """Add one chunk of reads of this reference.

        Args:
            table: Records in coordinate order with at least
                :func:`required_columns` columns.

        Raises:
            ValueError: If called after :meth:`finish`, if reads are not
                coordinate-sorted, or on malformed values.
            KeyError: If a needed column is missing.
        """
        if self._finished:
            raise ValueError("DepthAccumulator.add() called after finish()")
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if table.num_rows == 0:
            return
        opts = self.options
        pos = _as_int64(table.column("pos"))
        placed = pos > 0
        if not placed.all():
            table = table.filter(pa.array(placed))
            pos = pos[placed]
            if len(pos) == 0:
                return
        if pos[0] < self._last_pos or (len(pos) > 1 and (np.diff(pos) < 0).any()):
            raise ValueError(f"reads of reference {self.name!r} are not coordinate-sorted")
        self._last_pos = int(pos[-1])
        self._n_records += len(pos)

        flag = _as_int64(table.column("flag"))
        mapq = _as_int64(table.column("mapq"))
        passing = (mapq >= opts.mapq) & ((flag & opts.flag_exclude) == 0)
        if opts.flag_include:
            passing &= (flag & opts.flag_include) != 0
        sel = np.flatnonzero(passing)
        self._n_passing += len(sel)
        if len(sel) == 0:
            return
        start = pos[sel] - 1
        stop = _as_int64(table.column("end"))[sel]
        if opts.mode == "samtools":
            # samtools depth also reports positions past the reference end
            # that reads cover (mosdepth would fail): grow the array for them.
            max_end = int(stop.max())
            if max_end > self._max_end:
                self._max_end = max_end
                if max_end + 2 > len(self._buf):
                    grown = np.zeros(max_end + 2, dtype=np.int32)
                    grown[: len(self._buf)] = self._buf
                    self._buf = grown

        if opts.mode == "fast":
            # mosdepth -x: arr[rec.start] += 1; arr[rec.stop] -= 1
            self._add_events(start, stop)
            return

        # Take only the columns used, and only when some reads were dropped
        # (copying every column of the chunk was a large share of the time).
        all_pass = len(sel) == table.num_rows
        cigar_col = table.column("cigar")
        cigar = _as_string_array(cigar_col if all_pass else cigar_col.take(pa.array(sel)))
        enc = cigar.dictionary_encode()
        codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        parsed = _parse_cigars(enc.dictionary, opts.count_deletions)
        _, bstart, bend = _expand_blocks(parsed, codes, start)
        self._add_events(bstart, bend)

        if opts.mode == "mosdepth":
            flag_s = flag[sel]
            cand = np.flatnonzero(((flag_s & FLAG_PROPER_PAIR) != 0) & ((flag_s & FLAG_SUPPLEMENTARY) == 0))
            if len(cand):
                mates = table.select(["qname", "rnext", "pnext"]).take(pa.array(sel[cand]))
                self._mate_overlaps(mates, cand, start, stop, cigar, parsed.n_ops[codes])

    def finish(self) -> ReferenceDepth:
        """Return the final depth; the accumulator cannot be used afterwards."""
        if self._finished:
            raise ValueError("DepthAccumulator.finish() called twice")
        self._finished = True
        top = len(self._buf) - 2  # the length, or samtools' extent past it
        arr = self._buf[: top + 1]
        np.cumsum(arr, dtype=np.int32, out=arr)  # mosdepth's to_coverage
        self._buf[top + 1] = 0
        self._pending = _Pending.empty()
        return ReferenceDepth._from_buffer(
            self.name, self.length, self._buf, self._n_records > 0, self._n_passing, self.options,
            max(self.length, top),
        )

    # -- internals ----------------------------------------------------------

    def _add_events(self, plus: I64, minus: I64) -> None:
        """Add +1 at each ``plus`` and -1 at each ``minus`` position."""
        # A read past the reference end makes mosdepth 0.3.3 abort (index
        # out of its array); clip so that its part inside the reference
        # still counts. (samtools mode grew the array beforehand.)
        limit = len(self._buf) - 2
        for idx, sign in ((plus, 1), (minus, -1)):
            if len(idx) == 0:
                continue
            idx = np.clip(idx, 0, limit)
            # Count equal positions on sorted events (read starts nearly always
            # are), then one fancy-index add per distinct position: several
            # times faster than np.add.at or dense bincounts over the chunk.
            if len(idx) > 1 and bool((idx[1:] < idx[:-1]).any()):
                idx = np.sort(idx)
            first = np.concatenate(([0], np.flatnonzero(idx[1:] != idx[:-1]) + 1))
            counts = np.diff(np.concatenate((first, [len(idx)])))
            self._buf[idx[first]] += (sign * counts).astype(np.int32)

    def _mate_overlaps(
        self, mates: pa.Table, cand: I64, start: I64, stop: I64, cigar: pa.Array, n_ops: I64,
    ) -> None:
        """Apply mosdepth's mate-overlap rule to candidate rows of a chunk.

        Args:
            mates: ``qname``, ``rnext`` and ``pnext`` of the candidate rows.
            cand: Rows of the passing reads with proper-pair and not supplementary.
            start: 0-based start of every passing read.
            stop: ``bam_endpos`` of every passing read.
            cigar: CIGAR text of every passing read.
            n_ops: CIGAR op count of every passing read.
        """
        qn = _as_string_array(mates.column("qname")).cast(pa.large_string())
        rnext = _as_string_array(mates.column("rnext"))
        same_ref = pc.equal(rnext, "=")
        if self.name:
            same_ref = pc.or_(same_ref, pc.equal(rnext, self.name))
        same = np.asarray(same_ref.to_numpy(zero_copy_only=False), dtype=bool)
        mpos = _as_int64(mates.column("pnext")) - 1
        st = start[cand]
        sp = stop[cand]
        base = same & (sp > mpos)
        typ = np.full(len(cand), _E, dtype=np.int8)
        typ[base & (st == mpos)] = _S2
        typ[base & (st < mpos)] = _S1

        genc = qn.dictionary_encode()
        gcode = np.asarray(genc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        ngroups = len(genc.dictionary)
        if len(self._pending):
            pidx_arr = pc.index_in(genc.dictionary, value_set=self._pending.qname).fill_null(-1)
            pidx = np.asarray(pidx_arr.to_numpy(zero_copy_only=False), dtype=np.int64)
        else:
            pidx = np.full(ngroups, -1, dtype=np.int64)
        counts = np.bincount(gcode, minlength=ngroups)
        order = np.argsort(gcode, kind="stable")
        ptr = np.concatenate(([0], np.cumsum(counts)))
        first = order[ptr[:-1]]
        has_p = pidx >= 0
        is_store = typ != _E  # S1 or S2 when nothing is stored yet

        # Corrections: (rec row, mate row) within the chunk, (rec row, pending idx).
        rec_c: list[I64] = []
        mate_c: list[I64] = []
        rec_p: list[I64] = []
        mate_p: list[I64] = []
        add_rows: list[I64] = []
        remove_p: list[I64] = []

        # One read of the QNAME in this chunk.
        g1 = np.flatnonzero(counts == 1)
        b = first[g1]
        tb = typ[b]
        s = pidx[g1]
        hp = has_p[g1]
        remove_p.append(s[hp])
        add_rows.append(b[(tb == _S1) | ((tb == _S2) & ~hp)])
        take = hp & (tb != _S1)
        rec_p.append(b[take])
        mate_p.append(s[take])

        # Two reads of the QNAME in this chunk, nothing stored before.
        g2 = np.flatnonzero((counts == 2) & ~has_p)
        a = first[g2]
        b2 = order[ptr[g2] + 1]
        tb2 = typ[b2]
        a_stored = is_store[a]
        add_rows.append(b2[(a_stored & (tb2 == _S1)) | (~a_stored & is_store[b2])])
        pair = a_stored & (tb2 != _S1)
        rec_c.append(b2[pair])
        mate_c.append(a[pair])

        # Anything else (3+ reads of a QNAME, or 2 reads plus a stored one).
        slow = np.flatnonzero((counts >= 3) | ((counts == 2) & has_p))
        for g in slow.tolist():
            rows = order[ptr[g]: ptr[g + 1]].tolist()
            p0 = int(pidx[g])
            state: tuple[str, int] | None = ("p", p0) if p0 >= 0 else None
            for r in rows:
                t = typ[r]
                if t == _S1 or (t == _S2 and state is None):
                    state = ("c", r)
                elif state is not None:
                    if state[0] == "c":
                        rec_c.append(np.array([r]))
                        mate_c.append(np.array([state[1]]))
                    else:
                        rec_p.append(np.array([r]))
                        mate_p.append(np.array([state[1]]))
                    state = None
            if p0 >= 0 and state != ("p", p0):
                remove_p.append(np.array([p0]))
            if state is not None and state[0] == "c":
                add_rows.append(np.array([state[1]]))

        rc = np.concatenate(rec_c).astype(np.int64)
        mc = np.concatenate(mate_c).astype(np.int64)
        rp = np.concatenate(rec_p).astype(np.int64)
        mp = np.concatenate(mate_p).astype(np.int64)
        pend = self._pending
        cand_cigar = cigar.take(pa.array(cand))
        cand_nops = n_ops[cand]
        if len(rc) or len(rp):
            rec_rows = np.concatenate((rc, rp))
            self._subtract_overlaps(
                rec_start=st[rec_rows],
                rec_nops=cand_nops[rec_rows],
                rec_cigar=cand_cigar.take(pa.array(rec_rows)),
                mate_start=np.concatenate((st[mc], pend.start[mp])),
                mate_stop=np.concatenate((sp[mc], pend.stop[mp])),
                mate_nops=np.concatenate((cand_nops[mc], pend.n_ops[mp])),
                mate_cigar=pa.concat_arrays([
                    cand_cigar.take(pa.array(mc)).cast(pa.large_string()),
                    pend.cigar.take(pa.array(mp)).cast(pa.large_string()),
                ]),
            )

        rem = np.concatenate(remove_p).astype(np.int64)
        add = np.sort(np.concatenate(add_rows).astype(np.int64))
        if len(rem) or len(add):
            keep = np.ones(len(pend), dtype=bool)
            keep[rem] = False
            keep_idx = pa.array(np.flatnonzero(keep))
            add_idx = pa.array(add)
            self._pending = _Pending(
                qname=pa.concat_arrays([
                    pend.qname.take(keep_idx).cast(pa.large_string()),
                    qn.take(add_idx).cast(pa.large_string()),
                ]),
                start=np.concatenate((pend.start[keep], st[add])),
                stop=np.concatenate((pend.stop[keep], sp[add])),
                n_ops=np.concatenate((pend.n_ops[keep], cand_nops[add])),
                cigar=pa.concat_arrays([
                    pend.cigar.take(keep_idx).cast(pa.large_string()),
                    cand_cigar.take(add_idx).cast(pa.large_string()),
                ]),
            )

    def _subtract_overlaps(
        self, *, rec_start: I64, rec_nops: I64, rec_cigar: pa.Array,
        mate_start: I64, mate_stop: I64, mate_nops: I64, mate_cigar: pa.Array,
    ) -> None:
        """Remove the double-counted part of each (rec, stored mate) pair."""
        single = (rec_nops == 1) & (mate_nops == 1)
        # mosdepth: dec(arr[rec.start]); inc(arr[mate.stop])
        self._add_events(mate_stop[single], rec_start[single])
        multi = np.flatnonzero(~single)
        if len(multi) == 0:
            return
        # mosdepth sorts the start/end events of both reads (rec's first,
        # stable) and, whenever an end event arrives while both reads cover the
        # position (pair depth 2), subtracts [previous event, this event):
        # i.e. the intersection of the two reads' aligned blocks.
        m = len(multi)
        cig = pa.concat_arrays([
            _as_string_array(rec_cigar).take(pa.array(multi)).cast(pa.large_string()),
            _as_string_array(mate_cigar).take(pa.array(multi)).cast(pa.large_string()),
        ])
        enc = cig.dictionary_encode()
        codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        parsed = _parse_cigars(enc.dictionary, False)
        starts = np.concatenate((rec_start[multi], mate_start[multi]))
        owner, bs, be = _expand_blocks(parsed, codes, starts)
        if len(owner) == 0:
            return
        pair_id = owner % m
        source = owner // m  # 0 = rec, 1 = mate
        ev_pos = np.concatenate((bs, be))
        ev_val = np.concatenate((np.ones(len(bs), np.int64), -np.ones(len(be), np.int64)))
        ev_pair = np.concatenate((pair_id, pair_id))
        ev_src = np.concatenate((source, source))
        order = np.lexsort((ev_src, ev_pos, ev_pair))
        ev_pos = ev_pos[order]
        ev_val = ev_val[order]
        # Each pair's events sum to 0, so a global running sum is the running
        # pair depth of every pair.
        cum = np.cumsum(ev_val)
        hit = np.flatnonzero((ev_val == -1) & (cum - ev_val == 2))
        self._add_events(ev_pos[hit], ev_pos[hit - 1])


def reference_depth(
    name: str,
    length: int,
    tables: Iterable[pa.Table | pa.RecordBatch],
    options: CoverageOptions | None = None,
) -> ReferenceDepth:
    """Compute the depth of one reference from its chunk tables.

    Args:
        name: Reference name.
        length: Reference length.
        tables: The reference's chunk tables in coordinate order.
        options: Filtering and counting options.

    Returns:
        The final depth.
    """
    acc = DepthAccumulator(length, options, name=name)
    for table in tables:
        acc.add(table)
    return acc.finish()


# --------------------------------------------------------------------------
# Regions (windows or BED) and their statistics
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class BedRegion:
    """One BED region (0-based, half-open) as mosdepth reads it."""

    chrom: str
    start: int
    end: int
    name: str = ""


def _open_text(path: str | os.PathLike[str]) -> IO[str]:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", newline="")
    return open(path, encoding="utf-8", newline="")


def read_bed(path: str | os.PathLike[str]) -> list[BedRegion]:
    """Read a BED file with mosdepth's rules.

    Lines starting with ``#`` or ``track `` are skipped; lines with fewer than
    three tab-separated fields are skipped with a warning; the fourth field, if
    any, is the region name and further fields are ignored. mosdepth reads the
    file with ``hts_getline`` in a ``> 0`` loop, so reading stops at the first
    empty line; that is reproduced. The file may be gzip/bgzip compressed.

    Args:
        path: BED file.

    Returns:
        Regions in file order.

    Raises:
        ValueError: On a non-integer or negative coordinate or start > end.
    """
    regions: list[BedRegion] = []
    with _open_text(path) as fh:
        for raw in fh:
            line = raw.rstrip("\n")
            if line == "":
                break
            if line.startswith(("track ", "#")):
                continue
            fields = line.strip().split("\t", 5)
            if len(fields) < 3:
                logger.warning("[mosdepth] skipping bad bed line:%s", line.strip())
                continue
            try:
                start = int(fields[1])
                end = int(fields[2])
            except ValueError:
                raise ValueError(f"bad BED coordinates in line {line.strip()!r}") from None
            if start < 0 or start > end:
                raise ValueError(f"bad BED interval in line {line.strip()!r}")
            regions.append(BedRegion(fields[0], start, end, fields[3] if len(fields) > 3 else ""))
    return regions


@dataclass(frozen=True)
class _Regions:
    """Regions of one reference as arrays."""

    starts: I64
    ends: I64
    names: list[str]
    window: int = 0  # > 0 when these are --by N windows


def _window_regions(length: int, window: int) -> _Regions:
    """Return mosdepth's ``--by N`` windows of a reference.

    Windows are ``[k*N, (k+1)*N)``; the last one is truncated at the end.
    """
    if window <= 0:
        raise ValueError(f"window size must be positive; got {window}")
    starts = np.arange(0, length, window, dtype=np.int64)
    ends = np.minimum(starts + window, length)
    return _Regions(starts, ends, [""] * len(starts), window)


def _bed_regions(regions: Sequence[BedRegion], length: int, chrom: str) -> _Regions:
    # mosdepth sorts each chromosome's regions by start (stable sort).
    ordered = sorted(regions, key=lambda r: r.start)
    starts = np.array([r.start for r in ordered], dtype=np.int64)
    ends = np.array([r.end for r in ordered], dtype=np.int64)
    if len(ends) and int(ends.max()) > length + 1:
        # mosdepth 0.3.3 dies with an IndexDefect here; fail clearly instead.
        raise ValueError(
            f"BED region {chrom}:{int(starts[ends.argmax()])}-{int(ends.max())} "
            f"extends past the end of {chrom} (length {length})"
        )
    return _Regions(starts, ends, [r.name for r in ordered])


def _group_bed(regions: Iterable[BedRegion]) -> dict[str, list[BedRegion]]:
    out: dict[str, list[BedRegion]] = {}
    for r in regions:
        out.setdefault(r.chrom, []).append(r)
    return out


@dataclass(frozen=True)
class _RegionStats:
    means: F64
    lengths: I64
    sums: I64
    mins: I64  # _UINT32_MAX for empty regions
    maxs: I64
    thresholds: I64  # (n_regions, n_thresholds)


#: Elements per block when scanning per-base arrays, so that temporaries
#: (float64 copies, int64 casts) stay small whatever the reference length.
_SCAN_BLOCK = 1 << 20


def _sequential_mean(arr: I32, start: int, end: int) -> float:
    """mosdepth's ``imean`` of ``arr[start:end]``, scanned in blocks."""
    n = end - start
    if n <= 0:
        return 0.0
    acc = 0.0
    for b0 in range(start, end, _SCAN_BLOCK):
        block = arr[b0: min(end, b0 + _SCAN_BLOCK)] / float(n)
        block[0] += acc  # continue the same left-to-right float sum
        np.cumsum(block, out=block)
        acc = float(block[-1])
    return acc


def _sequential_means(arr: I32, reg: _Regions) -> F64:
    """Region means computed exactly like mosdepth's ``imean``.

    mosdepth adds ``float64(depth) / float64(length)`` base by base, in order;
    the rounding of that sum decides the printed ``%.2f`` value (e.g. 125
    bases of depth 1 in a 1000 bp window print ``0.13``, not ``0.12``), so the
    same sequential float sum is computed here (``np.cumsum`` accumulates
    sequentially; ``np.sum`` would not).
    """
    n = len(reg.starts)
    out = np.zeros(n, dtype=np.float64)
    lengths = reg.ends - reg.starts
    rest: Iterable[int] = range(n)
    if 0 < reg.window <= _SCAN_BLOCK and n > 0:
        # Regular windows: one row per window, cumsum along rows.
        w = reg.window
        nfull = int(np.count_nonzero(lengths == w))
        rows_per_block = max(1, _SCAN_BLOCK // w)
        for r0 in range(0, nfull, rows_per_block):
            r1 = min(nfull, r0 + rows_per_block)
            mat = arr[r0 * w: r1 * w].reshape(r1 - r0, w).astype(np.float64)
            mat /= float(w)
            np.cumsum(mat, axis=1, out=mat)
            out[r0:r1] = mat[:, -1]
        rest = range(nfull, n)
    for i in rest:
        out[i] = _sequential_mean(arr, int(reg.starts[i]), int(reg.ends[i]))
    return out


def _prefix_sums_at(
    arr: I32, points: I64, transform: Callable[[I32], npt.NDArray[np.generic]] | None = None,
) -> I64:
    """Return ``sum(f(arr[:p]))`` for every ``p`` in ``points`` (0..len(arr)).

    Scans ``arr`` in blocks, so no reference-sized int64 temporary is made.
    """
    out = np.zeros(len(points), dtype=np.int64)
    order = np.argsort(points, kind="stable")
    sp = points[order]
    running = 0
    for b0 in range(0, len(arr), _SCAN_BLOCK):
        b1 = min(len(arr), b0 + _SCAN_BLOCK)
        block = arr[b0:b1] if transform is None else transform(arr[b0:b1])
        lo, hi = np.searchsorted(sp, [b0, b1], side="right")
        if hi > lo:
            cs = np.cumsum(block, dtype=np.int64)
            out[order[lo:hi]] = running + cs[sp[lo:hi] - b0 - 1]
            running += int(cs[-1])
        else:
            running += int(block.sum(dtype=np.int64))
    return out


def _region_stats(rd: ReferenceDepth, reg: _Regions, thresholds: Sequence[int]) -> _RegionStats:
    n = len(reg.starts)
    lengths = reg.ends - reg.starts
    nt = len(thresholds)
    if not rd.has_records or n == 0:
        z = np.zeros(n, dtype=np.int64)
        return _RegionStats(np.zeros(n), lengths, z, np.full(n, _UINT32_MAX, np.int64), z,
                            np.zeros((n, nt), dtype=np.int64))
    arr = rd._padded
    means = _sequential_means(arr, reg)
    empty = lengths <= 0
    # Sums and threshold counts from prefix sums at the region bounds.
    bounds = np.concatenate((reg.starts, reg.ends))
    prefix = _prefix_sums_at(arr[: rd.length + 1], bounds)
    sums = prefix[n:] - prefix[:n]
    counts = np.zeros((n, nt), dtype=np.int64)
    for j, t in enumerate(thresholds):

        def at_least(block: I32, t: int = t) -> BoolArr:
            return np.greater_equal(block, t)

        prefix = _prefix_sums_at(arr[: rd.length + 1], bounds, at_least)
        counts[:, j] = prefix[n:] - prefix[:n]
    # min/max with reduceat over interleaved [start, end) bounds (no cast, no
    # copy); the padded array's extra 0 makes index length + 1 addressable.
    idx = np.empty(2 * n, dtype=np.int64)
    idx[0::2] = reg.starts
    idx[1::2] = reg.ends
    mins = np.minimum.reduceat(arr, idx)[0::2].astype(np.int64)
    maxs = np.maximum.reduceat(arr, idx)[0::2].astype(np.int64)
    mins[empty] = _UINT32_MAX
    maxs[empty] = 0
    return _RegionStats(means, lengths, sums, mins, maxs, counts)


def _dist_counts(values: I32, weights: I32 | None = None) -> I64:
    """Depth histogram as mosdepth builds it (negative skipped, clamped).

    Args:
        values: Depths.
        weights: Optional count of each value (region multiplicity).
    """
    total = np.zeros(0, dtype=np.int64)
    for b0 in range(0, len(values), _SCAN_BLOCK):
        block = values[b0: b0 + _SCAN_BLOCK]
        if weights is None and len(block) and 0 <= block.min() and block.max() <= _DIST_MAX_COVERAGE:
            # The usual case: nothing to skip or clamp, count directly.
            total = _sum_into(total, np.bincount(block).astype(np.int64))
            continue
        v = block.astype(np.int64)
        keep = v >= 0
        w = None
        if weights is not None:
            wb = weights[b0: b0 + _SCAN_BLOCK]
            keep &= wb > 0
            w = wb[keep].astype(np.float64)
        v = v[keep]
        v[v > _DIST_MAX_COVERAGE] = _DIST_CLAMPED
        # Float weights are exact: counts stay far below 2**53.
        total = _sum_into(total, np.rint(np.bincount(v, weights=w)).astype(np.int64))
    return total


def _region_multiplicity(rd: ReferenceDepth, reg: _Regions) -> I32:
    """How many regions cover each base of mosdepth's ``arr`` (length+1)."""
    diff = np.zeros(rd.length + 2, dtype=np.int32)
    s = np.minimum(reg.starts, rd.length + 1)
    e = np.minimum(reg.ends, rd.length + 1)
    ok = e > s
    np.add.at(diff, s[ok], 1)
    np.subtract.at(diff, e[ok], 1)
    out = diff[: rd.length + 1]
    np.cumsum(out, dtype=np.int32, out=out)
    return out


# --------------------------------------------------------------------------
# Arrow tables
# --------------------------------------------------------------------------


def intervals_table(rd: ReferenceDepth) -> pa.Table:
    """Per-base depth as run-length intervals (mosdepth ``per-base.bed.gz``).

    Returns:
        Columns ``rname`` (string), ``start`` (int32, 0-based), ``end``
        (int32, exclusive), ``depth`` (int32), covering the whole reference.
    """
    starts, ends, depth = rd.intervals()
    return pa.table({
        "rname": _repeat_name(rd.name, len(starts)),
        "start": pa.array(starts.astype(np.int32)),
        "end": pa.array(ends.astype(np.int32)),
        "depth": pa.array(depth.astype(np.int32)),
    })


def _repeat_name(name: str, n: int) -> pa.Array:
    """A string array holding ``name`` ``n`` times (built without a list)."""
    return pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype=np.int32)), pa.array([name], pa.string()),
    ).cast(pa.string())


def _means_table(rd: ReferenceDepth, reg: _Regions) -> pa.Table:
    stats = _region_stats(rd, reg, ())
    return pa.table({
        "rname": _repeat_name(rd.name, len(reg.starts)),
        "start": pa.array(reg.starts.astype(np.int32)),
        "end": pa.array(reg.ends.astype(np.int32)),
        "mean_depth": pa.array(stats.means, pa.float64()),
    })


def window_means_table(rd: ReferenceDepth, window: int) -> pa.Table:
    """Mean depth per window (``mosdepth --by N``).

    Returns:
        Columns ``rname``, ``start``, ``end`` (int32, BED coordinates) and
        ``mean_depth`` (float64, mosdepth's value; format with ``%.2f``).
    """
    return _means_table(rd, _window_regions(rd.length, window))


def region_means_table(rd: ReferenceDepth, regions: Sequence[BedRegion]) -> pa.Table:
    """Mean depth per BED region of this reference (``mosdepth --by BED``).

    Regions of other references are ignored; regions are sorted by start.

    Returns:
        Columns ``rname``, ``start``, ``end``, ``mean_depth``.
    """
    own = [r for r in regions if r.chrom == rd.name]
    return _means_table(rd, _bed_regions(own, rd.length, rd.name))


def thresholds_table(
    rd: ReferenceDepth, by: int | Sequence[BedRegion], thresholds: Sequence[int],
) -> pa.Table:
    """Bases at or above each threshold per window/region (``--thresholds``).

    Args:
        rd: Depth of one reference.
        by: Window size, or BED regions (those of other references ignored).
        thresholds: Depth thresholds (sorted ascending in the output).

    Returns:
        Columns ``rname``, ``start``, ``end``, ``region`` (name or
        ``"unknown"``) and one int64 column ``"{t}X"`` per threshold.
    """
    ts = sorted(int(t) for t in thresholds)
    if isinstance(by, bool):
        raise ValueError("by must be a window size or BED regions")
    if isinstance(by, (int, np.integer)):
        reg = _window_regions(rd.length, int(by))
    else:
        reg = _bed_regions([r for r in by if r.chrom == rd.name], rd.length, rd.name)
    stats = _region_stats(rd, reg, ts)
    cols: dict[str, pa.Array] = {
        "rname": _repeat_name(rd.name, len(reg.starts)),
        "start": pa.array(reg.starts.astype(np.int32)),
        "end": pa.array(reg.ends.astype(np.int32)),
        "region": pa.array([nm if nm else "unknown" for nm in reg.names], pa.string()),
    }
    for j, t in enumerate(ts):
        cols[f"{t}X"] = pa.array(stats.thresholds[:, j])
    return pa.table(cols)


def samtools_depth_table(rd: ReferenceDepth, *, all_references: bool = False) -> pa.Table:
    """Per-position depth like ``samtools depth -a`` (or ``-aa``).

    ``samtools depth -a`` prints every position of a reference only if at
    least one read on it passed the filters; ``-aa`` (``all_references``)
    prints references without such reads too (all zeros). Positions past the
    reference end covered by reads are printed too, as samtools does.

    Returns:
        Columns ``rname`` (string), ``pos`` (int32, 1-based), ``depth`` (int32).
    """
    if rd.n_passing == 0:
        n = rd.length if all_references else 0
    else:
        n = rd.extent
    return pa.table({
        "rname": _repeat_name(rd.name, n),
        "pos": pa.array(np.arange(1, n + 1, dtype=np.int32)),
        "depth": pa.array(rd._padded[:n].astype(np.int32)),
    })


# --------------------------------------------------------------------------
# mosdepth output files
# --------------------------------------------------------------------------

_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_BGZF_BLOCK = 0xFF00  # htslib's BGZF_BLOCK_SIZE (uncompressed bytes per block)


class _BgzfWriter:
    """Minimal BGZF (blocked gzip) text writer, readable by zcat/tabix."""

    def __init__(self, path: str | os.PathLike[str], level: int = 6) -> None:
        self._fh = open(path, "wb")
        self._level = level
        self._buf = bytearray()

    def write(self, text: str | bytes) -> None:
        self._buf += text.encode() if isinstance(text, str) else text
        while len(self._buf) >= _BGZF_BLOCK:
            self._flush_block(bytes(self._buf[:_BGZF_BLOCK]))
            del self._buf[:_BGZF_BLOCK]

    def _flush_block(self, data: bytes) -> None:
        comp = zlib.compressobj(self._level, zlib.DEFLATED, -15)
        cdata = comp.compress(data) + comp.flush()
        if len(cdata) + 26 > 65536:  # incompressible: split in halves
            half = len(data) // 2
            self._flush_block(data[:half])
            self._flush_block(data[half:])
            return
        header = struct.pack(
            "<4BI2BH2BHH", 0x1F, 0x8B, 8, 4, 0, 0, 0xFF, 6, ord("B"), ord("C"), 2,
            len(cdata) + 25,
        )
        trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data))
        self._fh.write(header + cdata + trailer)

    def close(self) -> None:
        if self._buf:
            self._flush_block(bytes(self._buf))
            self._buf.clear()
        self._fh.write(_BGZF_EOF)
        self._fh.close()


@dataclass
class _Stat:
    """mosdepth's ``depth_stat``; its zero value has ``min_depth`` 0."""

    length: int = 0
    bases: int = 0
    min: int = 0
    max: int = 0

    def __add__(self, other: _Stat) -> _Stat:
        return _Stat(self.length + other.length, self.bases + other.bases,
                     min(self.min, other.min), max(self.max, other.max))

    @classmethod
    def cleared(cls) -> _Stat:
        return cls(0, 0, _UINT32_MAX, 0)


@dataclass(frozen=True)
class ReferenceSummary:
    """What :class:`MosdepthWriter` writes for one reference, computed in advance.

    Made by :meth:`MosdepthPlan.summarize` (the costly scans of the per-base
    array), possibly in a worker process; written by
    :meth:`MosdepthWriter.add_summary`. Picklable and small (no per-base array).
    """

    name: str
    skipped: bool  # BED-only run and no region on this reference: mosdepth skips it
    found: bool  # the reference has records (mosdepth prints summary rows)
    region_text: str
    threshold_text: str
    region_stat: _Stat | None  # added to the chromosome's region stat
    region_counts: I64
    chrom_counts: I64
    chrom_stat: _Stat
    per_base_text: bytes | None


@dataclass(frozen=True)
class MosdepthPlan:
    """The picklable configuration of a :class:`MosdepthWriter` (see :meth:`MosdepthWriter.plan`).

    Attributes:
        window: ``--by N`` window size, or 0.
        bed: BED regions by chromosome (``--by BED``), or None.
        thresholds: Sorted ``--thresholds``.
        per_base: Whether the per-base file is written.
        precision: Decimal places of means and distributions.
    """

    window: int
    bed: Mapping[str, tuple[BedRegion, ...]] | None
    thresholds: tuple[int, ...]
    per_base: bool
    precision: int

    @property
    def has_regions(self) -> bool:
        """Windows or BED regions are requested."""
        return self.window > 0 or self.bed is not None

    def _fmt(self, value: float) -> str:
        # Nim's formatFloat(ffDecimal, precision) is C's "%.{precision}f".
        return f"{value:.{self.precision}f}"

    def summarize(self, rd: ReferenceDepth) -> ReferenceSummary:
        """Compute everything the writer prints for one reference."""
        bed_here: Sequence[BedRegion] | None = None
        empty = np.zeros(0, dtype=np.int64)
        if self.bed is not None:
            bed_here = self.bed.get(rd.name)
            # mosdepth skips the reference entirely (no summary or dist rows)
            # when nothing but BED regions is requested and it has none.
            if not self.per_base and not self.thresholds and bed_here is None:
                return ReferenceSummary(rd.name, True, False, "", "", None, empty, empty, _Stat(), None)
        found = rd.has_records
        arr = rd._padded
        length = rd.length

        region_counts = empty
        region_stat = None
        region_text = threshold_text = ""
        if self.has_regions:
            reg = (
                _window_regions(length, self.window) if self.window
                else _bed_regions(bed_here or [], length, rd.name)
            )
            stats = _region_stats(rd, reg, self.thresholds)
            starts = reg.starts.tolist()
            ends = reg.ends.tolist()
            means = [self._fmt(m) for m in stats.means.tolist()]
            region_text = "".join(
                f"{rd.name}\t{s}\t{e}\t{nm}\t{m}\n" if nm else f"{rd.name}\t{s}\t{e}\t{m}\n"
                for s, e, nm, m in zip(starts, ends, reg.names, means, strict=True)
            )
            if self.thresholds:
                threshold_text = "".join(
                    f"{rd.name}\t{s}\t{e}\t{nm or 'unknown'}\t" + "\t".join(map(str, row)) + "\n"
                    for s, e, nm, row in zip(starts, ends, reg.names, stats.thresholds.tolist(), strict=True)
                )
            if found and len(reg.starts):
                # Empty regions have min uint32.high and max 0, as in mosdepth.
                region_stat = _Stat(
                    int(stats.lengths.sum()), int(stats.sums.sum()),
                    int(stats.mins.min()), int(stats.maxs.max()),
                )
                if self.window:
                    # With --by N, mosdepth 0.3.3's region distribution counts
                    # one entry per window at its mean rounded by Nim's toInt
                    # (int(mean + 0.5)), capped at 999 (the last slot of its
                    # 1000-entry array). Found by comparison with the binary.
                    rounded = np.trunc(stats.means + 0.5).astype(np.int64)
                    rounded = np.minimum(rounded[rounded >= 0], _REGION_DIST_WINDOW_CAP)
                    region_counts = np.bincount(rounded).astype(np.int64)
                else:
                    region_counts = _dist_counts(arr[: length + 1], _region_multiplicity(rd, reg))

        chrom_counts = empty
        chrom_stat = _Stat()
        if found:
            chrom_counts = _dist_counts(arr[:length])
            d = arr[:length]
            chrom_stat = _Stat(
                length, int(d.sum(dtype=np.int64)),
                int(d.min()) if length else _UINT32_MAX, int(d.max()) if length else 0,
            )
        per_base_text = None
        if self.per_base:
            # Arrow's CSV writer formats the (many) integer lines in C++.
            sink = pa.BufferOutputStream()
            pacsv.write_csv(
                intervals_table(rd), sink,
                pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"),
            )
            per_base_text = sink.getvalue().to_pybytes()
        return ReferenceSummary(
            rd.name, False, found, region_text, threshold_text, region_stat, region_counts, chrom_counts,
            chrom_stat, per_base_text,
        )


#: Accepted values of ``by``: window size, BED path, or BED regions.
ByArg = Union[int, str, "os.PathLike[str]", Sequence[BedRegion], Mapping[str, Sequence[BedRegion]], None]  # noqa: UP007


class MosdepthWriter:
    """Write mosdepth's output files, one reference at a time.

    Feed :class:`ReferenceDepth` objects in ``@SQ`` order, *including*
    references without any record (:meth:`ReferenceDepth.empty`), exactly as
    mosdepth iterates the BAM header; then call :meth:`close`. Only one
    reference's depth is held at a time.

    Files (text identical to mosdepth 0.3.3 after ``zcat``; the ``.csi``
    indexes mosdepth also writes are not produced):

    * ``PREFIX.per-base.bed.gz`` unless ``per_base`` is False (``-n``),
    * ``PREFIX.regions.bed.gz`` and ``PREFIX.mosdepth.region.dist.txt`` with
      ``by``,
    * ``PREFIX.thresholds.bed.gz`` with ``thresholds``,
    * ``PREFIX.mosdepth.summary.txt`` and ``PREFIX.mosdepth.global.dist.txt``.
    """

    def __init__(
        self,
        prefix: str | os.PathLike[str],
        *,
        by: ByArg = None,
        thresholds: Sequence[int] | None = None,
        per_base: bool = True,
        precision: int = 2,
    ) -> None:
        """Open the output files.

        Args:
            prefix: Output prefix (``mosdepth <prefix>``).
            by: Window size (int or digit string), BED path, or BED regions
                (a sequence or a mapping by chromosome); None for no regions.
            thresholds: ``--thresholds`` values; requires ``by``.
            per_base: Write the per-base file (False = ``--no-per-base``).
            precision: Decimal places of means and distributions (mosdepth's
                ``MOSDEPTH_PRECISION``, default 2).
        """
        self.prefix = str(prefix)
        self._thresholds = sorted(int(t) for t in thresholds) if thresholds else []
        if self._thresholds and by is None:
            raise ValueError("thresholds can only be used when by (windows or BED regions) is given")
        if not isinstance(precision, int) or precision < 0:
            raise ValueError(f"precision must be a non-negative integer; got {precision!r}")
        self._precision = precision
        self._window = 0
        self._bed: dict[str, list[BedRegion]] | None = None
        if isinstance(by, bool):
            raise ValueError("by must be a window size, a BED path or BED regions")
        if isinstance(by, (int, np.integer)):
            if by <= 0:
                raise ValueError(f"window size must be positive; got {by}")
            self._window = int(by)
        elif isinstance(by, str) and by.isdigit():
            self._window = int(by)
            if self._window <= 0:
                raise ValueError(f"window size must be positive; got {by}")
        elif isinstance(by, (str, os.PathLike)):
            self._bed = _group_bed(read_bed(by))
        elif isinstance(by, Mapping):
            self._bed = {k: list(v) for k, v in by.items()}
        elif by is not None:
            self._bed = _group_bed(by)
        self._has_regions = self._window > 0 or self._bed is not None
        self._per_base = per_base
        self._plan = MosdepthPlan(
            self._window,
            None if self._bed is None else {k: tuple(v) for k, v in self._bed.items()},
            tuple(self._thresholds),
            per_base,
            precision,
        )

        self._base = _BgzfWriter(self.prefix + ".per-base.bed.gz", level=1) if per_base else None
        self._regions = _BgzfWriter(self.prefix + ".regions.bed.gz") if self._has_regions else None
        self._thr = _BgzfWriter(self.prefix + ".thresholds.bed.gz", level=1) if self._thresholds else None
        if self._thr is not None:
            header = "#chrom\tstart\tend\tregion" + "".join(f"\t{t}X" for t in self._thresholds)
            self._thr.write(header + "\n")
        self._summary = open(self.prefix + ".mosdepth.summary.txt", "w", encoding="utf-8")
        self._summary.write("chrom\tlength\tbases\tmean\tmin\tmax\n")
        self._gdist = open(self.prefix + ".mosdepth.global.dist.txt", "w", encoding="utf-8")
        self._rdist = (
            open(self.prefix + ".mosdepth.region.dist.txt", "w", encoding="utf-8")
            if self._has_regions else None
        )
        self._global_stat = _Stat()
        self._global_region_stat = _Stat()
        # mosdepth's chrom_region_stat starts zeroed (min 0) and is only
        # cleared after the first reference with records: its first _region
        # row therefore always has min 0. Reproduced.
        self._chrom_region_stat = _Stat()
        self._global_dist = np.zeros(0, dtype=np.int64)
        self._region_dist = np.zeros(0, dtype=np.int64)
        self._closed = False

    def __enter__(self) -> MosdepthWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fmt(self, value: float) -> str:
        # Nim's formatFloat(ffDecimal, precision) is C's "%.{precision}f".
        return f"{value:.{self._precision}f}"

    def _write_summary(self, name: str, stat: _Stat) -> None:
        mean = float(stat.bases) / float(stat.length) if stat.length > 0 else 0.0
        smin = 0 if stat.min == _UINT32_MAX else stat.min
        self._summary.write(f"{name}\t{stat.length}\t{stat.bases}\t{self._fmt(mean)}\t{smin}\t{stat.max}\n")

    def _write_dist(self, fh: IO[str], name: str, counts: I64) -> None:
        total = int(counts.sum())
        if total < 1:
            return
        rev = counts[::-1].astype(np.float64)
        # mosdepth: cum += float64(v) / float64(sum), highest depth first.
        cum = np.cumsum(rev / float(total))
        depth = np.arange(len(counts) - 1, -1, -1)
        show = ~((depth > 300) & (counts[::-1] == 0)) & ~(cum < 8e-5)
        rows = zip(depth[show].tolist(), cum[show].tolist(), strict=True)
        fh.write("".join(f"{name}\t{d}\t{self._fmt(c)}\n" for d, c in rows))

    def plan(self) -> MosdepthPlan:
        """The writer's picklable configuration, to summarize references elsewhere.

        ``writer.add(rd)`` is ``writer.add_summary(writer.plan().summarize(rd))``;
        the summary can be computed in another process (the heavy part), the
        files written here, in ``@SQ`` order.
        """
        return self._plan

    def add(self, rd: ReferenceDepth) -> None:
        """Write the outputs of one reference (call in ``@SQ`` order)."""
        self.add_summary(self._plan.summarize(rd))

    def add_summary(self, s: ReferenceSummary) -> None:
        """Write the outputs of one reference from its summary (call in ``@SQ`` order)."""
        if self._closed:
            raise ValueError("MosdepthWriter is closed")
        if self._bed is not None:
            self._bed.pop(s.name, None)
        if s.skipped:
            return
        if self._regions is not None:
            self._regions.write(s.region_text)
        if self._thr is not None:
            self._thr.write(s.threshold_text)
        chrom_region_stat = self._chrom_region_stat
        if s.region_stat is not None:
            chrom_region_stat = chrom_region_stat + s.region_stat
        if s.found:
            self._global_stat = self._global_stat + s.chrom_stat
            self._write_summary(s.name, s.chrom_stat)
            if self._has_regions:
                self._write_summary(s.name + "_region", chrom_region_stat)
            self._global_region_stat = self._global_region_stat + chrom_region_stat
            self._chrom_region_stat = _Stat.cleared()

        self._write_dist(self._gdist, s.name, s.chrom_counts)
        if self._rdist is not None:
            self._write_dist(self._rdist, s.name, s.region_counts)
        if s.found:
            self._global_dist = _sum_into(self._global_dist, s.chrom_counts)
            if self._has_regions:
                self._region_dist = _sum_into(self._region_dist, s.region_counts)
        if self._base is not None and s.per_base_text is not None:
            self._base.write(s.per_base_text)

    def close(self) -> None:
        """Write the totals and close every file."""
        if self._closed:
            return
        self._closed = True
        self._write_summary("total", self._global_stat)
        if self._has_regions:
            self._write_summary("total_region", self._global_region_stat)
        self._write_dist(self._gdist, "total", self._global_dist)
        if self._rdist is not None:
            self._write_dist(self._rdist, "total", self._region_dist)
            self._rdist.close()
        if self._bed:
            for chrom, regs in self._bed.items():
                logger.warning(
                    "[mosdepth] warning chromosome:%s from bed with %d regions not found", chrom, len(regs),
                )
        for w in (self._regions, self._thr, self._base):
            if w is not None:
                w.close()
        self._summary.close()
        self._gdist.close()

    def paths(self) -> list[str]:
        """Return the paths of the files this writer produces."""
        names = [".mosdepth.global.dist.txt", ".mosdepth.summary.txt"]
        if self._has_regions:
            names += [".mosdepth.region.dist.txt", ".regions.bed.gz"]
        if self._thresholds:
            names.append(".thresholds.bed.gz")
        if self._per_base:
            names.append(".per-base.bed.gz")
        return [self.prefix + n for n in names]


def _sum_into(total: I64, counts: I64) -> I64:
    if len(counts) > len(total):
        total = np.concatenate((total, np.zeros(len(counts) - len(total), dtype=np.int64)))
    total[: len(counts)] += counts
    return total


def write_mosdepth_outputs(
    prefix: str | os.PathLike[str],
    depths: Iterable[ReferenceDepth],
    *,
    by: ByArg = None,
    thresholds: Sequence[int] | None = None,
    per_base: bool = True,
    precision: int = 2,
) -> list[str]:
    """Write mosdepth's files for references given in ``@SQ`` order.

    Args:
        prefix: Output prefix.
        depths: One :class:`ReferenceDepth` per ``@SQ`` line, in header order
            (may be a generator; consumed once).
        by: See :class:`MosdepthWriter`.
        thresholds: See :class:`MosdepthWriter`.
        per_base: See :class:`MosdepthWriter`.
        precision: See :class:`MosdepthWriter`.

    Returns:
        Paths of the files written.
    """
    with MosdepthWriter(prefix, by=by, thresholds=thresholds, per_base=per_base, precision=precision) as w:
        for rd in depths:
            w.add(rd)
    return w.paths()


def iter_reference_depths(
    references: Iterable[tuple[str, int]],
    tables_by_reference: Mapping[str, Iterable[pa.Table | pa.RecordBatch]],
    options: CoverageOptions | None = None,
) -> Iterator[ReferenceDepth]:
    """Yield the depth of every reference, in the given (header) order.

    Args:
        references: ``(name, length)`` pairs in ``@SQ`` order.
        tables_by_reference: Chunk tables per reference name (missing or empty
            means no records on that reference).
        options: Filtering and counting options.

    Yields:
        One :class:`ReferenceDepth` per reference.
    """
    opts = options or CoverageOptions()
    for name, length in references:
        yield reference_depth(name, length, tables_by_reference.get(name, ()), opts)


__all__ = [
    "BedRegion",
    "CoverageOptions",
    "DEFAULT_FLAG_EXCLUDE",
    "DepthAccumulator",
    "MODES",
    "MosdepthPlan",
    "MosdepthWriter",
    "ReferenceDepth",
    "ReferenceSummary",
    "intervals_table",
    "iter_reference_depths",
    "read_bed",
    "reference_depth",
    "region_means_table",
    "required_columns",
    "samtools_depth_table",
    "thresholds_table",
    "window_means_table",
    "write_mosdepth_outputs",
]
