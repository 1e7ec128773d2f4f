"""A batch of records as arrays: the filtered reads of one reference, their CIGARs, bases and qualities."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from bams3_spark.arrays import int_array, ints, strings
from bams3_spark.genotype.cigars import DIFF, EQ, CigarTable, M, parse_cigar_table
from bams3_spark.genotype.options import GenotypeOptions

I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

MISSING_QUAL = 255  # SAM '*' quality: htslib stores 0xff


def _bytes(arr: pa.Array) -> tuple[npt.NDArray[np.uint8], I64, I64]:
    """(bytes, start offset per value, length per value) of a string array; ``*`` has length 0."""
    bufs = arr.buffers()
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=width)[arr.offset: arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1]
    lengths = np.diff(offsets)
    first = np.zeros(len(arr), dtype=np.uint8)
    some = lengths > 0
    first[some] = data[starts[some]]
    lengths = np.where((lengths == 1) & (first == ord("*")), 0, lengths)
    return data, starts, lengths



class Reads:
    """The reads of a batch that ``mpileup``'s read filters keep, as arrays (file order kept)."""

    def __init__(self, table: pa.Table, options: GenotypeOptions) -> None:
        flag = ints(table["flag"])
        pos = ints(table["pos"])
        mapq = ints(table["mapq"])
        keep = (pos > 0) & ((flag & 0x4) == 0) & ((flag & options.exclude_flags) == 0)
        keep &= mapq >= options.min_mapping_quality
        if options.require_flags:
            keep &= (flag & options.require_flags) != 0
        if not options.count_orphans:
            keep &= ~(((flag & 0x1) != 0) & ((flag & 0x2) == 0))
        rows = np.flatnonzero(keep)
        # Arrays are of the kept reads (``rows`` of the table); SEQ and QUAL
        # stay in the table's buffers, never copied.
        self.table = table
        self.rows = rows
        self.n = len(rows)
        self.flag = flag[rows]
        self.pos0 = pos[rows] - 1
        enc = strings(table["cigar"]).dictionary_encode()
        self.cigar_id = ints(enc.indices)[rows]
        try:
            self.cigars: CigarTable = parse_cigar_table(enc.dictionary)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        self.end = self.pos0 + self.cigars.ref_len[self.cigar_id]
        self.seq, seq_start, seq_len = _bytes(strings(table["seq"]))
        self.qual, qual_start, qual_len = _bytes(strings(table["qual"]))
        self.seq_start, self.seq_len = seq_start[rows], seq_len[rows]
        self.qual_start, self.qual_missing = qual_start[rows], qual_len[rows] == 0

    def column(self, name: str) -> pa.Array:
        """A string column's values of the kept reads."""
        return strings(self.table[name]).take(int_array(self.rows))

    def int_column(self, name: str) -> I64:
        """An integer column's values of the kept reads."""
        return ints(self.table[name])[self.rows]

    def at(self, reads: I64, refpos: I64) -> tuple[B, I64, I64]:
        """(aligned base there?, SEQ byte, quality) of each read at an absolute 0-based position."""
        inside = (refpos >= self.pos0[reads]) & (refpos < self.end[reads])
        off = np.where(inside, refpos - self.pos0[reads], 0)
        cid = self.cigar_id[reads]
        j = self.cigars.op_at(cid, off)
        j = np.minimum(j, max(len(self.cigars.code) - 1, 0))
        code = self.cigars.code[j] if len(self.cigars.code) else np.zeros(len(reads), np.int64)
        match = inside & np.isin(code, [M, EQ, DIFF])
        qpos = np.where(match, self.cigars.q_start[j] + off - self.cigars.ref_start[j], 0)
        base, qual = self.base_qual(reads, qpos)
        return match & (qpos < self.seq_len[reads]), base, qual

    def base_qual(self, reads: I64, qpos: I64) -> tuple[I64, I64]:
        """SEQ byte (``N`` past the end, as samtools prints) and quality (0 past the end) at query offsets."""
        valid = qpos < self.seq_len[reads]
        idx = np.where(valid, self.seq_start[reads] + qpos, 0)
        base = np.where(valid, self.seq[idx] if len(self.seq) else 0, ord("N")).astype(np.int64)
        qidx = np.where(valid & ~self.qual_missing[reads], self.qual_start[reads] + qpos, 0)
        raw = (self.qual[qidx].astype(np.int64) - 33) if len(self.qual) else np.zeros(len(reads), np.int64)
        qual = np.where(valid, np.where(self.qual_missing[reads], MISSING_QUAL, raw), 0)
        return base, qual


