"""Overlapping mates as htslib 1.16 treats them: which reads pair up, and how their qualities change.

``overlap_push`` remembers the first-pushed read of a proper pair by QNAME;
when its mate arrives, ``tweak_overlap_quality`` zeroes one of the two
qualities where both have an aligned base (which one: a hash of the QNAME),
only at the positions its walk visits, which skips some after a gap.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow.compute as pc

from bams3_spark.arrays import bools, int_array, ints, string_array, strings
from bams3_spark.genotype.cigars import DEL, DIFF, EQ, SKIP, M
from bams3_spark.genotype.reads import MISSING_QUAL, Reads

I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]


def _mate_pairs(r: Reads, pushed: B, covering: B, rname: str) -> tuple[I64, I64]:
    """(first, second) read of every pair whose qualities htslib's overlap detection adjusts.

    Only QNAMEs of reads at sites matter. Two pushed reads of a QNAME pair up
    when the first is remembered (proper pair, mate mapped on this reference,
    not obviously apart, mate not before it) and the second is eligible; any
    other group replays ``overlap_push`` read by read.
    """
    flag = r.flag
    tlen = r.int_column("tlen")
    mpos = r.int_column("pnext") - 1
    rnext = r.column("rnext")
    other_ref = ~bools(pc.is_in(rnext, value_set=string_array(["=", "*", rname])))
    eligible = (
        pushed & ((flag & 0x8) == 0) & ((flag & 0x2) != 0) & ~other_ref
        & ~((np.abs(tlen) >= 2 * r.seq_len) & (mpos >= r.end))
    )
    storable = eligible & ((mpos >= r.pos0) | (((flag & 0x1) != 0) & (mpos == -1)))
    empty = np.zeros(0, dtype=np.int64)
    wanted = covering & eligible
    if not wanted.any():
        return empty, empty
    qn_all = strings(r.table["qname"])
    names = qn_all.take(int_array(r.rows[wanted]))
    member_all = bools(pc.is_in(qn_all, value_set=names))
    member = member_all[r.rows]
    qn = qn_all
    rows = np.flatnonzero(member)
    enc = qn.take(int_array(r.rows[rows])).dictionary_encode()
    g = ints(enc.indices)
    ng = len(enc.dictionary)
    counts = np.bincount(g, minlength=ng)
    order = np.argsort(g, kind="stable")
    ptr = np.concatenate(([0], np.cumsum(counts)))
    dropped_in = np.bincount(g, weights=(~pushed[rows]).astype(np.float64), minlength=ng) > 0
    two = np.flatnonzero((counts == 2) & ~dropped_in)
    a = rows[order[ptr[two]]]
    b = rows[order[ptr[two] + 1]]
    ok = storable[a] & eligible[b]
    firsts = [a[ok]]
    seconds = [b[ok]]
    slow = np.flatnonzero(~((counts == 2) & ~dropped_in))
    if len(slow):
        pushed_idx = np.flatnonzero(pushed)
        prev_pos = np.full(r.n, -1, dtype=np.int64)  # start of the read pushed before each
        prev_pos[pushed_idx[1:]] = r.pos0[pushed_idx[:-1]]
        fa: list[int] = []
        fb: list[int] = []
        for grp in slow.tolist():
            members = rows[order[ptr[grp]: ptr[grp + 1]]].tolist()
            entry: int | None = None
            alive: list[int] = []
            for x in members:
                if not pushed[x]:
                    entry = None  # a dropped read clears its QNAME (overlap_remove)
                    continue
                cursor = int(prev_pos[x])
                if any(r.end[q] <= cursor - 1 for q in alive):
                    # A read of the QNAME left the buffer: its removal clears the QNAME too.
                    alive = [q for q in alive if r.end[q] > cursor - 1]
                    entry = None
                alive.append(x)
                if not eligible[x]:
                    continue
                if entry is None:
                    if storable[x]:
                        entry = x
                else:
                    fa.append(entry)
                    fb.append(x)
                    entry = None
        firsts.append(np.asarray(fa, dtype=np.int64))
        seconds.append(np.asarray(fb, dtype=np.int64))
    return np.concatenate(firsts), np.concatenate(seconds)

def qname_parity(name: str) -> int:
    """htslib's choice of the read of a pair that keeps its qualities: Wang(X31(QNAME)) & 1 (1: the first)."""
    data = name.encode()
    h = data[0] if data else 0
    for c in data[1:]:
        h = ((h << 5) - h + c) & 0xFFFFFFFF
    k = h
    k = (k + (~(k << 15) & 0xFFFFFFFF)) & 0xFFFFFFFF
    k ^= k >> 10
    k = (k + (k << 3)) & 0xFFFFFFFF
    k ^= k >> 6
    k = (k + (~(k << 11) & 0xFFFFFFFF)) & 0xFFFFFFFF
    k ^= k >> 16
    return k & 1


