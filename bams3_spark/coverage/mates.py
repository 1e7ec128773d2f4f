"""mosdepth's mate-overlap rule across chunks: the stored first mates and the corrections they make.

See :class:`~bams3_spark.coverage.depth.DepthAccumulator` for the rule; this
module holds its state (:class:`PendingMates`, carried from chunk to chunk)
and applies it to a chunk's candidate reads with array operations
(:class:`MateRule`), reporting depth corrections as +1/-1 events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from bams3_spark.arrays import bools, encoded, int_array, int_scalar, ints, string_array, strings
from bams3_spark.coverage.cigar import expand_blocks, parse_cigars

I64 = npt.NDArray[np.int64]

#: Kinds of mate candidates in mosdepth's rule: store, store-if-unseen, take (see DepthAccumulator).
STORE, STORE_IF_UNSEEN, TAKE = 0, 1, 2
#: ``index_in``'s answer for a name not stored (an Arrow scalar: a Python -1 would load pandas).
_NOT_FOUND = int_scalar(-1, pa.int32())


@dataclass
class PendingMates:
    """First mates stored by mosdepth's ``seen`` table, kept between chunks."""

    qname: pa.Array
    start: I64
    stop: I64
    n_ops: I64
    cigar: pa.Array

    @classmethod
    def empty(cls) -> PendingMates:
        z = np.zeros(0, dtype=np.int64)
        return cls(string_array([]), z, z.copy(), z.copy(), string_array([]))

    def __len__(self) -> int:
        return len(self.start)


