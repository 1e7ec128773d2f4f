"""The chunk codec: one Parquet object of records, zstd-compressed.

See FORMAT.md, "Chunk objects". A chunk is a complete Parquet file with one
row group, the record schema, dictionary encoding for the repetitive string
columns, page CRCs, and key-value metadata naming its reference and window,
so it is self-describing and decodes alone. Readers may fetch only the column
chunks they need (column projection); page CRCs then protect what was read,
and the whole-object SHA-256 is verified whenever the whole object is read.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from bams3_spark.exceptions import ChecksumError, CorruptDatasetError
from bams3_spark.format.manifest import FORMAT_VERSION, check_version
from bams3_spark.format.schema import RECORD_SCHEMA, project

#: zstd level 1: on read data it compresses as well as level 3 (better, with
#: the encodings below) at twice the speed; measured in benchmarks/bench_convert.py.
ZSTD_LEVEL = 1
#: Columns worth a dictionary: few distinct values per chunk (``tags`` often
#: has few too: ``NM``/``AS``/``XS``/``RG`` combinations; the writer falls back
#: to PLAIN pages when the dictionary outgrows its page).
DICTIONARY_COLUMNS = ["rname", "cigar", "rnext", "flag", "mapq", "tags"]
#: FORMAT 1.1 encodings (FORMAT.md §5): only encodings every engine checked
#: there decodes, Spark 3.5's vectorized reader included, which fails on the
#: DELTA_LENGTH_BYTE_ARRAY pages of FORMAT 1.0. Sorted or small-delta integers
#: delta-encode to almost nothing; ``qual`` strings share prefixes (runs of the
#: same quality) that DELTA_BYTE_ARRAY stores once; ``qname`` and ``seq`` gain
#: nothing from a string encoding that zstd does not already give (measured:
#: benchmarks/bench_spark_scan.py reports the sizes).
COLUMN_ENCODINGS = {
    **dict.fromkeys(("pos", "end", "pnext", "tlen"), "DELTA_BINARY_PACKED"),
    **dict.fromkeys(("qname", "seq"), "PLAIN"),
    "qual": "DELTA_BYTE_ARRAY",
}
#: The encodings of FORMAT 1.0 chunks (readable by every bams3 reader; written
#: only by tests, to check that 1.0 datasets stay readable).
COLUMN_ENCODINGS_1_0 = {
    **dict.fromkeys(("pos", "end", "pnext", "tlen"), "DELTA_BINARY_PACKED"),
    **dict.fromkeys(("qname", "seq", "qual", "tags"), "DELTA_LENGTH_BYTE_ARRAY"),
}
DICTIONARY_COLUMNS_1_0 = ["rname", "cigar", "rnext", "flag", "mapq"]
#: A chunk may not claim to decompress to more than this (decompression bombs),
#: nor to more than a base allowance plus a generous per-record allowance (a
#: 100 kbp long read with its qualities is well under 1 MiB).
MAX_UNCOMPRESSED_BYTES = 4 << 30
UNCOMPRESSED_BASE_BYTES = 64 << 20
UNCOMPRESSED_BYTES_PER_RECORD = 2 << 20
META_PREFIX = b"bams3."


def sha256_hex(data: bytes | memoryview) -> str:
    """Return the hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def encode_chunk(
    table: pa.Table, rname: str, window: tuple[int, int], part: int, format_version: str = FORMAT_VERSION
) -> bytes:
    """Encode records as one chunk object.

    Args:
        table: Records with exactly ``RECORD_SCHEMA``.
        rname: Reference name (``*`` for unplaced reads), recorded in metadata.
        window: 0-based half-open window bounds.
        part: Part number within the window.
        format_version: ``1.1`` (the current version), or ``1.0`` for the
            older encodings (tests of legacy datasets).

    Returns:
        The Parquet bytes of the chunk.
    """
    if format_version not in ("1.0", FORMAT_VERSION):
        raise ValueError(f"cannot write chunks of format {format_version}")
    legacy = format_version == "1.0"
    table = table.cast(RECORD_SCHEMA).replace_schema_metadata(
        {
            META_PREFIX + b"format_version": format_version.encode(),
            META_PREFIX + b"reference": rname.encode(),
            META_PREFIX + b"window": f"{window[0]}-{window[1]}".encode(),
            META_PREFIX + b"part": str(part).encode(),
        }
    )
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        use_dictionary=DICTIONARY_COLUMNS_1_0 if legacy else DICTIONARY_COLUMNS,
        column_encoding=COLUMN_ENCODINGS_1_0 if legacy else COLUMN_ENCODINGS,
        write_statistics=["pos", "end", "flag", "mapq"],
        row_group_size=max(1, table.num_rows),
        write_page_checksum=True,
        data_page_size=1 << 20,
    )
    return sink.getvalue()


