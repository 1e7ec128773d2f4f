"""FORMAT 1.1 chunk encodings (FORMAT.md §5): only encodings every engine checked there decodes."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bams3_spark.format.chunk import chunk_metadata, decode_chunk, encode_chunk
from bams3_spark.format.manifest import FORMAT_VERSION
from bams3_spark.format.schema import RECORD_SCHEMA


def _records(n: int = 500) -> pa.Table:
    rows = [
        {"qname": f"read{i:06d}", "flag": 99 if i % 2 else 147, "rname": "chr1", "pos": 1000 + i,
         "end": 1150 + i, "mapq": 60, "cigar": "151M", "rnext": "=", "pnext": 1200 + i, "tlen": 300,
         "seq": "ACGT" * 37 + "ACG", "qual": "F" * 140 + ":" * 11, "tags": f"NM:i:{i % 3}\tAS:i:151"}
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)


def _encodings(raw: bytes) -> dict[str, set[str]]:
    meta = pq.ParquetFile(pa.py_buffer(raw)).metadata.row_group(0)
    return {meta.column(i).path_in_schema: set(meta.column(i).encodings) for i in range(meta.num_columns)}


def test_current_chunks_use_portable_encodings() -> None:
    raw = encode_chunk(_records(), "chr1", (0, 1 << 20), 0)
    enc = _encodings(raw)
    assert not any("DELTA_LENGTH_BYTE_ARRAY" in e for e in enc.values())
    assert "PLAIN" in enc["qname"] and "PLAIN" in enc["seq"]
    assert "DELTA_BYTE_ARRAY" in enc["qual"]
    assert "RLE_DICTIONARY" in enc["tags"] and "RLE_DICTIONARY" in enc["cigar"]
    assert "DELTA_BINARY_PACKED" in enc["pos"]
    assert chunk_metadata(raw, "x")["format_version"] == FORMAT_VERSION == "1.1"


def test_format_1_0_chunks_decode_to_the_same_records() -> None:
    table = _records()
    old = encode_chunk(table, "chr1", (0, 1 << 20), 0, format_version="1.0")
    assert "DELTA_LENGTH_BYTE_ARRAY" in _encodings(old)["seq"]
    assert chunk_metadata(old, "x")["format_version"] == "1.0"
    new = encode_chunk(table, "chr1", (0, 1 << 20), 0)
    assert decode_chunk(old, "old").equals(decode_chunk(new, "new"))
    assert decode_chunk(new, "new").equals(table)
    with pytest.raises(ValueError, match="cannot write chunks of format 0.9"):
        encode_chunk(table, "chr1", (0, 1 << 20), 0, format_version="0.9")
