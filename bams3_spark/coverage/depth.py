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
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from bams3_spark.coverage.cigar import expand_blocks, int64_array, parse_cigars, string_array
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


#: Initial span of a streaming accumulator's array (it grows for longer reads).
STREAM_SPAN = 1 << 21


class DrainedTooEarly(Exception):
    """A streaming accumulator got a depth change at a position it had already drained."""


#: Kinds of mate candidates in mosdepth's rule: store, store-if-unseen, take (see DepthAccumulator).
STORE, STORE_IF_UNSEEN, TAKE = 0, 1, 2


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
        np.cumsum(self._buf[:held], dtype=np.int32, out=piece[:held])
        piece[:held] += np.int32(self._carry)
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
        self._pending = _Pending.empty()
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
        pos = int64_array(table.column("pos"))
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

        flag = int64_array(table.column("flag"))
        mapq = int64_array(table.column("mapq"))
        passing = (mapq >= opts.mapq) & ((flag & opts.flag_exclude) == 0)
        if opts.flag_include:
            passing &= (flag & opts.flag_include) != 0
        sel = np.flatnonzero(passing)
        self._n_passing += len(sel)
        if len(sel) == 0:
            return
        start = pos[sel] - 1
        stop = int64_array(table.column("end"))[sel]
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
        cigar = string_array(cigar_col if all_pass else cigar_col.take(pa.array(sel)))
        enc = cigar.dictionary_encode()
        codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        parsed = parse_cigars(enc.dictionary, opts.count_deletions)
        _, bstart, bend = expand_blocks(parsed, codes, start)
        self._add_events(bstart, bend)

        if opts.mode == "mosdepth":
            flag_s = flag[sel]
            cand = np.flatnonzero(((flag_s & PROPER_PAIR) != 0) & ((flag_s & SUPPLEMENTARY) == 0))
            if len(cand):
                mates = table.select(["qname", "rnext", "pnext"]).take(pa.array(sel[cand]))
                self._mate_overlaps(mates, cand, start, stop, cigar, parsed.n_ops[codes])

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
        span = hi - lo
        if span <= 8 * sum(len(e) for e, _ in events) + 4096:
            # Dense: one count per position of the span the events cover (a
            # chunk's reads), added to the array in one pass.
            counts = np.zeros(span, dtype=np.int64)
            for e, sign in events:
                c = np.bincount(e - lo, minlength=span)
                counts = counts + c if sign > 0 else counts - c
            self._buf[lo:hi] += counts.astype(np.int32)
            return
        for idx, sign in events:
            # Few events far apart: count equal positions on sorted events,
            # then one fancy-index add per distinct position.
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
        qn = string_array(mates.column("qname")).cast(pa.large_string())
        rnext = string_array(mates.column("rnext"))
        same_ref = pc.equal(rnext, "=")
        if self.name:
            same_ref = pc.or_(same_ref, pc.equal(rnext, self.name))
        same = np.asarray(same_ref.to_numpy(zero_copy_only=False), dtype=bool)
        mpos = int64_array(mates.column("pnext")) - 1
        st = start[cand]
        sp = stop[cand]
        base = same & (sp > mpos)
        typ = np.full(len(cand), TAKE, dtype=np.int8)
        typ[base & (st == mpos)] = STORE_IF_UNSEEN
        typ[base & (st < mpos)] = STORE

        # A TAKE row whose QNAME has no read stored (in this chunk or from an
        # earlier one) changes nothing: only rows sharing a QNAME with a read
        # that may be stored go through the state machine -- for short-insert
        # pairs that do not overlap, most rows are dropped here, unhashed.
        storable = typ != TAKE
        if not storable.all():
            names = qn.filter(pa.array(storable))
            if len(self._pending):
                names = pa.concat_arrays([names, self._pending.qname.cast(pa.large_string())])
            if len(names) == 0:
                return
            keep = storable | np.asarray(pc.is_in(qn, value_set=names).to_numpy(zero_copy_only=False), bool)
            if not keep.all():
                rows = np.flatnonzero(keep)
                qn, typ, st, sp, cand = qn.take(pa.array(rows)), typ[rows], st[rows], sp[rows], cand[rows]

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
        is_store = typ != TAKE  # S1 or S2 when nothing is stored yet

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
        add_rows.append(b[(tb == STORE) | ((tb == STORE_IF_UNSEEN) & ~hp)])
        take = hp & (tb != STORE)
        rec_p.append(b[take])
        mate_p.append(s[take])

        # Two reads of the QNAME in this chunk, nothing stored before.
        g2 = np.flatnonzero((counts == 2) & ~has_p)
        a = first[g2]
        b2 = order[ptr[g2] + 1]
        tb2 = typ[b2]
        a_stored = is_store[a]
        add_rows.append(b2[(a_stored & (tb2 == STORE)) | (~a_stored & is_store[b2])])
        pair = a_stored & (tb2 != STORE)
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
                if t == STORE or (t == STORE_IF_UNSEEN and state is None):
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
            string_array(rec_cigar).take(pa.array(multi)).cast(pa.large_string()),
            string_array(mate_cigar).take(pa.array(multi)).cast(pa.large_string()),
        ])
        enc = cig.dictionary_encode()
        codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        parsed = parse_cigars(enc.dictionary, False)
        starts = np.concatenate((rec_start[multi], mate_start[multi]))
        owner, bs, be = expand_blocks(parsed, codes, starts)
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
