"""The converter's BAM reader: raw records between virtual offsets, cut into windows, decoded in columns.

:class:`BamScanner` reads a local BAM's BGZF blocks with libdeflate
(:class:`~bams3_spark.io.bgzf.BgzfReader`), finds where each record starts
(the only loop over records, a few hundred nanoseconds each: ``block_size``
chains them), and groups the records into windows as raw bytes
(:class:`RawRecords`), which cross process boundaries cheaply. Decoding them
(:func:`decode_window`) is :func:`bams3_spark.bam.records.decode_records`; the
rare records it leaves to htslib go through pysam as before, from a small
temporary BAM holding the header and those records.

* Indexed input: :meth:`BamScanner.windows` reads from the first virtual
  offset the index gives for a run of windows to the last (htslib's own plan,
  :meth:`~bams3_spark.bam.index.BinIndex.region_chunks`), keeping the records
  that *start* in them, as ``fetch`` + a start filter did.
* Unindexed input: :meth:`BamScanner.stream` reads every record once, checks
  the coordinate order, and yields windows (split at ``max_records``).
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from bams3_spark.bam.index import BinIndex, parse_index
from bams3_spark.bam.reader import open_bam, record_text
from bams3_spark.bam.records import NotDecodable, decode_records, padded, record_keys
from bams3_spark.exceptions import InputFormatError, UnsortedInputError
from bams3_spark.format.sam import lines_to_table
from bams3_spark.io.bgzf import BgzfReader, BgzfWriter

I64 = npt.NDArray[np.int64]
_I32 = struct.Struct("<i")
#: The smallest BAM record: block_size counts the 32 bytes of fixed fields.
_MIN_BLOCK = 32


@dataclass
class RawRecords:
    """Raw BAM records of one window (or of one part of a window), back to back.

    Attributes:
        tid: Reference index, -1 for unplaced reads.
        window_start: 0-based start of the window (0 for unplaced reads).
        data: The records' bytes, as in the BAM (without BGZF).
        offsets: Where each record starts in ``data``.
    """

    tid: int
    window_start: int
    data: bytes
    offsets: I64 = field(repr=False)

    def __len__(self) -> int:
        return len(self.offsets)


def index_path(bam_path: str) -> str | None:
    """The BAI/CSI index htslib would use for a local BAM, if any."""
    candidates = [bam_path + ".bai"]
    if bam_path.endswith(".bam"):
        candidates.append(bam_path[:-4] + ".bai")
    candidates.append(bam_path + ".csi")
    return next((c for c in candidates if os.path.exists(c)), None)


#: Records decoded at a time: the temporaries of a batch stay a few MB and in cache.
DECODE_BATCH = 16_384


def decode_window(raw: RawRecords, names: list[str], header: bytes) -> pa.Table:
    """The record table of raw records (see the module notes for the htslib fallback)."""
    if not len(raw):
        return decode_records(padded(b""), raw.offsets, names)
    buf = padded(raw.data)
    try:
        parts = [
            decode_records(buf, raw.offsets[i: i + DECODE_BATCH], names)
            for i in range(0, len(raw), DECODE_BATCH)
        ]
    except NotDecodable:
        return table_via_htslib(header, raw.data)
    # One array per column: the chunk's bytes then do not depend on the batches.
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts).combine_chunks()


def table_via_htslib(header: bytes, records: bytes) -> pa.Table:
    """Decode raw records through htslib: a temporary BAM of the header and them, read by pysam."""
    with tempfile.TemporaryDirectory(prefix="bams3-records-") as tmp:
        path = os.path.join(tmp, "records.bam")
        with BgzfWriter(path, level=1) as out:
            out.write(header)
            out.write(records)
        with open_bam(path) as bam:
            try:
                lines = [record_text(r) for r in bam.fetch(until_eof=True)]
            except OSError as exc:
                raise InputFormatError(f"damaged BAM record ({exc})") from None
    return lines_to_table(lines)


def _walk(buf: bytes, where: str) -> tuple[list[int], int]:
    """Offsets of the complete records at the start of ``buf``, and where the first incomplete one starts."""
    unpack = _I32.unpack_from
    n = len(buf)
    out: list[int] = []
    append = out.append
    o = 0
    while o + 4 <= n:
        size = unpack(buf, o)[0]
        nxt = o + 4 + size
        if nxt > n:
            break
        if size < _MIN_BLOCK:
            raise InputFormatError(f"{where}: damaged BAM record (block size {size})")
        append(o)
        o = nxt
    return out, o


class _Batches:
    """Collects runs of records into :class:`RawRecords`, one key (window) at a time."""

    def __init__(self, max_records: int | None) -> None:
        self.max = max_records
        self.key: tuple[int, int] | None = None
        self.parts: list[bytes] = []
        self.offsets: list[I64] = []
        self.size = 0
        self.count = 0

    def add(self, key: tuple[int, int], buf: bytes, offs: I64, stop: int) -> Iterator[RawRecords]:
        """Add consecutive records ``offs`` of ``buf`` (the last one ends at ``stop``)."""
        if key != self.key:
            yield from self.flush()
            self.key = key
        i = 0
        while i < len(offs):
            take = len(offs) - i if self.max is None else min(len(offs) - i, self.max - self.count)
            lo = int(offs[i])
            hi = int(offs[i + take]) if i + take < len(offs) else stop
            self.parts.append(buf[lo:hi])
            self.offsets.append(offs[i: i + take] - lo + self.size)
            self.size += hi - lo
            self.count += take
            i += take
            if self.max is not None and self.count >= self.max:
                yield from self.flush()

    def flush(self) -> Iterator[RawRecords]:
        if self.count and self.key is not None:
            data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
            yield RawRecords(self.key[0], self.key[1], data, np.concatenate(self.offsets))
        self.parts, self.offsets, self.size, self.count = [], [], 0, 0


class BamScanner:
    """Raw records of a local BAM, by windows (see the module notes).

    Args:
        path: A local BAM.
    """

    def __init__(self, path: str) -> None:
        with open_bam(path) as bam:
            self.first_record = int(bam.tell())
            self.names: list[str] = list(bam.references)
        self.path = path
        self._reader = BgzfReader(path)
        self.header = b"".join(self._reader.pieces(0, self.first_record))
        self._index: BinIndex | None = None

    def close(self) -> None:
        """Close the file."""
        self._reader.close()

    def __enter__(self) -> BamScanner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def index(self) -> BinIndex:
        """The BAM's BAI/CSI index (parsed on first use).

        Raises:
            InputFormatError: If there is none.
        """
        if self._index is None:
            path = index_path(self.path)
            if path is None:
                raise InputFormatError(f"{self.path}: no BAI/CSI index")
            with open(path, "rb") as fh:
                self._index = parse_index(fh.read(), path)
        return self._index

    def _records(self, begin: int, end: int | None) -> Iterator[tuple[bytes, I64, I64, I64, int]]:
        """(buffer, record offsets, refIDs, positions, end of the last record) per piece read."""
        leftover = b""
        for piece in self._reader.pieces(begin, end):
            buf = leftover + piece if leftover else piece
            offs, stop = _walk(buf, self.path)
            leftover = buf[stop:]
            if not offs:
                continue
            offsets = np.array(offs, dtype=np.int64)
            tid, pos = record_keys(np.frombuffer(buf, dtype=np.uint8), offsets)
            yield buf, offsets, tid, pos, stop
        if leftover:
            raise InputFormatError(f"{self.path}: truncated BAM record at the end of the data read")

    def windows(
        self, tid: int, starts: tuple[int, ...], chunk_size: int, length: int
    ) -> Iterator[RawRecords]:
        """The records of reference ``tid`` starting in consecutive windows ``starts``, by window.

        ``tid`` -1 gives the unplaced reads (every record from the index's
        unplaced-reads offset to the end of the file, as ``fetch('*')``).
        """
        batches = _Batches(None)
        if tid < 0:
            begin = self.index.unplaced_offset()
            if begin is None:
                return
            for buf, offs, _, _, stop in self._records(begin or self.first_record, None):
                yield from batches.add((-1, 0), buf, offs, stop)
            yield from batches.flush()
            return
        lo = starts[0]
        hi = min(starts[-1] + chunk_size, length)
        # The union of what htslib reads for each window (as fetch per window
        # did; the Spark job's slices hold exactly these bytes).
        chunks = [c for s in starts for c in self.index.region_chunks(tid, s, min(s + chunk_size, length))]
        if not chunks:
            return
        begin = min(c[0] for c in chunks)
        end = max(c[1] for c in chunks)
        for buf, offs, rtid, rpos, stop in self._records(begin, end):
            keep = np.flatnonzero((rtid == tid) & (rpos >= lo) & (rpos < hi))
            if not len(keep):
                continue
            window = rpos[keep] // chunk_size * chunk_size
            cuts = np.flatnonzero(window[1:] != window[:-1]) + 1
            for a, b in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [len(keep)])), strict=True):
                rows = keep[a:b]
                yield from self._add_rows(batches, (tid, int(window[a])), buf, offs, rows, stop)
        yield from batches.flush()

    @staticmethod
    def _add_rows(
        batches: _Batches, key: tuple[int, int], buf: bytes, offs: I64, rows: I64, stop: int
    ) -> Iterator[RawRecords]:
        if rows[-1] - rows[0] + 1 == len(rows):  # consecutive records: one byte range
            end = int(offs[rows[-1] + 1]) if rows[-1] + 1 < len(offs) else stop
            yield from batches.add(key, buf, offs[rows], end)
            return
        for r in rows.tolist():  # not consecutive (never in a sorted BAM): record by record
            end = int(offs[r + 1]) if r + 1 < len(offs) else stop
            yield from batches.add(key, buf, offs[r: r + 1], end)

    def stream(self, chunk_size: int, max_records: int) -> Iterator[RawRecords]:
        """Every record once, in file order, by window (parts of at most ``max_records``).

        Raises:
            UnsortedInputError: At the first record out of coordinate order.
        """
        batches = _Batches(max_records)
        last = (-1, -1)
        seen_unplaced = False
        for buf, offs, rtid, rpos, stop in self._records(self.first_record, None):
            unplaced = (rtid < 0) | (rpos < 0)
            key_tid = np.where(unplaced, -1, rtid)
            key_start = np.where(unplaced, 0, rpos - rpos % chunk_size)
            placed = np.flatnonzero(~unplaced)
            bad: int | None = None
            if len(placed):
                if seen_unplaced:
                    bad = int(placed[0])
                else:
                    t, p = rtid[placed], rpos[placed]
                    prev_t = np.concatenate(([last[0]], t[:-1]))
                    prev_p = np.concatenate(([last[1]], p[:-1]))
                    wrong = np.flatnonzero((t < prev_t) | ((t == prev_t) & (p < prev_p)))
                    if len(wrong):
                        bad = int(placed[wrong[0]])
                    elif unplaced.any():
                        after = np.flatnonzero(unplaced)[0]
                        later = placed[placed > after]
                        if len(later):
                            bad = int(later[0])
                    if bad is None:
                        last = (int(t[-1]), int(p[-1]))
            if bad is not None:
                raise UnsortedInputError(
                    f"{self.path}: not coordinate-sorted (record {_qname(buf, int(offs[bad]))!r}); "
                    "run 'samtools sort' first"
                )
            seen_unplaced = seen_unplaced or bool(unplaced.any())
            change = np.flatnonzero((key_tid[1:] != key_tid[:-1]) | (key_start[1:] != key_start[:-1])) + 1
            bounds = np.concatenate(([0], change, [len(offs)]))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                end = int(offs[b]) if b < len(offs) else stop
                yield from batches.add((int(key_tid[a]), int(key_start[a])), buf, offs[a:b], end)
        yield from batches.flush()


def _qname(buf: bytes, offset: int) -> str:
    l_name = buf[offset + 12]
    return buf[offset + 36: offset + 36 + l_name - 1].decode(errors="replace")
