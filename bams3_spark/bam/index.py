"""BAM indexes (BAI and CSI): which bytes of a BAM htslib reads for a region.

Parsed from the SAM/BAM specification (§5) and the CSIv1 specification; the
region rules reproduce htslib's ``hts_itr_query``, so a slice of a BAM holding
the bytes :meth:`BinIndex.region_chunks` names serves ``fetch`` exactly.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from bams3_spark.exceptions import InputFormatError

#: A BGZF block is at most 64 KiB, compressed.
MAX_BLOCK = 1 << 16

_U64_MAX = (1 << 64) - 1


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


def union_range(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), max(a[1], b[1])
