"""Manifest and per-reference index models (FORMAT.md, "Manifest" and "Index").

Both are JSON documents read from storage, so every field is treated as
untrusted input: types, ranges, object paths and versions are checked before
anything else uses them, and any violation is a :class:`CorruptDatasetError`
(or :class:`UnsupportedVersionError` for a newer major version).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bams3_spark.exceptions import CorruptDatasetError, UnsupportedVersionError
from bams3_spark.format.layout import (
    HEADER_NAME,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    UNPLACED_KEY,
    chunk_path,
    index_path,
)

FORMAT_NAME = "bams3"
FORMAT_VERSION = "1.1"
FORMAT_MAJOR = 1

#: Upper bounds for untrusted numbers: far above anything real, low enough
#: that arithmetic on them cannot misbehave.
MAX_POSITION = (1 << 31) - 1
MAX_OBJECT_BYTES = 1 << 40
MAX_RECORDS = 1 << 40

_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def check_version(version: object, what: str) -> None:
    """Refuse a format version this reader cannot read.

    Raises:
        UnsupportedVersionError: For a newer major version.
        CorruptDatasetError: If the version is not ``MAJOR.MINOR``.
    """
    if not isinstance(version, str) or not re.fullmatch(r"\d{1,4}\.\d{1,4}", version):
        raise CorruptDatasetError(f"{what}: invalid format_version {version!r}")
    major = int(version.split(".")[0])
    if major > FORMAT_MAJOR:
        raise UnsupportedVersionError(
            f"{what}: written with BAMS3 format {version}, but this bams3-spark reads "
            f"format {FORMAT_MAJOR}.x only; upgrade bams3-spark"
        )
    if major < 1:
        raise CorruptDatasetError(f"{what}: invalid format_version {version!r}")


class _Doc:
    """Typed access to one untrusted JSON object, with errors naming ``where``."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, Mapping):
            raise CorruptDatasetError(f"{where}: expected a JSON object")
        self.data = data
        self.where = where

    def _get(self, key: str) -> Any:
        if key not in self.data:
            raise CorruptDatasetError(f"{self.where}: missing field {key!r}")
        return self.data[key]

    def get_int(self, key: str, lo: int = 0, hi: int = MAX_RECORDS) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise CorruptDatasetError(
                f"{self.where}: field {key!r} must be an integer in [{lo}, {hi}], got {value!r}"
            )
        return value

    def get_str(self, key: str, pattern: re.Pattern[str] | None = None) -> str:
        value = self._get(key)
        if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
            raise CorruptDatasetError(f"{self.where}: invalid {key!r}: {value!r}")
        return value

    def opt_str(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise CorruptDatasetError(f"{self.where}: invalid {key!r}: {value!r}")
        return value

    def get_list(self, key: str) -> list[Any]:
        value = self._get(key)
        if not isinstance(value, list):
            raise CorruptDatasetError(f"{self.where}: field {key!r} must be a list")
        return value

    def get_obj(self, key: str) -> _Doc:
        return _Doc(self._get(key), f"{self.where}.{key}")


@dataclass(frozen=True)
class ObjectRef:
    """A stored object named by the manifest: relative path, size and SHA-256."""

    path: str
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "sha256": self.sha256}

    @classmethod
    def from_doc(cls, doc: _Doc, expected_path: str) -> ObjectRef:
        path = doc.get_str("path")
        if path != expected_path:
            raise CorruptDatasetError(f"{doc.where}: path {path!r} is not the expected {expected_path!r}")
        return cls(path, doc.get_int("bytes", 0, MAX_OBJECT_BYTES), doc.get_str("sha256", _SHA256_RE))