class _TrackedFile:
    """A file object that remembers the storage error it raised, if any.

    Arrow reports both damaged data and failing reads as ``OSError``; this
    tells them apart: a storage failure propagates as itself, anything else
    Arrow raises is damage.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.error: BaseException | None = None
        self.closed = False

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self.raw, name)(*args)
        except Exception as exc:
            self.error = exc
            raise

    def read(self, n: int = -1) -> bytes:
        return self._call("read", n)  # type: ignore[no-any-return]

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._call("seek", offset, whence)  # type: ignore[no-any-return]

    def tell(self) -> int:
        return self._call("tell")  # type: ignore[no-any-return]

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def _damage(exc: BaseException, source: Any, where: str, what: str) -> BaseException:
    if isinstance(source, _TrackedFile) and source.error is not None:
        return source.error
    return CorruptDatasetError(f"{where}: {what} ({str(exc).splitlines()[0] if str(exc) else exc!r})")


def _open(source: Any, where: str, dictionary: Sequence[str] = ()) -> pq.ParquetFile:
    try:
        pf = pq.ParquetFile(
            pa.py_buffer(source) if isinstance(source, bytes) else source,
            page_checksum_verification=True,
            read_dictionary=list(dictionary) or None,
        )
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise _damage(exc, source, where, "not a valid chunk object") from None
    meta = pf.metadata
    file_schema = pf.schema_arrow
    for field in RECORD_SCHEMA:
        idx = file_schema.get_field_index(field.name)
        found = file_schema.field(idx).type if idx >= 0 else None
        if isinstance(found, pa.DictionaryType) and field.name in dictionary:
            found = found.value_type
        if found != field.type:
            raise CorruptDatasetError(f"{where}: chunk schema lacks column {field.name}")
    version = (file_schema.metadata or {}).get(META_PREFIX + b"format_version", b"")
    check_version(version.decode(errors="replace"), where)
    claimed = 0
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        for c in range(group.num_columns):
            claimed += group.column(c).total_uncompressed_size
    limit = min(
        MAX_UNCOMPRESSED_BYTES, UNCOMPRESSED_BASE_BYTES + meta.num_rows * UNCOMPRESSED_BYTES_PER_RECORD
    )
    if claimed > limit:
        raise CorruptDatasetError(
            f"{where}: chunk claims {claimed} uncompressed bytes for {meta.num_rows} records "
            f"(limit {limit}): refusing a possible decompression bomb"
        )
    return pf


def decode_chunk(
    source: bytes | IO[bytes],
    where: str,
    columns: list[str] | tuple[str, ...] | None = None,
    expected_records: int | None = None,
    expected_sha256: str | None = None,
    dictionary: Sequence[str] = (),
) -> pa.Table:
    """Decode a chunk object, reading only ``columns``.

    Args:
        source: The whole object's bytes, or a seekable file (ranged reads).
        where: Object URL, used in error messages.
        columns: Columns to read (schema order is kept); None reads all.
        expected_records: Record count from the index, checked if given.
        expected_sha256: Whole-object checksum from the index; checked when
            ``source`` is the whole object's bytes.
        dictionary: String columns to return dictionary-encoded, as the
            writer stored them (no string per record is made: for columns
            with few distinct values, such as ``cigar`` and ``rnext``).

    Returns:
        The records, with ``RECORD_SCHEMA`` restricted to ``columns`` (the
        ``dictionary`` columns as dictionaries of their type).

    Raises:
        ChecksumError: If the bytes do not match ``expected_sha256``.
        CorruptDatasetError: If the object is not a valid chunk.
    """
    if expected_sha256 is not None and isinstance(source, bytes):
        actual = sha256_hex(source)
        if actual != expected_sha256:
            raise ChecksumError(f"{where}: checksum mismatch (object damaged or replaced)")
    names = project(columns)
    tracked: bytes | _TrackedFile = source if isinstance(source, bytes) else _TrackedFile(source)
    pf = _open(tracked, where, dictionary)
    if expected_records is not None and pf.metadata.num_rows != expected_records:
        raise CorruptDatasetError(
            f"{where}: holds {pf.metadata.num_rows} records, index says {expected_records}"
        )
    try:
        table = pf.read(columns=names, use_threads=False)
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise _damage(exc, tracked, where, "damaged chunk object") from None
    if table.num_rows != pf.metadata.num_rows:
        raise CorruptDatasetError(f"{where}: short read")
    return table.replace_schema_metadata(None)


def chunk_metadata(source: bytes | IO[bytes], where: str) -> dict[str, Any]:
    """Return a chunk's self-description: reference, window, part and row count."""
    pf = _open(source, where)
    meta = {
        k[len(META_PREFIX) :].decode(): v.decode()
        for k, v in (pf.schema_arrow.metadata or {}).items()
        if k.startswith(META_PREFIX)
    }
    meta["records"] = pf.metadata.num_rows
    return meta
