"""Planning a region query: what each step selects, and which chunks it reads.

A query is planned from the manifest and the per-reference indexes alone
(FORMAT.md §6 and §9), without reading any chunk. Selection semantics are
``samtools view``'s (see :mod:`bams3_spark.query`).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from bams3_spark.dataset.chunks import FOOTER_READ, ChunkRef
from bams3_spark.dataset.reader import DatasetReader
from bams3_spark.exceptions import InvalidArgumentError, RegionError
from bams3_spark.format.layout import UNPLACED_NAME
from bams3_spark.format.regions import Region, merge_intervals, parse_region
from bams3_spark.format.schema import COLUMNS, project
from bams3_spark.io.bed import POS_LIMIT, read_samtools_bed
from bams3_spark.parallel import thread_map

#: Default number of concurrent chunk (and index) reads.
DEFAULT_WORKERS = 16
#: The region of every record, in file order (htslib's ``.``).
ALL_RECORDS = "."

RegionsArg = Union[str, Region, Sequence[Union[str, Region]], None]  # noqa: UP007 - runtime alias on 3.10


@dataclass(frozen=True)
class Selection:
    """The records one query step selects, in file order.

    Attributes:
        rname: Reference name, ``*`` for unplaced reads, or None for every
            record of the dataset.
        intervals: Sorted, disjoint 0-based half-open intervals; a record is
            selected when it overlaps any of them. Empty means every record
            of ``rname``.
        label: How the user wrote it (for plans and messages).
    """

    rname: str | None
    intervals: tuple[tuple[int, int], ...]
    label: str

    @property
    def whole(self) -> bool:
        """True when every record of the selected chunks matches."""
        return not self.intervals


def _region_selection(region: Region, label: str) -> Selection:
    if region.unplaced:
        return Selection(UNPLACED_NAME, (), label)
    start, end = min(region.start, POS_LIMIT), min(region.end, POS_LIMIT)
    return Selection(region.rname, ((start, end),), label)


def _as_texts(regions: RegionsArg) -> list[str | Region]:
    if regions is None:
        return []
    if isinstance(regions, (str, Region)):
        return [regions]
    return list(regions)


def parse_selections(
    ds: DatasetReader, regions: RegionsArg, regions_file: str | None = None, **storage_options: Any
) -> tuple[list[Selection], list[str]]:
    """Turn region strings and/or a BED file into the query's selections.

    Args:
        ds: The dataset (its references resolve names).
        regions: Region strings or :class:`Region` objects, in output order.
        regions_file: BED file path or URL (``samtools view --regions-file``).
        **storage_options: fsspec options to read a remote BED file.

    Returns:
        The selections in output order, and warnings (BED lines naming
        references the dataset does not have, which samtools also skips).

    Raises:
        RegionError: For a malformed region or BED line, an unknown reference
            in a region, or a BED file selecting nothing.
    """
    lengths = ds.lengths
    items = _as_texts(regions)
    parsed: list[tuple[Region | None, str]] = []
    for item in items:
        if isinstance(item, Region):
            if item.rname != UNPLACED_NAME and item.rname not in lengths:
                raise RegionError(f"region {item}: unknown reference {item.rname!r}")
            parsed.append((item, str(item)))
        elif item == ALL_RECORDS:
            # htslib: "." is every record from the start of the file.
            parsed.append((None, item))
        else:
            # Not clamped to the reference length, as htslib: a region past
            # the end still finds reads that extend past the end.
            parsed.append((parse_region(item, lengths, clamp=False), item))
    if regions_file is None:
        if not parsed:
            return [Selection(None, (), ALL_RECORDS)], []
        return [
            Selection(None, (), label) if r is None else _region_selection(r, label) for r, label in parsed
        ], []
    bed, warns = read_samtools_bed(regions_file, lengths, **storage_options)
    if parsed:
        # samtools' bed_filter: keep, per reference named by both, the
        # intersections of BED intervals with the regions' intervals.
        wanted: dict[str, list[tuple[int, int]]] = {}
        for r, label in parsed:
            if r is None or r.unplaced:
                raise RegionError(f"region {label!r} cannot be combined with --regions-file")
            wanted.setdefault(r.rname, []).append((min(r.start, POS_LIMIT), min(r.end, POS_LIMIT)))
        cut: dict[str, list[tuple[int, int]]] = {}
        for name, ivs in bed.items():
            for qs, qe in wanted.get(name, ()):
                for bs, be in ivs:
                    if be > qs and bs < qe:
                        cut.setdefault(name, []).append((max(bs, qs), min(be, qe)))
        bed = cut
    selections = [
        Selection(name, merge_intervals(bed[name]), f"{regions_file}:{name}")
        for name in lengths
        if bed.get(name)
    ]
    if not selections:
        raise RegionError(
            f"{regions_file}: no interval on the dataset's references"
            + (" within the given regions" if parsed else "")
        )
    return selections, warns


@dataclass(frozen=True)
class ChunkTask:
    """One chunk object to read for one selection.

    Attributes:
        selection: Index of the selection in the plan.
        chunk: The chunk object.
        whole: Every record of the chunk matches the selection, so a count
            needs only the index.
    """

    selection: int
    chunk: ChunkRef
    whole: bool


@dataclass
class QueryPlan:
    """The chunk reads a query needs, in output order; built without reading chunks."""

    dataset: DatasetReader
    selections: list[Selection]
    tasks: list[ChunkTask]
    warnings: list[str] = field(default_factory=list)

    def explain(self, columns: Sequence[str], count: bool = False) -> str:
        """Describe the plan: chunk objects, bytes and requests, without reading them.

        Args:
            columns: Columns the query reads from each chunk.
            count: Whether the query only counts (chunks wholly inside a
                region are then answered from the index).
        """
        names = project(list(columns))
        whole_object = len(names) == len(COLUMNS)
        lines = [
            f"# query plan for {self.dataset.url} (BAMS3 {self.dataset.manifest.format_version})",
            f"# columns read: {','.join(names)}"
            + ("" if whole_object else " (projection: footer + column chunks, ranged reads)"),
            "region\tchunk\trecords\tbytes\taction",
        ]
        fetch = requests = index_only = 0
        fetch_upper = 0
        seen_refs = set()
        fetched: set[str] = set()
        for task in self.tasks:
            sel = self.selections[task.selection]
            info = task.chunk.info
            seen_refs.add(task.chunk.rname)
            # A chunk needed by several selections is read once (see _ChunkCache).
            first = info.path not in fetched
            if count and task.whole:
                action = "count from index"
                index_only += 1
            elif whole_object or info.bytes <= FOOTER_READ:
                action = "read whole object (1 request)" if first else "shared with an earlier read"
                if first:
                    fetch += info.bytes
                    fetch_upper += info.bytes
                    requests += 1
                    fetched.add(info.path)
            else:
                action = f"read {','.join(names)} (2 requests)" if first else "shared with an earlier read"
                if first:
                    fetch_upper += info.bytes
                    requests += 2
                    fetched.add(info.path)
            lines.append(f"{sel.label}\t{task.chunk.url}\t{info.records}\t{info.bytes}\t{action}")
        total = sum(t.chunk.info.bytes for t in self.tasks)
        objects = len({t.chunk.info.path for t in self.tasks})
        lines.append(
            f"# total: {len(self.selections)} selection(s), {len(self.tasks)} chunk read(s) of "
            f"{objects} object(s) holding {total:,} bytes; {index_only} answered from the index; "
            f"about {requests} request(s) fetching at most {fetch_upper:,} bytes"
            + (f" ({fetch:,} as whole objects)" if fetch and fetch != fetch_upper else "")
            + f"; metadata: manifest + {len(seen_refs)} index object(s)"
        )
        lines.extend(f"# warning: {w}" for w in self.warnings)
        return "\n".join(lines) + "\n"


def merge_selections(ds: DatasetReader, selections: Sequence[Selection]) -> list[Selection]:
    """One selection per reference, in header order (``samtools view -M``): each record once."""
    if any(s.rname is None for s in selections):
        return [Selection(None, (), ALL_RECORDS)]
    by_ref: dict[str, list[Selection]] = {}
    for sel in selections:
        by_ref.setdefault(str(sel.rname), []).append(sel)
    order = [r.name for r in ds.manifest.references]
    out = []
    for name in sorted(by_ref, key=lambda n: order.index(n) if n in order else len(order)):
        sels = by_ref[name]
        label = ",".join(s.label for s in sels)
        if any(s.whole for s in sels):
            out.append(Selection(name, (), label))
        else:
            out.append(Selection(name, merge_intervals(iv for s in sels for iv in s.intervals), label))
    return out


def plan_query(
    ds: DatasetReader,
    regions: RegionsArg = None,
    regions_file: str | None = None,
    workers: int = DEFAULT_WORKERS,
    merge: bool = False,
    **storage_options: Any,
) -> QueryPlan:
    """Plan a query from the manifest and indexes (no chunk is read).

    Args:
        ds: The dataset.
        regions: Region strings (samtools syntax) or :class:`Region` objects;
            None or ``.`` for every record.
        regions_file: BED file (``samtools view --regions-file``).
        workers: Threads used to fetch the reference indexes.
        merge: Select each record overlapping any region once, in file order
            (``samtools view -M``), instead of region after region.
        **storage_options: fsspec options for a remote BED file.

    Returns:
        The plan.

    Raises:
        RegionError: For a bad region, BED file or unknown reference.
        CorruptDatasetError: For a damaged index.
        OSError: For storage failures.
    """
    selections, warns = parse_selections(ds, regions, regions_file, **storage_options)
    if merge and len(selections) > 1:
        selections = merge_selections(ds, selections)
    names: list[str] = []
    for sel in selections:
        refs = [r.name for r in ds.manifest.references] if sel.rname is None else [sel.rname]
        names.extend(n for n in refs if n not in names)
    # Fetch the indexes concurrently: on S3 each is one round trip.
    for _ in thread_map(ds.index, names, min(workers, len(names)), "bams3-plan"):
        pass
    tasks: list[ChunkTask] = []
    for i, sel in enumerate(selections):
        refs = [r.name for r in ds.manifest.references] if sel.rname is None else [sel.rname]
        for name in refs:
            for info in ds.index(name).chunks:
                chunk = ChunkRef(ds.storage, name, info)
                if sel.whole:
                    tasks.append(ChunkTask(i, chunk, True))
                    continue
                if any(info.overlaps(s, e) for s, e in sel.intervals):
                    whole = any(info.inside(s, e) for s, e in sel.intervals)
                    tasks.append(ChunkTask(i, chunk, whole))
    return QueryPlan(ds, selections, tasks, warns)


def shard_indices(sizes: Sequence[int], shard: int, shards: int) -> list[int]:
    """Return the positions of the items in shard ``shard`` of ``shards``, balanced by size, in order.

    Largest items first, each to the shard with the fewest bytes so far (ties
    to the lower shard): a shard then differs from any other by at most the
    largest item. Every item is in exactly one shard, and the result depends
    only on the sizes, so the N array jobs of ``bams3 chunks --shard I/N``
    agree without talking to each other.

    Args:
        sizes: Item sizes in bytes (chunk objects, from the index), in list order.
        shard: Which shard, 0-based.
        shards: How many shards.

    Raises:
        InvalidArgumentError: Unless ``0 <= shard < shards``.
    """
    if shards < 1 or not 0 <= shard < shards:
        raise InvalidArgumentError(f"shard {shard}/{shards}: need 0 <= I < N")
    loads = [(0, s) for s in range(shards)]  # (bytes, shard): a heap
    mine: list[int] = []
    for pos in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        load, s = heapq.heappop(loads)
        if s == shard:
            mine.append(pos)
        heapq.heappush(loads, (load + sizes[pos], s))
    return sorted(mine)