@dataclass(frozen=True)
class ChunkInfo:
    """One chunk object as the index describes it.

    Attributes:
        path: Dataset-relative object path (``data/<key>/<start>-<end>.chunk``).
        window_start: 0-based inclusive start of the genomic window.
        window_end: 0-based exclusive end of the genomic window.
        part: Index of this object among the window's parts (0 unless split).
        min_start: Smallest ``pos`` (1-based) of its records; 0 when unplaced.
        max_start: Largest ``pos`` of its records.
        max_end: Largest ``end`` (1-based inclusive) of its records.
        records: Number of records.
        bytes: Size of the object in bytes.
        sha256: Hex SHA-256 of the whole object.
    """

    path: str
    window_start: int
    window_end: int
    part: int
    min_start: int
    max_start: int
    max_end: int
    records: int
    bytes: int
    sha256: str

    def overlaps(self, start: int, end: int) -> bool:
        """Whether some record may overlap the 0-based half-open interval [start, end).

        FORMAT.md §6: the chunk is needed when ``min_start <= end`` and
        ``max_end > start`` (htslib's overlap rule applied to the index bounds).
        """
        return self.min_start <= end and self.max_end > start

    def inside(self, start: int, end: int) -> bool:
        """Whether every record overlaps [start, end): all of them start inside it.

        Every record has ``min_start <= pos <= max_start`` and ``end >= pos``,
        so starting in ``(start, end]`` (1-based ``pos``) means overlapping.
        """
        return self.min_start > start and self.max_start <= end

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "window": [self.window_start, self.window_end],
            "part": self.part,
            "min_start": self.min_start,
            "max_start": self.max_start,
            "max_end": self.max_end,
            "records": self.records,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, data: object, where: str, key: str) -> ChunkInfo:
        doc = _Doc(data, where)
        window = doc.get_list("window")
        if (
            len(window) != 2
            or not all(isinstance(w, int) and not isinstance(w, bool) for w in window)
            or not 0 <= window[0] < window[1] <= MAX_POSITION + 1
        ):
            raise CorruptDatasetError(f"{where}: invalid window {window!r}")
        part = doc.get_int("part", 0, 9999)
        path = doc.get_str("path")
        expected = chunk_path(key, window[0], window[1], part)
        if path != expected:
            # Paths are derived, never trusted: this rejects '..', absolute
            # paths, URLs and other datasets' objects in one rule.
            raise CorruptDatasetError(f"{where}: chunk path {path!r} is not {expected!r}")
        info = cls(
            path=path,
            window_start=window[0],
            window_end=window[1],
            part=part,
            min_start=doc.get_int("min_start", 0, MAX_POSITION),
            max_start=doc.get_int("max_start", 0, MAX_POSITION),
            max_end=doc.get_int("max_end", 0, MAX_POSITION),
            records=doc.get_int("records", 1, MAX_RECORDS),
            bytes=doc.get_int("bytes", 1, MAX_OBJECT_BYTES),
            sha256=doc.get_str("sha256", _SHA256_RE),
        )
        if not info.min_start <= info.max_start <= info.max_end and key != UNPLACED_KEY:
            raise CorruptDatasetError(f"{where}: inconsistent min_start/max_start/max_end")
        return info


@dataclass(frozen=True)
class RefIndex:
    """The chunk list of one reference (``index/<key>.json``)."""

    name: str
    key: str
    chunks: tuple[ChunkInfo, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME + "-index",
            "format_version": FORMAT_VERSION,
            "reference": self.name,
            "key": self.key,
            "chunks": [c.to_json() for c in self.chunks],
        }

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes, where: str, name: str, key: str) -> RefIndex:
        doc = _Doc(_parse_json(raw, where), where)
        check_version(doc.get_str("format_version"), where)
        if doc.get_str("reference") != name or doc.get_str("key") != key:
            raise CorruptDatasetError(f"{where}: index is for another reference")
        chunks = tuple(
            ChunkInfo.from_json(c, f"{where}: chunks[{i}]", key) for i, c in enumerate(doc.get_list("chunks"))
        )
        if len({c.path for c in chunks}) != len(chunks):
            raise CorruptDatasetError(f"{where}: duplicate chunk paths")
        return cls(name, key, chunks)


