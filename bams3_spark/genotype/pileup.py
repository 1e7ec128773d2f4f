"""Allele counts at sites from a batch of records, by ``samtools mpileup -B``'s rules, vectorized.

One call counts the reads of one reference (the chunks holding a group of
sites, in file order) at sorted sites. What htslib's pileup does read by read
is done here with arrays over (read, site) pairs:

* the read filters of ``mpileup`` (``mplp_func``): unmapped, ``--ff``/``--rf``,
  ``-q``, orphans unless ``-A``;
* htslib's depth limit (``bam_plp_push``): a read starting where the previous
  read started is dropped when the buffer holds more than ``-d`` reads;
* the base, deletion, reference skip and insertion of each read at each site
  (``resolve_cigar2``), the quality that decides it (a deletion's is the next
  base's);
* the overlap of mates (``overlap_push`` and htslib 1.16's
  ``tweak_overlap_quality``): the first-pushed read of a proper pair is
  remembered by QNAME, and when its mate arrives one of the two qualities is
  zeroed where both have an aligned base (which one: a hash of the QNAME) --
  only at the positions htslib's walk visits, which skips some after a gap;
* the ``-Q`` filter, after that adjustment.
"""

from __future__ import annotations

import bisect

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from bams3_spark.genotype.cigars import DEL, DIFF, EQ, SKIP, M
from bams3_spark.genotype.options import GenotypeOptions
from bams3_spark.genotype.overlaps import overlap_adjusted
from bams3_spark.genotype.reads import Reads

I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

#: Count categories, in the order of the counts array's second axis.
CATEGORIES = ("A", "C", "G", "T", "N", "del", "ins")
_BASE_CAT = np.full(256, 4, dtype=np.int64)
for _i, _c in enumerate("ACGT"):
    _BASE_CAT[ord(_c)] = _i
    _BASE_CAT[ord(_c.lower())] = _i
_DEL_CAT, _INS_CAT = 5, 6


def depth_limit(pos0: I64, end: I64, max_depth: int) -> B:
    """Which reads htslib's pileup accepts under ``-d max_depth`` (reads in file order).

    ``bam_plp_push`` drops a read when the previous read started at the same
    position and its buffer holds more than ``max_depth`` nodes (one spare
    node plus the reads still overlapping the position before). So the first
    read at a position is always taken, then at most ``max_depth - A`` in all,
    where A is the number of reads taken earlier that reach the position.
    """
    n = len(pos0)
    keep = np.ones(n, dtype=bool)
    if max_depth <= 0 or n == 0:
        return keep
    # Bound: reads started by q minus reads ended before q, at each start.
    started = np.searchsorted(pos0, pos0, side="right")
    ended = np.searchsorted(np.sort(end), pos0, side="left")
    if int((started - ended).max()) <= max_depth:
        return keep
    keep[:] = False
    uniq, first, counts = np.unique(pos0, return_index=True, return_counts=True)
    ends: list[int] = []
    for q, i0, nq in zip(uniq.tolist(), first.tolist(), counts.tolist(), strict=True):
        alive = len(ends) - bisect.bisect_left(ends, q)
        k = min(nq, max(1, max_depth - alive))
        keep[i0: i0 + k] = True
        for e in end[i0: i0 + k].tolist():
            bisect.insort(ends, e)
    return keep

def count_sites(table: pa.Table, sites: I64, options: GenotypeOptions, rname: str) -> I64:
    """Count alleles of one reference's reads at sorted, distinct 0-based sites.

    Args:
        table: Records of one reference in file order (at least the columns
            of :attr:`GenotypeOptions.columns`).
        sites: Sorted distinct 0-based positions.
        options: Counting options.
        rname: The reference's name (a mate's RNEXT may spell it out).

    Returns:
        Counts of shape (sites, 7, 2): categories :data:`CATEGORIES` by strand (forward, reverse).
    """
    out = np.zeros((len(sites), len(CATEGORIES), 2), dtype=np.int64)
    if len(sites) == 0 or table.num_rows == 0:
        return out
    r = Reads(table, options)
    if r.n == 0:
        return out
    pushed = depth_limit(r.pos0, r.end, options.max_depth)
    lo = np.searchsorted(sites, r.pos0, side="left")
    hi = np.where(pushed, np.searchsorted(sites, r.end, side="left"), lo)
    cnt = np.maximum(hi - lo, 0)
    total = int(cnt.sum())
    if total == 0:
        return out
    ridx = np.repeat(np.arange(r.n, dtype=np.int64), cnt)
    sidx = np.repeat(lo, cnt) + (np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt))
    site_pos = sites[sidx]
    off = site_pos - r.pos0[ridx]
    ct = r.cigars
    j = ct.op_at(r.cigar_id[ridx], off)
    code = ct.code[j]
    is_match = np.isin(code, [M, EQ, DIFF])
    is_del = code == DEL
    is_skip = code == SKIP
    qpos = ct.q_start[j] + np.where(is_match, off - ct.ref_start[j], 0)
    ins = ct.ins_after[j] & (off == ct.ref_end[j] - 1)
    base, qual = r.base_qual(ridx, qpos)

    if not options.ignore_overlaps:
        qual = overlap_adjusted(r, pushed, cnt > 0, rname, ridx, site_pos, j, is_match, is_del, base, qual)

    take = qual >= options.min_base_quality
    strand = ((r.flag[ridx] & 0x10) != 0).astype(np.int64)
    cat = np.where(is_match, _BASE_CAT[base.astype(np.uint8)], np.where(is_del, _DEL_CAT, -1))
    counted = take & ~is_skip & (cat >= 0)
    flat = out.reshape(-1)
    k = len(CATEGORIES) * 2
    np.add.at(flat, sidx[counted] * k + cat[counted] * 2 + strand[counted], 1)
    insc = take & ins
    np.add.at(flat, sidx[insc] * k + _INS_CAT * 2 + strand[insc], 1)
    return out


