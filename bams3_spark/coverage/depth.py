"""Per-reference depth: the accumulator of mosdepth's and samtools' counting, mate overlaps included.

Three counting modes exist (:class:`~bams3_spark.coverage.options.CoverageOptions`):

* ``"mosdepth"`` (default): mosdepth without ``-x``. Every aligned block of a
  read (CIGAR ``M``/``=``/``X``) counts; ``D``/``N`` do not. Overlapping
  proper-pair mates are counted once, with mosdepth's exact rule (see
  :class:`DepthAccumulator`).
* ``"fast"``: ``mosdepth -x``. The whole span ``pos..end`` of each read counts
  and mates are not corrected.
* ``"samtools"``: ``samtools depth``. CIGAR-aware like mosdepth (``D`` counts
  with ``count_deletions``, i.e. ``-J``) and no mate correction.

Semantics were taken from reading the public sources: ``mosdepth.nim`` of
brentp/mosdepth (the ``coverage`` and ``gen_start_ends`` procedures) and
``bam2depth.c`` of samtools (the 2021 rewrite, ``fastdepth_core``/``add_depth``).
Every behaviour relied on here is checked against the installed binaries by
``tests/coverage/``.

Typical use::

    acc = DepthAccumulator(length, CoverageOptions(), name="chr1")
    for table in chunk_tables_of_chr1:          # coordinate order
        acc.add(table)
    depth = acc.finish()                        # ReferenceDepth
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from bams3_spark.arrays import bool_array, encoded, ints
from bams3_spark.coverage.cigar import expand_blocks, parse_cigars

# STORE, STORE_IF_UNSEEN and TAKE are re-exported: coverage.chunked (the
# Spark job's form) imports them from here.
from bams3_spark.coverage.mates import STORE, STORE_IF_UNSEEN, TAKE, MateRule  # noqa: F401
from bams3_spark.coverage.options import CoverageOptions
from bams3_spark.format.flags import PROPER_PAIR, SUPPLEMENTARY

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]

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
    def padded(self) -> I32:
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


#: Initial span of a streaming accumulator's array (it grows for longer reads).
STREAM_SPAN = 1 << 21
_ONE = np.int32(1)


class DrainedTooEarly(Exception):
    """A streaming accumulator got a depth change at a position it had already drained."""


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

    def __init__(
        self, ref_length: int, options: CoverageOptions | None = None, *, name: str = "", stream: bool = False
    ) -> None:
        """Create an accumulator.

        Args:
            ref_length: Length of the reference (``@SQ LN``).
            options: Filtering and counting options.
            name: Reference name; ``rnext`` equal to it counts as "same
                reference" like ``"="``.
            stream: Hold only the part of the reference still changing: the
                caller takes finished depth out with :meth:`drain` (and
                :meth:`drain_rest` instead of :meth:`finish`), so memory
                follows the chunks, not the reference length. Not for mode
                ``"samtools"`` (which may grow past the reference end).
        """
        if isinstance(ref_length, bool) or not isinstance(ref_length, (int, np.integer)) or ref_length < 0:
            raise ValueError(f"ref_length must be a non-negative integer; got {ref_length!r}")
        self.name = name
        self.length = int(ref_length)
        self.options = options or CoverageOptions()
        if stream and self.options.mode == "samtools":
            raise ValueError("stream=True is for the mosdepth modes only")
        self._stream = stream
        # _buf[i] is the difference at reference position _origin + i; _carry
        # the depth just before _origin (every difference drained so far).
        self._origin = 0
        self._carry = 0
        self._buf = np.zeros((min(self.length, STREAM_SPAN) if stream else self.length) + 2, dtype=np.int32)
        self._mates = MateRule()
        self._last_pos = 0
        self._max_end = 0
        self._n_records = 0
        self._n_passing = 0
        self._finished = False

    @property
    def n_pending(self) -> int:
        """Number of stored first mates waiting for their mate."""
        return len(self._mates)

    @property
    def n_records(self) -> int:
        """Records added so far (placed ones), filtered or not."""
        return self._n_records

    @property
    def n_passing(self) -> int:
        """Records that passed the filters so far."""
        return self._n_passing

    @property
    def origin(self) -> int:
        """(``stream``) The first position not drained yet."""
        return self._origin

    def drain(self, upto: int) -> I32:
        """(``stream``) Take out the final depth of positions ``origin .. upto - 1``.

        The caller guarantees that no read added later starts before ``upto``
        (the next chunk's first start): then nothing changes these positions
        any more, except for mosdepth's over-subtraction when a stored mate
        ends before its later mate starts (inconsistent mate data), which
        raises :class:`DrainedTooEarly` in :meth:`add`.
        """
        if not self._stream or self._finished:
            raise ValueError("drain() needs a streaming, unfinished accumulator")
        upto = min(upto, self.length)
        k = upto - self._origin
        if k <= 0:
            return np.zeros(0, dtype=np.int32)
        held = min(k, len(self._buf))
        piece = np.empty(k, dtype=np.int32)
        self._buf[0] += np.int32(self._carry)  # the depth before origin, in the same pass
        np.cumsum(self._buf[:held], dtype=np.int32, out=piece[:held])
        if held < k:  # no difference recorded past the buffer: the depth stays
            piece[held:] = piece[held - 1]
        self._carry = int(piece[-1])
        rest = len(self._buf) - held
        self._buf[:rest] = self._buf[held:]
        self._buf[rest:] = 0
        self._origin = upto
        return piece

    def drain_rest(self) -> I32:
        """(``stream``) The final depth of the positions not drained yet; the accumulator is finished."""
        piece = self.drain(self.length)
        self._finished = True
        self._mates = MateRule()
        return piece

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
        pos = ints(table.column("pos"))
        placed = pos > 0
        if not placed.all():
            table = table.filter(bool_array(placed))
            pos = pos[placed]
            if len(pos) == 0:
                return
        if pos[0] < self._last_pos or (len(pos) > 1 and (np.diff(pos) < 0).any()):
            raise ValueError(f"reads of reference {self.name!r} are not coordinate-sorted")
        self._last_pos = int(pos[-1])
        self._n_records += len(pos)

        flag = ints(table.column("flag"))
        mapq = ints(table.column("mapq"))
        passing = (mapq >= opts.mapq) & ((flag & opts.flag_exclude) == 0)
        if opts.flag_include:
            passing &= (flag & opts.flag_include) != 0
        sel = np.flatnonzero(passing)
        self._n_passing += len(sel)
        if len(sel) == 0:
            return
        start = pos[sel] - 1
        stop = ints(table.column("end"))[sel]
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

        # CIGARs repeat: take the chunk's column as distinct strings and
        # indexes (as stored), and parse each distinct string once.
        cigars, codes = encoded(table.column("cigar"))
        if len(sel) < table.num_rows:
            codes = codes[sel]
        parsed = parse_cigars(cigars, opts.count_deletions)
        _, bstart, bend = expand_blocks(parsed, codes, start)
        self._add_events(bstart, bend)

        if opts.mode == "mosdepth":
            flag_s = flag[sel]
            cand = np.flatnonzero(((flag_s & PROPER_PAIR) != 0) & ((flag_s & SUPPLEMENTARY) == 0))
            if len(cand):
                self._mates.apply(
                    table, sel[cand], cand, start, stop, cigars, codes, parsed.n_ops[codes], self.name,
                    self._add_events,
                )

    def finish(self) -> ReferenceDepth:
        """Return the final depth; the accumulator cannot be used afterwards."""
        if self._finished:
            raise ValueError("DepthAccumulator.finish() called twice")
        if self._stream:
            raise ValueError("a streaming accumulator finishes with drain_rest()")
        self._finished = True
        top = len(self._buf) - 2  # the length, or samtools' extent past it
        arr = self._buf[: top + 1]
        np.cumsum(arr, dtype=np.int32, out=arr)  # mosdepth's to_coverage
        self._buf[top + 1] = 0
        self._mates = MateRule()
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
        limit = self.length if self._stream else len(self._buf) - 2
        events = [
            (np.clip(idx, 0, limit) - self._origin, sign)
            for idx, sign in ((plus, 1), (minus, -1)) if len(idx)
        ]
        if not events:
            return
        lo = min(int(e.min()) for e, _ in events)
        hi = max(int(e.max()) for e, _ in events) + 1
        if lo < 0:
            raise DrainedTooEarly(f"reference {self.name!r}: a depth change before the drained position")
        if self._stream and hi + 2 > len(self._buf):
            grown = np.zeros(max(hi + 2, 2 * len(self._buf)), dtype=np.int32)
            grown[: len(self._buf)] = self._buf
            self._buf = grown
        # ufunc.at with an operand of the array's own dtype takes numpy's
        # indexed fast path (a few ns per event; a Python int 1 makes it 20x
        # slower), and touches only the events, not every base of their span.
        for e, sign in events:
            (np.add if sign > 0 else np.subtract).at(self._buf, e, _ONE)


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
