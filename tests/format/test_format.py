"""The format layer as a spec: manifests and indexes are untrusted input,
chunks verify their integrity, keys are safe, and the schema is one source."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from bams3_spark.exceptions import (
    ChecksumError,
    CorruptDatasetError,
    RegionError,
    UnsupportedVersionError,
)
from bams3_spark.format import chunk as chunk_codec
from bams3_spark.format.layout import chunk_path, index_path, reference_key
from bams3_spark.format.manifest import (
    ChunkInfo,
    Manifest,
    ObjectRef,
    RefEntry,
    RefIndex,
)
from bams3_spark.format.regions import parse_region
from bams3_spark.format.sam import exact_float_tags, lines_to_table, sam_lines, sam_tags_text
from bams3_spark.format.schema import COLUMNS, RECORD_SCHEMA, project

SHA = "0" * 64
LINES = [
    "r1\t99\tchr1\t100\t60\t5M2D5M\t=\t200\t110\tACGTACGTAC\tIIIIIIIIII\tNM:i:2\tXf:f:3.14159274",
    "r2\t4\t*\t0\t0\t*\t*\t0\t0\t*\t*",
    "r3\t0\tchr1\t150\t0\t3S4M1000N4M\t*\t0\t0\tAAACCCCGGGG\t*",
    "r4\t20\tchr1\t300\t0\t*\t=\t300\t0\tACG\t###\tBf:B:f,0.1,1e+10",
]


def _table() -> pa.Table:
    return lines_to_table(list(LINES))


def test_lines_to_table_computes_end_like_bam_endpos() -> None:
    t = _table()
    assert t.schema == RECORD_SCHEMA
    # 5M2D5M covers 12 bases; unplaced -> 0; 3S4M1000N4M covers 1008; unmapped placed -> 1 base.
    assert t.column("end").to_pylist() == [111, 0, 1157, 300]
    assert t.column("tags").to_pylist()[1] == ""


def test_sam_lines_round_trip_and_g_formatting() -> None:
    t = _table()
    assert sam_lines(t, exact_floats=True).to_pylist() == LINES
    shown = sam_lines(t).to_pylist()
    assert shown[0].endswith("NM:i:2\tXf:f:3.14159")
    assert shown[3].endswith("Bf:B:f,0.1,1e+10")


def test_exact_float_text_is_bit_exact() -> None:
    import struct

    value = struct.unpack("<f", struct.pack("<f", 3.14159274))[0]
    text = exact_float_tags("XA:Z:x\tXf:f:3.14159", {"Xf": value})
    stored = text.split("\tXf:f:")[1]
    assert struct.unpack("<f", struct.pack("<f", float(stored)))[0] == value
    assert sam_tags_text(text) == "XA:Z:x\tXf:f:3.14159"


def test_project_keeps_schema_order_and_rejects_unknown() -> None:
    assert project(["end", "pos"]) == ["pos", "end"]
    assert project(None) == list(COLUMNS)
    with pytest.raises(ValueError, match="unknown column"):
        project(["pos", "nope"])


@pytest.mark.parametrize(
    "name",
    ["HLA-DRB1*15:01:01:01", "chr1_KI270706v1_random", "../../etc/passwd", "a/b\\c d?", "é", "."],
)
def test_reference_keys_are_safe(name: str) -> None:
    key = reference_key(3, name)
    assert key.startswith("r000003-")
    assert all(c.isalnum() and c.isascii() or c in "._-" for c in key)
    assert ".." not in key.split("-", 1)[1].split("/") and "/" not in key


def test_reference_keys_are_unique_even_when_names_sanitize_alike() -> None:
    assert reference_key(0, "a:b") != reference_key(1, "a*b")


def test_chunk_roundtrip_projection_and_metadata() -> None:
    data = chunk_codec.encode_chunk(_table(), "chr1", (0, 1 << 20), 0)
    full = chunk_codec.decode_chunk(
        data, "mem", expected_records=4, expected_sha256=chunk_codec.sha256_hex(data)
    )
    assert full.equals(_table())
    part = chunk_codec.decode_chunk(data, "mem", ["end", "pos"])
    assert part.column_names == ["pos", "end"]
    meta = chunk_codec.chunk_metadata(data, "mem")
    assert meta["reference"] == "chr1" and meta["window"] == f"0-{1 << 20}" and meta["records"] == 4


def test_chunk_bit_flip_fails_checksum() -> None:
    data = bytearray(chunk_codec.encode_chunk(_table(), "chr1", (0, 1 << 20), 0))
    sha = chunk_codec.sha256_hex(bytes(data))
    data[len(data) // 2] ^= 0x01
    with pytest.raises(ChecksumError, match="mem://x"):
        chunk_codec.decode_chunk(bytes(data), "mem://x", expected_sha256=sha)


def test_chunk_truncated_or_garbage_is_rejected() -> None:
    data = chunk_codec.encode_chunk(_table(), "chr1", (0, 1 << 20), 0)
    for bad in (data[: len(data) // 2], b"PAR1garbagePAR1", b""):
        with pytest.raises(CorruptDatasetError):
            chunk_codec.decode_chunk(bad, "mem://bad")


def test_chunk_record_count_must_match_index() -> None:
    data = chunk_codec.encode_chunk(_table(), "chr1", (0, 1 << 20), 0)
    with pytest.raises(CorruptDatasetError, match="index says 5"):
        chunk_codec.decode_chunk(data, "mem", expected_records=5)


def _manifest_doc() -> dict:
    idx = ObjectRef(index_path("r000000-chr1"), 10, SHA)
    m = Manifest(
        references=(RefEntry("chr1", "r000000-chr1", 1000, 4, 1, 99, idx),),
        header=ObjectRef("header.sam", 5, SHA),
        chunk_size=1 << 20,
        max_chunk_records=100,
    )
    return m.to_json()


def _load(doc: object) -> Manifest:
    return Manifest.loads(json.dumps(doc).encode(), "mem://bams3.json")


def test_manifest_round_trip() -> None:
    m = _load(_manifest_doc())
    assert m.records == 4 and m.reference("chr1") is not None


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(format_version="2.0"), "format 2.0"),
        (lambda d: d.update(format_version="one"), "invalid format_version"),
        (lambda d: d.update(format="parquet"), "not a BAMS3 manifest"),
        (lambda d: d["references"][0].update(records=-1), "records"),
        (lambda d: d["references"][0].update(length=2**40), "length"),
        (lambda d: d["references"][0].update(key="../x"), "key"),
        (lambda d: d["references"][0]["index"].update(path="../../other/index.json"), "not the expected"),
        (
            lambda d: d["references"][0]["index"].update(path="s3://other-bucket/index.json"),
            "not the expected",
        ),
        (lambda d: d["references"][0]["index"].update(bytes="10"), "bytes"),
        (lambda d: d["header"].update(path="/etc/passwd"), "not the expected"),
        (lambda d: d["references"].append(dict(d["references"][0])), "duplicate"),
        (lambda d: d.update(chunk_size=7), "chunk_size"),
        (lambda d: d.pop("references"), "missing field"),
    ],
)
def test_hostile_manifests_are_rejected(mutate, match: str) -> None:
    doc = _manifest_doc()
    mutate(doc)
    err = UnsupportedVersionError if match.startswith("format 2") else CorruptDatasetError
    with pytest.raises(err, match=match):
        _load(doc)


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b"\xff\xfe", b"[" * 100000])
def test_malformed_manifest_json(raw: bytes) -> None:
    with pytest.raises(CorruptDatasetError):
        Manifest.loads(raw, "mem://bams3.json")


def _index_doc(**chunk: object) -> bytes:
    c = ChunkInfo(chunk_path("r000000-chr1", 0, 1 << 20), 0, 1 << 20, 0, 1, 5, 20, 3, 100, SHA).to_json()
    c.update(chunk)
    doc = RefIndex("chr1", "r000000-chr1", ()).to_json()
    doc["chunks"] = [c]
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("chunk", "match"),
    [
        ({"path": "data/r000000-chr1/../../../etc/passwd"}, "chunk path"),
        ({"path": "/abs/0000000000-0001048576.chunk"}, "chunk path"),
        ({"path": "s3://evil/data/r000000-chr1/0000000000-0001048576.chunk"}, "chunk path"),
        ({"records": 0}, "records"),
        ({"bytes": -5}, "bytes"),
        ({"bytes": 2**62}, "bytes"),
        ({"window": [5, 1]}, "window"),
        ({"sha256": "XYZ"}, "sha256"),
        ({"min_start": 50}, "inconsistent"),
    ],
)
def test_hostile_indexes_are_rejected(chunk: dict, match: str) -> None:
    with pytest.raises(CorruptDatasetError, match=match):
        RefIndex.loads(_index_doc(**chunk), "mem://index", "chr1", "r000000-chr1")


def test_index_for_another_reference_is_rejected() -> None:
    with pytest.raises(CorruptDatasetError, match="another reference"):
        RefIndex.loads(_index_doc(), "mem://index", "chr2", "r000000-chr1")


def test_region_glossary_examples() -> None:
    lengths = {"chr1": 5000, "HLA-A*01:01": 300}
    assert (
        parse_region("chr1:1,000-2,000", lengths).start,
        parse_region("chr1:1,000-2,000", lengths).end,
    ) == (999, 2000)
    assert parse_region("{HLA-A*01:01}:5-9", lengths).rname == "HLA-A*01:01"
    with pytest.raises(RegionError):
        parse_region("chr1:2000-1000", lengths)
