"""Chunk objects of a dataset, and the one way to read them (FORMAT.md §5 "Integrity").

Every reader of chunk records (queries, coverage, the Spark source and jobs)
goes through :meth:`ChunkRef.read`, so the integrity policy is written once:

* every column: one ranged read of exactly the indexed size, verified by the
  index's size and SHA-256;
* a projection: one read of the object's tail (the Parquet footer; the whole
  object when it is that small, then verified by SHA-256 too), then one read
  per run of adjacent needed column chunks, protected by the Parquet page
  CRCs, the footer's record count and the declared size.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from bams3_spark.exceptions import ChecksumError, CorruptDatasetError
from bams3_spark.format.chunk import decode_chunk
from bams3_spark.format.manifest import ChunkInfo
from bams3_spark.format.schema import COLUMNS, project
from bams3_spark.io.storage import Storage

#: Bytes read from the end of a chunk object to get its Parquet footer in one
#: request. Footers of 13-column, one-row-group chunks are about 2.5 KB, but
#: pyarrow itself reads the last 64 KiB to find the footer (parquet-cpp's
#: kDefaultFooterReadSize), so prefetching exactly that serves its read.
FOOTER_READ = 64 << 10
#: Needed column chunks closer than this are fetched with one request.
COALESCE_GAP = 64 << 10


@dataclass(frozen=True)
class ChunkRef:
    """A chunk object of a dataset: where it is and what the index says of it."""

    storage: Storage
    rname: str
    info: ChunkInfo

    @property
    def url(self) -> str:
        """The chunk object's URL."""
        return self.storage.url_of(self.info.path)

    def read(
        self,
        columns: Sequence[str] | None = None,
        storage: Storage | None = None,
        dictionary: Sequence[str] = (),
    ) -> pa.Table:
        """Read the chunk's records (only ``columns``) with the fewest requests, verifying them.

        Args:
            columns: Columns to read (None: all).
            storage: Storage to read through (default: the chunk's own), e.g. a
                :class:`~bams3_spark.io.storage.CountingStorage`.
            dictionary: Columns to return dictionary-encoded
                (:func:`~bams3_spark.format.chunk.decode_chunk`).

        Returns:
            The records, in chunk order, with the projected record schema.

        Raises:
            ChecksumError: If the object's size or checksum is wrong.
            CorruptDatasetError: If it is not a valid chunk or disagrees with the index.
            OSError: If storage fails.
        """
        names = project(list(columns) if columns is not None else None)
        st = storage or self.storage
        info = self.info
        size = info.bytes
        if len(names) == len(COLUMNS) or size <= FOOTER_READ:
            data = st.read_bytes(info.path, 0, size)
            if len(data) != size:
                raise ChecksumError(
                    f"{self.url}: {len(data)} bytes, index says {size} (truncated or replaced)"
                )
            return decode_chunk(
                data, self.url, names, info.records, expected_sha256=info.sha256, dictionary=dictionary
            )
        tail = st.read_bytes(info.path, size - FOOTER_READ, size)
        if len(tail) != FOOTER_READ:
            raise ChecksumError(
                f"{self.url}: shorter than the {size} bytes the index says (truncated or replaced)"
            )
        if tail[-4:] != b"PAR1":
            raise CorruptDatasetError(f"{self.url}: not a valid chunk object (no Parquet footer; replaced?)")
        footer_len = int.from_bytes(tail[-8:-4], "little")
        if footer_len + 12 > size:
            raise CorruptDatasetError(f"{self.url}: not a valid chunk object (footer length {footer_len})")
        if footer_len + 8 > len(tail):
            tail = st.read_bytes(info.path, size - footer_len - 8, size - len(tail)) + tail
        meta = _footer_metadata(tail[-(footer_len + 8) :], self.url)
        data_end = size - footer_len - 8
        ranges: list[tuple[int, int]] = []
        for rg in range(meta.num_row_groups):
            group = meta.row_group(rg)
            for c in range(group.num_columns):
                col = group.column(c)
                if col.path_in_schema not in names:
                    continue
                start = col.data_page_offset
                if col.has_dictionary_page and col.dictionary_page_offset is not None:
                    start = min(start, col.dictionary_page_offset)
                end = start + col.total_compressed_size
                if not 4 <= start < end <= data_end:
                    raise CorruptDatasetError(
                        f"{self.url}: column {col.path_in_schema} lies outside the object"
                    )
                if start < size - len(tail):  # else it came with the footer
                    ranges.append((start, end))
        reader = _KnownRanges(size, lambda s, e: st.read_bytes(info.path, s, e))
        reader.add(size - len(tail), tail)
        reader.add(0, b"PAR1")
        for start, end in _coalesce(ranges):
            reader.add(start, st.read_bytes(info.path, start, end))
        return decode_chunk(reader, self.url, names, info.records, dictionary=dictionary)  # type: ignore[arg-type]

    def verify(self) -> None:
        """Read the whole object and check its size, checksum and record count."""
        self.read(None)


class _KnownRanges(io.RawIOBase):
    """A read-only file of ``size`` bytes of which some ranges are in memory.

    pyarrow reads the Parquet footer and the needed column chunks from it;
    anything else it asks for is fetched with one ranged read.
    """

    def __init__(self, size: int, fetch: Callable[[int, int], bytes]) -> None:
        super().__init__()
        self._size = size
        self._fetch = fetch
        self._starts: list[int] = []
        self._parts: list[bytes] = []
        self._pos = 0

    def add(self, start: int, data: bytes) -> None:
        i = bisect.bisect_left(self._starts, start)
        self._starts.insert(i, start)
        self._parts.insert(i, data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _get(self, start: int, end: int) -> bytes:
        i = bisect.bisect_right(self._starts, start) - 1
        if i >= 0 and end <= self._starts[i] + len(self._parts[i]):
            off = start - self._starts[i]
            return self._parts[i][off : off + end - start]
        data = self._fetch(start, end)
        self.add(start, data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        data = self._get(self._pos, end)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _footer_metadata(footer: bytes, where: str) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(pa.BufferReader(b"PAR1" + footer))
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise CorruptDatasetError(f"{where}: not a valid chunk object ({exc})") from None


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for start, end in sorted(ranges):
        if out and start - out[-1][1] <= COALESCE_GAP:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]
