"""CIGAR operations as flat arrays, to find what a read has at a reference position without a loop per read.

Each distinct CIGAR string of a batch of reads is parsed once (they repeat a
lot); the operations of all of them are laid end to end so that one
``searchsorted`` finds the operation of every (read, position) pair.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

I64 = npt.NDArray[np.int64]

M, INS, DEL, SKIP, SOFT, HARD, PAD, EQ, DIFF = range(9)
_CODES = {c: i for i, c in enumerate("MIDNSHP=X")}
_OP_RE = re.compile(r"(\d+)([MIDNSHP=X])")
_REF = {M, DEL, SKIP, EQ, DIFF}
_QUERY = {M, INS, SOFT, EQ, DIFF}
_MATCH = {M, EQ, DIFF}
#: Positions are below 2**31, so (cigar id, offset) packs into one int64 key.
_SHIFT = 1 << 32


@dataclass(frozen=True)
class CigarTable:
    """The operations of distinct CIGAR strings, laid end to end (``ptr`` delimits each string's).

    Attributes:
        ptr: Operations of string ``i`` are ``[ptr[i], ptr[i+1])``.
        code: Operation code (``M I D N S H P = X`` are 0..8).
        length: Length of the operation.
        ref_start: Reference offset of the operation from the read's start.
        ref_end: ``ref_start`` plus its reference length.
        q_start: Query (SEQ) offset of the operation's first base.
        ins_after: The operation's last reference base is followed by an insertion (htslib's ``indel > 0``).
        next_match_ref: For each operation, the reference offset of the SEQ base
            at ``q_start`` when that base is aligned (M, =, X) after it, else -1
            (the base whose quality samtools gives a deletion).
        ref_len: Reference length of each string (htslib's ``bam_cigar2rlen``).
        has_gap: Whether each string has a D or N operation.
        key: ``string id * 2**32 + ref_end`` of every operation, ascending.
    """

    ptr: I64
    code: I64
    length: I64
    ref_start: I64
    ref_end: I64
    q_start: I64
    ins_after: npt.NDArray[np.bool_]
    next_match_ref: I64
    ref_len: I64
    has_gap: npt.NDArray[np.bool_]
    key: I64

    def op_at(self, cigar_id: I64, offset: I64) -> I64:
        """Index of the reference-consuming operation covering ``offset`` of each read.

        Offsets must lie in ``[0, ref_len)`` of the read's CIGAR: the first
        operation ending after the offset then covers it (operations that
        consume no reference end where they start, before it).
        """
        return np.searchsorted(self.key, cigar_id * _SHIFT + offset, side="right").astype(np.int64)


def _parse_one(text: str) -> list[tuple[int, int]]:
    if text in ("*", ""):
        return []
    ops = [(int(n), _CODES[c]) for n, c in _OP_RE.findall(text)]
    if sum(len(f"{n}") + 1 for n, _ in ops) != len(text):
        raise ValueError(f"invalid CIGAR string {text!r}")
    return ops


def parse_cigar_table(cigars: pa.Array) -> CigarTable:
    """Parse distinct CIGAR strings (one Python pass over the distinct strings, not over reads).

    Raises:
        ValueError: On a malformed CIGAR string.
    """
    code: list[int] = []
    length: list[int] = []
    ptr = [0]
    for text in cigars.to_pylist():
        for n, c in _parse_one(text):
            code.append(c)
            length.append(n)
        ptr.append(len(code))
    p = np.asarray(ptr, dtype=np.int64)
    cd = np.asarray(code, dtype=np.int64)
    ln = np.asarray(length, dtype=np.int64)
    n = len(p) - 1
    owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(p))
    is_ref = np.isin(cd, list(_REF))
    is_query = np.isin(cd, list(_QUERY))
    ref_step = np.where(is_ref, ln, 0)
    q_step = np.where(is_query, ln, 0)
    ref_cum = np.cumsum(ref_step)
    q_cum = np.cumsum(q_step)
    first = p[:-1]
    ref_base = np.concatenate(([0], ref_cum))[first]
    q_base = np.concatenate(([0], q_cum))[first]
    ref_end = ref_cum - ref_base[owner]
    q_end = q_cum - q_base[owner]
    ref_start = ref_end - ref_step
    q_start = q_end - q_step
    ref_len = np.zeros(n, dtype=np.int64)
    nonempty = np.diff(p) > 0
    ref_len[nonempty] = ref_end[p[1:][nonempty] - 1]
    has_gap = np.zeros(n, dtype=bool)
    gap_ops = np.isin(cd, [DEL, SKIP])
    np.logical_or.at(has_gap, owner[gap_ops], True)

    # htslib's resolve_cigar2: at an operation's last reference base, the next
    # operation being I (or P..P I) makes an insertion (P runs are skipped).
    ins_after = np.zeros(len(cd), dtype=bool)
    next_match_ref = np.full(len(cd), -1, dtype=np.int64)
    last_of_string = np.zeros(len(cd), dtype=bool)
    last_of_string[p[1:][nonempty] - 1] = True
    nxt = np.append(cd[1:], -1)
    nxt[last_of_string] = -1
    ins_after[:] = nxt == INS
    has_pad = np.flatnonzero(nxt == PAD)
    for j in has_pad.tolist():  # padded CIGARs are rare: follow them op by op
        end = int(p[owner[j] + 1])
        k = j + 2
        total = 0
        while k < end:
            if cd[k] == INS:
                total += 1
            elif cd[k] in (DEL, M, SKIP, EQ, DIFF):
                break
            k += 1
        ins_after[j] = total > 0
    # The SEQ base after each operation: the first later query-consuming
    # operation; its first base is aligned if that operation is M, = or X.
    is_match = np.isin(cd, list(_MATCH))
    pos_of_next_q = np.full(len(cd), -1, dtype=np.int64)
    q_idx = np.flatnonzero(is_query)
    if len(cd):
        # For each op j, the first query-consuming op at index > j in the same string.
        cand = np.searchsorted(q_idx, np.arange(len(cd)), side="right")
        ok = cand < len(q_idx)
        nq = np.where(ok, q_idx[np.minimum(cand, max(len(q_idx) - 1, 0))], -1) if len(q_idx) else cand * 0 - 1
        same = ok & (owner[np.maximum(nq, 0)] == owner)
        pos_of_next_q[same] = nq[same]
        good = (pos_of_next_q >= 0) & is_match[np.maximum(pos_of_next_q, 0)]
        next_match_ref[good] = ref_start[pos_of_next_q[good]]
    key = owner * _SHIFT + ref_end
    return CigarTable(
        ptr=p, code=cd, length=ln, ref_start=ref_start, ref_end=ref_end, q_start=q_start,
        ins_after=ins_after, next_match_ref=next_match_ref, ref_len=ref_len, has_gap=has_gap, key=key,
    )