class _Walk:
    """htslib's ``cigar_iref2iseq_set``/``_next``: a read's aligned (M, =, X) bases one by one."""

    def __init__(self, ops: list[tuple[int, int]], target: int) -> None:
        self.ops = ops
        self.ci = 0
        self.icig = 0
        self.iseq = 0
        self.iref = 0
        self.ok = self._set(target)

    def _set(self, pos: int) -> bool:
        if pos < 0:
            return False
        ops = self.ops
        while self.ci < len(ops):
            code, n = ops[self.ci]
            if code == 4:  # S
                self.ci += 1
                self.iseq += n
                self.icig = 0
            elif code in (5, 6):  # H P
                self.ci += 1
                self.icig = 0
            elif code in (M, EQ, DIFF):
                pos -= n
                if pos < 0:
                    self.icig = n + pos
                    self.iseq += self.icig
                    self.iref += self.icig
                    return True
                self.ci += 1
                self.iseq += n
                self.icig = 0
                self.iref += n
            elif code == 1:  # I
                self.ci += 1
                self.iseq += n
                self.icig = 0
            else:  # D N
                pos = max(0, pos - n)
                self.ci += 1
                self.icig = 0
                self.iref += n
        self.iseq = -1
        return False

    def next(self) -> bool:
        ops = self.ops
        while self.ci < len(ops):
            code, n = ops[self.ci]
            if code in (M, EQ, DIFF):
                if self.icig >= n - 1:
                    self.icig = -1
                    self.ci += 1
                    continue
                self.iseq += 1
                self.icig += 1
                self.iref += 1
                return True
            if code in (DEL, SKIP):
                self.iref += n
            elif code in (1, 4):
                self.iseq += n
            self.ci += 1
            self.icig = -1
        self.iseq = -1
        self.iref = -1
        self.ok = False
        return False


def tweak_pair(
    ops_a: list[tuple[int, int]], pos_a: int, seq_a: bytes, qual_a: list[int],
    ops_b: list[tuple[int, int]], pos_b: int, seq_b: bytes, qual_b: list[int], keep_a: bool,
) -> None:
    """htslib 1.16's ``tweak_overlap_quality`` on read a (pushed first) and its mate b, in place.

    Both reads walk their aligned bases from b's start: a to the next base at
    or after the current position, the position moves there, b to its next
    base at or after it. Where they meet, same base: the chosen read
    (``keep_a``) gets the sum (at most 200) and the other 0; different bases:
    the higher quality keeps 80% (truncated) and the other 0, on a tie the
    chosen read keeps 80%. Where b has jumped a gap, a's bases before it are
    not compared at all (so some shared positions after a deletion are left
    alone).
    """
    amul, bmul = (1, 0) if keep_a else (0, 1)
    iref = pos_b
    wa = _Walk(ops_a, iref - pos_a)
    if not wa.ok:
        return
    wb = _Walk(ops_b, 0)
    if not wb.ok:
        return
    la, lb = len(qual_a), len(qual_b)
    while True:
        while wa.ok and wa.iref >= 0 and wa.iref < iref - pos_a:
            wa.next()
        if not wa.ok:
            return
        iref = max(iref, wa.iref + pos_a)
        while wb.ok and wb.iref >= 0 and wb.iref < iref - pos_b:
            wb.next()
        if not wb.ok:
            return
        iref = max(iref, wb.iref + pos_b) + 1
        if wa.iref + pos_a != wb.iref + pos_b:
            continue  # htslib 1.16 compares only where both have an aligned base
        ia, ib = wa.iseq, wb.iseq
        if ia >= la or ib >= lb or ia >= len(seq_a) or ib >= len(seq_b):
            return  # htslib gives up on a read without bases there
        qa, qb = qual_a[ia], qual_b[ib]
        if seq_a[ia] == seq_b[ib]:
            q = min(qa + qb, 200)
            qual_a[ia] = amul * q
            qual_b[ib] = bmul * q
        elif qa > qb:
            qual_a[ia] = int(0.8 * qa)
            qual_b[ib] = 0
        elif qa < qb:
            qual_b[ib] = int(0.8 * qb)
            qual_a[ia] = 0
        else:
            qual_a[ia] = int(amul * 0.8 * qa)
            qual_b[ib] = int(bmul * 0.8 * qb)