@dataclass(frozen=True)
class RefEntry:
    """A reference as the top-level manifest lists it."""

    name: str
    key: str
    length: int
    records: int
    chunks: int
    bytes: int
    index: ObjectRef | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "length": self.length,
            "records": self.records,
            "chunks": self.chunks,
            "bytes": self.bytes,
            "index": None if self.index is None else self.index.to_json(),
        }

    @classmethod
    def from_json(cls, data: object, where: str) -> RefEntry:
        doc = _Doc(data, where)
        key = doc.get_str("key", _KEY_RE)
        chunks = doc.get_int("chunks")
        raw_index = doc.data.get("index")
        index = None
        if raw_index is not None:
            index = ObjectRef.from_doc(_Doc(raw_index, f"{where}.index"), index_path(key))
        elif chunks:
            raise CorruptDatasetError(f"{where}: has chunks but no index")
        return cls(
            name=doc.get_str("name"),
            key=key,
            length=doc.get_int("length", 0, MAX_POSITION),
            records=doc.get_int("records"),
            chunks=chunks,
            bytes=doc.get_int("bytes", 0, MAX_OBJECT_BYTES * 1024),
            index=index,
        )


@dataclass(frozen=True)
class Manifest:
    """The top-level manifest (``bams3.json``): written last, it commits a dataset."""

    references: tuple[RefEntry, ...]
    header: ObjectRef
    chunk_size: int
    max_chunk_records: int
    sample: str | None = None
    source: str | None = None
    created_by: str = ""
    created: str = ""
    format_version: str = FORMAT_VERSION
    _by_name: dict[str, RefEntry] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update({r.name: r for r in self.references})

    @property
    def records(self) -> int:
        """Total number of records in the dataset."""
        return sum(r.records for r in self.references)

    @property
    def chunk_count(self) -> int:
        """Total number of chunk objects."""
        return sum(r.chunks for r in self.references)

    @property
    def chunk_bytes(self) -> int:
        """Total size of the chunk objects in bytes."""
        return sum(r.bytes for r in self.references)

    def reference(self, name: str) -> RefEntry | None:
        """Return the entry of reference ``name`` (``*`` = unplaced reads), or None."""
        return self._by_name.get(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "created_by": self.created_by,
            "created": self.created,
            "source": self.source,
            "sample": self.sample,
            "chunk_size": self.chunk_size,
            "max_chunk_records": self.max_chunk_records,
            "header": self.header.to_json(),
            "totals": {
                "records": self.records,
                "chunks": self.chunk_count,
                "bytes": self.chunk_bytes,
            },
            "references": [r.to_json() for r in self.references],
        }

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), indent=1).encode()

    @classmethod
    def loads(cls, raw: bytes, where: str) -> Manifest:
        """Parse and validate a manifest.

        Raises:
            CorruptDatasetError: If it is malformed or inconsistent.
            UnsupportedVersionError: If it was written by a newer major version.
        """
        doc = _Doc(_parse_json(raw, where), where)
        if doc.get_str("format") != FORMAT_NAME:
            raise CorruptDatasetError(f"{where}: not a BAMS3 manifest")
        version = doc.get_str("format_version")
        check_version(version, where)
        refs = tuple(
            RefEntry.from_json(r, f"{where}: references[{i}]")
            for i, r in enumerate(doc.get_list("references"))
        )
        if len({r.name for r in refs}) != len(refs) or len({r.key for r in refs}) != len(refs):
            raise CorruptDatasetError(f"{where}: duplicate reference names or keys")
        return cls(
            references=refs,
            header=ObjectRef.from_doc(doc.get_obj("header"), HEADER_NAME),
            chunk_size=doc.get_int("chunk_size", MIN_CHUNK_SIZE, MAX_CHUNK_SIZE),
            max_chunk_records=doc.get_int("max_chunk_records", 1, MAX_RECORDS),
            sample=doc.opt_str("sample"),
            source=doc.opt_str("source"),
            created_by=doc.opt_str("created_by") or "",
            created=doc.opt_str("created") or "",
            format_version=version,
        )


def _parse_json(raw: bytes, where: str) -> object:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CorruptDatasetError(f"{where}: malformed JSON ({exc})") from None
