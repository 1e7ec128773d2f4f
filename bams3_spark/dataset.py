"""Reading a BAMS3 dataset: manifest, header, per-reference indexes, chunks.

Opening a dataset reads only the top-level manifest; a reference's index is
read on first use, so a query on one reference touches the manifest, that
reference's index and the chunk objects it needs (FORMAT.md, "Reading").
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa

from bams3_spark.exceptions import (
    ChecksumError,
    CorruptDatasetError,
    IncompleteDatasetError,
    NotADatasetError,
    RegionError,
)
from bams3_spark.format.chunk import decode_chunk, sha256_hex
from bams3_spark.format.manifest import (
    DATA_DIR,
    MANIFEST_NAME,
    UNPLACED_NAME,
    ChunkInfo,
    Manifest,
    ObjectRef,
    RefEntry,
    RefIndex,
)
from bams3_spark.format.regions import Region, parse_region
from bams3_spark.format.schema import COLUMNS, project
from bams3_spark.io import Storage

if TYPE_CHECKING:
    from bams3_spark.query import QueryPlan, RegionsArg

#: Manifests and indexes larger than this are refused (hostile input).
MAX_METADATA_BYTES = 256 << 20


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

    def read(self, columns: list[str] | tuple[str, ...] | None = None) -> pa.Table:
        """Read the chunk's records (only ``columns``), verifying its integrity.

        Reading every column fetches the whole object and checks its SHA-256;
        a projection fetches only the needed column chunks with ranged reads,
        protected by the Parquet page CRCs and the declared object size.

        Raises:
            ChecksumError: If the object fails its checksum.
            CorruptDatasetError: If it is not a valid chunk or disagrees with the index.
            OSError: If storage fails.
        """
        names = project(columns)
        if len(names) == len(COLUMNS) or self.info.bytes <= 256 << 10:
            data = self.storage.read_bytes(self.info.path)
            if len(data) != self.info.bytes:
                raise ChecksumError(
                    f"{self.url}: {len(data)} bytes, index says {self.info.bytes} (truncated or replaced)"
                )
            return decode_chunk(data, self.url, names, self.info.records, expected_sha256=self.info.sha256)
        with self.storage.open(self.info.path, size=self.info.bytes) as fh:
            if self.storage.is_local:
                actual = self.storage.size(self.info.path)
                if actual != self.info.bytes:
                    raise ChecksumError(
                        f"{self.url}: {actual} bytes, index says {self.info.bytes} (truncated or replaced)"
                    )
            return decode_chunk(fh, self.url, names, self.info.records)

    def verify(self) -> None:
        """Read the whole object and check its size, checksum and record count."""
        self.read(None)


class Dataset:
    """An open BAMS3 dataset.

    Use :func:`open_dataset` to create one. Instances pickle (configuration
    only), so they can be shipped to Spark executors.
    """

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
                return RefEntry(UNPLACED_NAME, "unplaced", 0, 0, 0, 0, None)
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
        with self._lock or threading.Lock():
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
        # A record overlaps [start, end) when pos <= end and its end > start.
        return [
            ChunkRef(self.storage, region.rname, c)
            for c in idx.chunks
            if c.min_start <= region.end and c.max_end > region.start
        ]

    def iter_tables(
        self, region: Region | str | None = None, columns: list[str] | None = None
    ) -> Iterator[pa.Table]:
        """Yield each relevant chunk's records (whole chunks, not filtered by region)."""
        for chunk in self.chunks(region):
            yield chunk.read(columns)

    # Region queries (samtools view semantics): see bams3_spark.query.

    def plan(
        self, regions: RegionsArg = None, *, regions_file: str | None = None, workers: int = 16
    ) -> QueryPlan:
        """Plan a region query without reading any chunk (see :meth:`QueryPlan.explain`).

        Args:
            regions: Region strings (``chr1:1,000-2,000``, ``{HLA-A*01:01}``,
                ``*``), :class:`Region` objects, or None / ``.`` for every record.
            regions_file: BED file, as ``samtools view --regions-file``.
            workers: Threads used to fetch the reference indexes.
        """
        from bams3_spark.query import plan_query

        # A remote BED file is read with the dataset's storage options.
        remote = regions_file is not None and "://" in regions_file
        return plan_query(self, regions, regions_file, workers, **(self.storage.options if remote else {}))

    def query_batches(
        self,
        regions: RegionsArg = None,
        columns: Sequence[str] | None = None,
        filter: str | None = None,
        workers: int = 16,
        *,
        regions_file: str | None = None,
    ) -> Iterator[pa.Table]:
        """Yield the records of a region query chunk by chunk, in ``samtools view`` order.

        Several regions are answered one after the other, in the given order;
        a record overlapping two regions comes twice, as with ``samtools view``.
        Chunks are read by ``workers`` threads; tables still come in order.

        Args:
            regions: See :meth:`plan`.
            columns: Columns to return (None: every record column).
            filter: Filter expression such as ``"mapq >= 30 and flag & 1024 == 0"``
                (see :func:`bams3_spark.query.compile_filter`).
            workers: Concurrent chunk reads.
            regions_file: BED file, as ``samtools view --regions-file``.

        Raises:
            RegionError: For a malformed region or an unknown reference.
            FilterError: For a bad filter expression.
            ChecksumError, CorruptDatasetError: For damaged chunks.
            OSError: For storage failures.
        """
        from bams3_spark.query import Query, warn_all

        plan = self.plan(regions, regions_file=regions_file, workers=workers)
        warn_all(plan.warnings)
        return Query(plan, columns, filter).tables(workers)

    def query(
        self,
        regions: RegionsArg = None,
        columns: Sequence[str] | None = None,
        filter: str | None = None,
        workers: int = 16,
        *,
        regions_file: str | None = None,
    ) -> pa.Table:
        """Return the records of a region query as one Arrow table.

        Same arguments and order as :meth:`query_batches`.
        """
        from bams3_spark.query import Query, warn_all

        plan = self.plan(regions, regions_file=regions_file, workers=workers)
        warn_all(plan.warnings)
        return Query(plan, columns, filter).table(workers)

    def count(
        self,
        regions: RegionsArg = None,
        filter: str | None = None,
        workers: int = 16,
        *,
        regions_file: str | None = None,
    ) -> int:
        """Count the records of a region query, as ``samtools view -c`` does.

        Chunks lying entirely inside a region are counted from the index;
        the others are read for ``pos`` and ``end`` only (plus the filter's columns).
        """
        from bams3_spark.query import Query, warn_all

        plan = self.plan(regions, regions_file=regions_file, workers=workers)
        warn_all(plan.warnings)
        return Query(plan, None, filter).count(workers)

    def to_sam(
        self,
        out: str | os.PathLike[str] | IO[str] | IO[bytes],
        regions: RegionsArg = None,
        *,
        header: bool = True,
        filter: str | None = None,
        workers: int = 16,
        regions_file: str | None = None,
    ) -> int:
        """Write the records of a query (default: all) as SAM text; return how many.

        Args:
            out: Output path, or a text or binary stream (e.g. ``sys.stdout``).
            regions: See :meth:`plan`.
            header: Write the SAM header first (``samtools view -h --no-PG``).
            filter: See :meth:`query_batches`.
            workers: Concurrent chunk reads.
            regions_file: BED file, as ``samtools view --regions-file``.
        """
        from bams3_spark.query import write_sam

        tables = self.query_batches(regions, None, filter, workers, regions_file=regions_file)
        text = self.header if header else None
        if isinstance(out, (str, os.PathLike)):
            from bams3_spark.io import replacing

            with replacing(out) as tmp, open(tmp, "wb") as fh:
                return write_sam(fh, tables, text)
        return write_sam(out, tables, text)

    def to_bam(
        self,
        path: str | os.PathLike[str],
        regions: RegionsArg = None,
        *,
        filter: str | None = None,
        workers: int = 16,
        regions_file: str | None = None,
    ) -> int:
        """Write the records of a query (default: all) as a BAM file; return how many.

        The BAM has the dataset's header; the export of a whole dataset, or of
        regions given in coordinate order without overlaps, is coordinate
        sorted and can be indexed with ``samtools index``.
        """
        from bams3_spark.query import write_bam

        tables = self.query_batches(regions, None, filter, workers, regions_file=regions_file)
        return write_bam(os.fspath(path), tables, self.header)

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


def open_dataset(url: str, **storage_options: Any) -> Dataset:
    """Open a BAMS3 dataset.

    Args:
        url: Dataset prefix: local path, ``file://``, ``s3://bucket/prefix``...
        **storage_options: fsspec options (``endpoint_url``, ``anon``, ``profile``...).

    Returns:
        The dataset (only its manifest has been read).

    Raises:
        NotADatasetError, IncompleteDatasetError, UnsupportedVersionError,
        CorruptDatasetError: For a missing, incomplete, newer or damaged dataset.
        OSError: For storage failures.
    """
    storage = Storage(url, **storage_options)
    return Dataset(storage, load_manifest(storage))
