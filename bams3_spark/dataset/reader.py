"""Reading a BAMS3 dataset: manifest, header, per-reference indexes, chunks.

Opening a dataset reads only the top-level manifest; a reference's index is
read on first use, so a query on one reference touches the manifest, that
reference's index and the chunk objects it needs (FORMAT.md, "Reading").
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import pyarrow as pa

from bams3_spark.dataset.chunks import ChunkRef
from bams3_spark.exceptions import (
    ChecksumError,
    CorruptDatasetError,
    DatasetError,
    IncompleteDatasetError,
    NotADatasetError,
    RegionError,
)
from bams3_spark.format.chunk import sha256_hex
from bams3_spark.format.layout import DATA_DIR, MANIFEST_NAME, UNPLACED_KEY, UNPLACED_NAME
from bams3_spark.format.manifest import Manifest, ObjectRef, RefEntry, RefIndex
from bams3_spark.format.regions import Region, parse_region
from bams3_spark.io.storage import Storage

_D = TypeVar("_D", bound="DatasetReader")

#: Manifests and indexes larger than this are refused (hostile input).
MAX_METADATA_BYTES = 256 << 20


class DatasetReader:
    """An open BAMS3 dataset, as the engines read it: manifest, header, indexes, chunks.

    Open one with :meth:`open`. Instances pickle (configuration only), so they
    can be shipped to worker processes and Spark executors. The user-facing
    :class:`bams3_spark.Dataset` adds the engines (queries, coverage) to it.
    """

    @classmethod
    def open(cls: type[_D], url: str, **storage_options: Any) -> _D:
        """Open a BAMS3 dataset (only its manifest is read).

        Args:
            url: Dataset prefix: local path, ``file://``, ``s3://bucket/prefix``...
            **storage_options: fsspec options (``endpoint_url``, ``anon``, ``profile``...).

        Raises:
            NotADatasetError, IncompleteDatasetError, UnsupportedVersionError,
            CorruptDatasetError: For a missing, incomplete, newer or damaged dataset.
            OSError: For storage failures.
        """
        storage = Storage(url, **storage_options)
        return cls(storage, load_manifest(storage))

    def __init__(self, storage: Storage, manifest: Manifest) -> None:
        self.storage = storage
        self.manifest = manifest
        self._indexes: dict[str, RefIndex] = {}
        self._header: str | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<bams3 dataset {self.url} {self.manifest.records:,} records>"

    @property
    def url(self) -> str:
        """The dataset's URL."""
        return self.storage.url

    @property
    def sample(self) -> str:
        """Sample name: the read groups' SM, or the dataset's base name."""
        if self.manifest.sample:
            return self.manifest.sample
        base = self.url.rstrip("/").rsplit("/", 1)[-1]
        return base.removesuffix(".bams3")

    @property
    def references(self) -> list[tuple[str, int]]:
        """(name, length) of every reference, in header order (``*`` excluded)."""
        return [(r.name, r.length) for r in self.manifest.references if r.name != UNPLACED_NAME]

    @property
    def lengths(self) -> Mapping[str, int]:
        """Reference name to length."""
        return dict(self.references)

    @property
    def header(self) -> str:
        """The full SAM header text of the source (read and verified on first use)."""
        if self._header is None:
            raw = self._read_verified(self.manifest.header)
            try:
                self._header = raw.decode()
            except UnicodeDecodeError:
                raise CorruptDatasetError(
                    f"{self.storage.url_of(self.manifest.header.path)}: not text"
                ) from None
        return self._header

    def _read_verified(self, ref: ObjectRef) -> bytes:
        if ref.bytes > MAX_METADATA_BYTES:
            raise CorruptDatasetError(f"{self.storage.url_of(ref.path)}: too large ({ref.bytes} bytes)")
        data = self.storage.read_bytes(ref.path)
        if len(data) != ref.bytes or sha256_hex(data) != ref.sha256:
            raise ChecksumError(f"{self.storage.url_of(ref.path)}: checksum mismatch")
        return data

    def reference_entry(self, rname: str) -> RefEntry:
        """Return the manifest entry of ``rname``.

        Raises:
            RegionError: If the dataset has no such reference.
        """
        entry = self.manifest.reference(rname)
        if entry is None:
            if rname == UNPLACED_NAME:
                return RefEntry(UNPLACED_NAME, UNPLACED_KEY, 0, 0, 0, 0, None)
            raise RegionError(f"{self.url}: unknown reference {rname!r}")
        return entry

    def index(self, rname: str) -> RefIndex:
        """Return the chunk index of one reference (read once, then cached)."""
        entry = self.reference_entry(rname)
        cached = self._indexes.get(entry.key)
        if cached is not None:
            return cached
        if entry.index is None:
            idx = RefIndex(entry.name, entry.key, ())
        else:
            where = self.storage.url_of(entry.index.path)
            idx = RefIndex.loads(self._read_verified(entry.index), where, entry.name, entry.key)
            if len(idx.chunks) != entry.chunks or sum(c.records for c in idx.chunks) != entry.records:
                raise CorruptDatasetError(f"{where}: disagrees with the manifest's counts")
        with self._lock:
            self._indexes[entry.key] = idx
        return idx

    def parse_region(self, text: str) -> Region:
        """Parse a samtools region string against this dataset's references."""
        return parse_region(text, self.lengths)

    def chunks(self, region: Region | str | None = None) -> list[ChunkRef]:
        """Return the chunk objects that may hold records overlapping ``region``.

        With no region, every chunk of the dataset (references in header
        order, then unplaced reads).
        """
        if region is None:
            return [
                ChunkRef(self.storage, e.name, c)
                for e in self.manifest.references
                for c in self.index(e.name).chunks
            ]
        if isinstance(region, str):
            region = self.parse_region(region)
        idx = self.index(region.rname)
        if region.unplaced:
            return [ChunkRef(self.storage, region.rname, c) for c in idx.chunks]
        name = region.rname
        return [ChunkRef(self.storage, name, c) for c in idx.chunks if c.overlaps(region.start, region.end)]

    def iter_tables(
        self, region: Region | str | None = None, columns: list[str] | None = None
    ) -> Iterator[pa.Table]:
        """Yield each relevant chunk's records (whole chunks, not filtered by region)."""
        for chunk in self.chunks(region):
            yield chunk.read(columns)

    def validate(self) -> list[str]:
        """Check every object: checksums, sizes, counts. Return the problems found."""
        problems = []
        try:
            _ = self.header
        except (CorruptDatasetError, OSError) as exc:
            problems.append(str(exc))
        for entry in self.manifest.references:
            try:
                idx = self.index(entry.name)
            except (CorruptDatasetError, OSError) as exc:
                problems.append(str(exc))
                continue
            for c in idx.chunks:
                try:
                    ChunkRef(self.storage, entry.name, c).verify()
                except (CorruptDatasetError, OSError) as exc:
                    problems.append(str(exc))
        return problems