def overlap_adjusted(
    r: Reads, pushed: B, covering: B, rname: str, ridx: I64, site_pos: I64, j: I64,
    is_match: B, is_del: B, base: I64, qual: I64,
) -> I64:
    """Qualities of (read, site) entries after htslib's mate-overlap adjustment."""
    first, second = _mate_pairs(r, pushed, covering, rname)
    if len(first) == 0:
        return qual
    partner = np.full(r.n, -1, dtype=np.int64)
    is_first = np.zeros(r.n, dtype=bool)
    partner[first] = second
    partner[second] = first
    is_first[first] = True
    # htslib outputs position s once a read starting after s is pushed: the
    # adjustment made when the second read is pushed is seen from the start
    # of the read pushed before it.
    pushed_idx = np.flatnonzero(pushed)
    prev_pos = np.full(r.n, -1, dtype=np.int64)
    prev_pos[pushed_idx[1:]] = r.pos0[pushed_idx[:-1]]
    later_start = np.full(r.n, -1, dtype=np.int64)
    later_start[first] = prev_pos[second]
    later_start[second] = prev_pos[second]

    # Where the entry's quality comes from: its own base (aligned), or for a
    # deletion the base after it -- adjusted only if the mate was pushed
    # before samtools output the site.
    nxt = r.cigars.next_match_ref[j]
    del_ok = is_del & (nxt >= 0) & (site_pos >= later_start[ridx])
    cand = np.flatnonzero((partner[ridx] >= 0) & (is_match | del_ok))
    if len(cand) == 0:
        return qual
    reads = ridx[cand]
    mates = partner[reads]
    out = qual.copy()
    qn = strings(r.table["qname"])
    gapped = r.cigars.has_gap[r.cigar_id[reads]] | r.cigars.has_gap[r.cigar_id[mates]]

    # Pairs without D or N: both walk base by base together; only the
    # site's own base matters.
    fast = np.flatnonzero(~gapped)
    if len(fast):
        rd, mt = reads[fast], mates[fast]
        where = site_pos[cand[fast]]
        mate_ok, mate_base, mate_q = r.at(mt, where)
        own_q = qual[cand[fast]]
        own_base = base[cand[fast]]
        idx = np.flatnonzero(mate_ok & (where >= later_start[rd]))
        if len(idx):
            me_first = is_first[rd[idx]]
            firsts = np.where(me_first, rd[idx], mt[idx])
            keep_a = np.array([qname_parity(qn[int(r.rows[x])].as_py()) for x in firsts], dtype=bool)
            qa = np.where(me_first, own_q[idx], mate_q[idx])
            qb = np.where(me_first, mate_q[idx], own_q[idx])
            same = own_base[idx] == mate_base[idx]
            q = np.minimum(qa + qb, 200)
            new_a = np.where(same, q * keep_a, np.where(qa > qb, (0.8 * qa).astype(np.int64),
                             np.where(qa < qb, 0, (keep_a * 0.8 * qa).astype(np.int64))))
            new_b = np.where(same, q * ~keep_a, np.where(qa > qb, 0, np.where(
                qa < qb, (0.8 * qb).astype(np.int64), ((~keep_a) * 0.8 * qb).astype(np.int64))))
            out[cand[fast[idx]]] = np.where(me_first, new_a, new_b)

    # Pairs with a deletion or skip: replay htslib's walk over the pair.
    slow = np.flatnonzero(gapped)
    if len(slow):
        cache: dict[int, list[int]] = {}
        qoff = r.cigars.q_start[j]
        for i in slow.tolist():
            x = int(reads[i])
            if x not in cache:
                a = x if is_first[x] else int(partner[x])
                b = int(partner[a])
                qa_, qb_ = _read_quals(r, a), _read_quals(r, b)
                keeps_first = bool(qname_parity(qn[int(r.rows[a])].as_py()))
                tweak_pair(
                    _ops(r, a), int(r.pos0[a]), _read_seq(r, a), qa_,
                    _ops(r, b), int(r.pos0[b]), _read_seq(r, b), qb_, keeps_first,
                )
                cache[a], cache[b] = qa_, qb_
            qpos = int(qoff[cand[i]]) + (int(site_pos[cand[i]] - r.pos0[x] - r.cigars.ref_start[j[cand[i]]])
                                           if is_match[cand[i]] else 0)
            quals = cache[x]
            if qpos < len(quals):
                out[cand[i]] = quals[qpos]
    return out


def _ops(r: Reads, x: int) -> list[tuple[int, int]]:
    cid = int(r.cigar_id[x])
    lo, hi = int(r.cigars.ptr[cid]), int(r.cigars.ptr[cid + 1])
    return list(zip(r.cigars.code[lo:hi].tolist(), r.cigars.length[lo:hi].tolist(), strict=True))


def _read_seq(r: Reads, x: int) -> bytes:
    s = int(r.seq_start[x])
    return bytes(r.seq[s: s + int(r.seq_len[x])])


def _read_quals(r: Reads, x: int) -> list[int]:
    n = int(r.seq_len[x])
    if r.qual_missing[x]:
        return [MISSING_QUAL] * n
    s = int(r.qual_start[x])
    return [int(v) - 33 for v in r.qual[s: s + n]]