class MateRule:
    """The state of mosdepth's mate-overlap rule for one reference, and its application to chunks."""

    def __init__(self) -> None:
        self.pending = PendingMates.empty()

    def __len__(self) -> int:
        return len(self.pending)

    def apply(
        self, chunk: pa.Table, rows: I64, cand: I64, start: I64, stop: I64, cigars: pa.Array, codes: I64,
        n_ops: I64, name: str, add_events: Callable[[I64, I64], None],
    ) -> None:
        """Apply mosdepth's mate-overlap rule to candidate rows of a chunk.

        Args:
            chunk: The chunk's records, with at least ``qname``, ``rnext`` and ``pnext``.
            rows: Rows of ``chunk`` of the candidates: passing reads with
                proper-pair and not supplementary, in order.
            cand: The candidates' indexes among the passing reads.
            start: 0-based start of every passing read.
            stop: ``bam_endpos`` of every passing read.
            cigars: The chunk's distinct CIGAR texts.
            codes: Index into ``cigars`` of every passing read.
            n_ops: CIGAR op count of every passing read.
            name: The reference's name (``rnext`` equal to it is the same reference).
            add_events: Adds +1 and -1 events to the depth differences.
        """
        qnames = strings(chunk.column("qname"))
        rnext, rnext_codes = encoded(chunk.column("rnext"))
        same_value = bools(pc.is_in(rnext, value_set=string_array(["=", name] if name else ["="])))
        same = same_value[rnext_codes[rows]]
        mpos = ints(chunk.column("pnext"))[rows] - 1
        st = start[cand]
        sp = stop[cand]
        base = same & (sp > mpos)
        typ = np.full(len(cand), TAKE, dtype=np.int8)
        typ[base & (st == mpos)] = STORE_IF_UNSEEN
        typ[base & (st < mpos)] = STORE

        # A TAKE row whose QNAME has no read stored (in this chunk or from an
        # earlier one) changes nothing: only rows sharing a QNAME with a read
        # that may be stored go through the state machine -- for short-insert
        # pairs that do not overlap, most rows are dropped here, and only the
        # names of the rows kept are copied out of the chunk.
        storable = typ != TAKE
        if not storable.all():
            names = qnames.take(int_array(rows[storable])).cast(pa.large_string())
            if len(self.pending):
                names = pa.concat_arrays([names, self.pending.qname.cast(pa.large_string())])
            if len(names) == 0:
                return
            keep = storable | bools(pc.is_in(qnames, value_set=names.cast(qnames.type)))[rows]
            if not keep.all():
                idx = np.flatnonzero(keep)
                rows, typ, st, sp, cand = rows[idx], typ[idx], st[idx], sp[idx], cand[idx]
        qn = qnames.take(int_array(rows)).cast(pa.large_string())

        genc = qn.dictionary_encode()
        gcode = ints(genc.indices)
        ngroups = len(genc.dictionary)
        if len(self.pending):
            found = pc.index_in(genc.dictionary, value_set=self.pending.qname)
            pidx = ints(found.fill_null(_NOT_FOUND))
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
        pend = self.pending
        cand_codes = codes[cand]
        cand_nops = n_ops[cand]

        def cigar_of(idx: I64) -> pa.Array:
            """The CIGAR texts of candidates ``idx``."""
            return cigars.take(int_array(cand_codes[idx])).cast(pa.large_string())

        if len(rc) or len(rp):
            rec_rows = np.concatenate((rc, rp))
            self._subtract(
                add_events,
                rec_start=st[rec_rows],
                rec_nops=cand_nops[rec_rows],
                rec_cigar=cigar_of(rec_rows),
                mate_start=np.concatenate((st[mc], pend.start[mp])),
                mate_stop=np.concatenate((sp[mc], pend.stop[mp])),
                mate_nops=np.concatenate((cand_nops[mc], pend.n_ops[mp])),
                mate_cigar=pa.concat_arrays([
                    cigar_of(mc),
                    pend.cigar.take(int_array(mp)).cast(pa.large_string()),
                ]),
            )

        rem = np.concatenate(remove_p).astype(np.int64)
        add = np.sort(np.concatenate(add_rows).astype(np.int64))
        if len(rem) or len(add):
            keep = np.ones(len(pend), dtype=bool)
            keep[rem] = False
            keep_idx = int_array(np.flatnonzero(keep))
            add_idx = int_array(add)
            self.pending = PendingMates(
                qname=pa.concat_arrays([
                    pend.qname.take(keep_idx).cast(pa.large_string()),
                    qn.take(add_idx).cast(pa.large_string()),
                ]),
                start=np.concatenate((pend.start[keep], st[add])),
                stop=np.concatenate((pend.stop[keep], sp[add])),
                n_ops=np.concatenate((pend.n_ops[keep], cand_nops[add])),
                cigar=pa.concat_arrays([
                    pend.cigar.take(keep_idx).cast(pa.large_string()),
                    cigar_of(add),
                ]),
            )

    def _subtract(
        self, add_events: Callable[[I64, I64], None], *, rec_start: I64, rec_nops: I64, rec_cigar: pa.Array,
        mate_start: I64, mate_stop: I64, mate_nops: I64, mate_cigar: pa.Array,
    ) -> None:
        """Remove the double-counted part of each (rec, stored mate) pair."""
        single = (rec_nops == 1) & (mate_nops == 1)
        # mosdepth: dec(arr[rec.start]); inc(arr[mate.stop])
        add_events(mate_stop[single], rec_start[single])
        multi = np.flatnonzero(~single)
        if len(multi) == 0:
            return
        # mosdepth sorts the start/end events of both reads (rec's first,
        # stable) and, whenever an end event arrives while both reads cover the
        # position (pair depth 2), subtracts [previous event, this event):
        # i.e. the intersection of the two reads' aligned blocks.
        m = len(multi)
        cig = pa.concat_arrays([
            strings(rec_cigar).take(int_array(multi)).cast(pa.large_string()),
            strings(mate_cigar).take(int_array(multi)).cast(pa.large_string()),
        ])
        enc = cig.dictionary_encode()
        codes = ints(enc.indices)
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
        add_events(ev_pos[hit], ev_pos[hit - 1])