def load_manifest(storage: Storage) -> Manifest:
    """Read and validate the manifest at a dataset prefix.

    Raises:
        NotADatasetError: If nothing BAMS3-like is there.
        IncompleteDatasetError: If chunks exist but the manifest does not.
    """
    try:
        raw = storage.read_bytes(MANIFEST_NAME)
    except FileNotFoundError:
        if storage.exists(DATA_DIR):
            raise IncompleteDatasetError(
                f"{storage.url}: incomplete dataset (no {MANIFEST_NAME}): its conversion "
                "failed or is still running; convert again with --overwrite"
            ) from None
        raise NotADatasetError(f"{storage.url}: not a BAMS3 dataset (no {MANIFEST_NAME})") from None
    if len(raw) > MAX_METADATA_BYTES:
        raise CorruptDatasetError(f"{storage.url_of(MANIFEST_NAME)}: too large")
    return Manifest.loads(raw, storage.url_of(MANIFEST_NAME))


class _Named(Protocol):
    """A dataset as far as sample names go: a :class:`DatasetReader` or a planned cohort sample."""

    @property
    def sample(self) -> str: ...

    @property
    def url(self) -> str: ...


def check_distinct_samples(datasets: Iterable[_Named], naming: str = "the read groups' SM") -> None:
    """Refuse two datasets of one sample: results are keyed by sample name.

    Args:
        datasets: Datasets (anything with ``sample`` and ``url``).
        naming: Where sample names come from, for the message.

    Raises:
        DatasetError: Naming the sample and both datasets.
    """
    seen: dict[str, str] = {}
    for ds in datasets:
        if ds.sample in seen:
            raise DatasetError(
                f"sample {ds.sample!r} appears twice ({seen[ds.sample]} and {ds.url}): "
                f"each dataset must have its own sample name ({naming})"
            )
        seen[ds.sample] = ds.url
