"""The local genotyping engine: datasets and sites in, allele counts out (an Arrow table per sample).

Work is planned per dataset, reference and group of sites whose chunk objects
overlap (:func:`plan_units`): only chunks holding sites are read, with only
the counting's columns (:attr:`GenotypeOptions.columns`). Units run in
worker processes (:func:`bams3_spark.parallel.process_map`), results come
back in site order.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from bams3_spark.arrays import int_array, string_array
from bams3_spark.dataset.chunks import ChunkRef
from bams3_spark.dataset.reader import DatasetReader, check_distinct_samples
from bams3_spark.exceptions import CorruptDatasetError, InvalidArgumentError
from bams3_spark.format.manifest import ChunkInfo
from bams3_spark.genotype.options import GenotypeOptions
from bams3_spark.genotype.pileup import CATEGORIES, count_sites
from bams3_spark.genotype.sites import Sites, read_sites
from bams3_spark.parallel import ProgressCallback, process_map, resolve_workers

I64 = npt.NDArray[np.int64]

#: Count columns, then the same per strand (``A_fwd``, ``A_rev``, ...).
COUNT_COLUMNS = list(CATEGORIES)
STRAND_COLUMNS = [f"{c}_{s}" for c in CATEGORIES for s in ("fwd", "rev")]
#: The table of :func:`genotype_table` (and of the TSV, in this order).
SCHEMA = pa.schema(
    [("sample", pa.string()), ("chrom", pa.string()), ("pos", pa.int32()), ("depth", pa.int32())]
    + [(c, pa.int32()) for c in COUNT_COLUMNS + STRAND_COLUMNS]
)

#: Chunk bytes a unit reads at most (unless one window's chunks alone are more).
UNIT_BYTES = 64 << 20

DatasetsArg = DatasetReader | str | Sequence[DatasetReader | str]
SitesArg = Sites | str


@dataclass(frozen=True)
class Unit:
    """Sites ``[lo, hi)`` of one reference of one dataset, and the chunk objects that hold their reads."""

    ds: DatasetReader
    rname: str
    lo: int
    hi: int
    chunks: tuple[ChunkInfo, ...]

    @property
    def bytes(self) -> int:
        """Bytes of the chunk objects (the whole objects; only some columns are read)."""
        return sum(c.bytes for c in self.chunks)


def open_datasets(datasets: DatasetsArg, storage_options: Mapping[str, Any]) -> list[DatasetReader]:
    """Open datasets given as URLs (or already open); sample names must be distinct.

    Raises:
        InvalidArgumentError: For no dataset.
        DatasetError: For two datasets of one sample.
    """
    items = [datasets] if isinstance(datasets, (DatasetReader, str)) else list(datasets)
    if not items:
        raise InvalidArgumentError("no dataset given")
    out = [d if isinstance(d, DatasetReader) else DatasetReader.open(d, **storage_options) for d in items]
    check_distinct_samples(out)
    return out


def load_sites(sites: SitesArg, storage_options: Mapping[str, Any]) -> Sites:
    """Sites as given, or read from a BED/VCF file."""
    return sites if isinstance(sites, Sites) else read_sites(sites, **storage_options)


def check_sites(datasets: Sequence[DatasetReader], sites: Sites) -> list[str]:
    """Check sites against every dataset's references; return warnings (sites past a reference's end).

    Raises:
        SitesError: For sites on a reference a dataset lacks.
    """
    warns: dict[str, None] = {}
    for ds in datasets:
        for w in sites.check_references(dict(ds.lengths), ds.url):
            warns.setdefault(w)
    return list(warns)


def plan_units(ds: DatasetReader, sites: Sites, budget: int | None = None) -> list[Unit]:
    """Cut each reference's sites into units: consecutive sites and every chunk object holding their reads.

    A chunk is needed by the sites in ``[min_start - 1, max_end)`` (0-based,
    the index's overlap rule for one base), so a unit holds every read of its
    sites. Sites are cut at the chunks' window starts, then consecutive pieces
    are joined while their chunks stay under ``budget`` bytes: sparse sites
    share reads, dense sites (a whole-exome BED) never load a reference at
    once -- a chunk whose reads reach into the next piece is read by both.
    """
    limit = UNIT_BYTES if budget is None else budget
    units: list[Unit] = []
    for name, (lo, hi) in zip(sites.chroms, sites.groups, strict=True):
        if hi <= lo:
            continue
        pos = sites.pos[lo:hi]
        chunks = ds.index(name).chunks
        spans = []
        for i, c in enumerate(chunks):
            a = int(np.searchsorted(pos, c.min_start - 1, side="left"))
            b = int(np.searchsorted(pos, c.max_end, side="left"))
            if b > a:
                spans.append((a, b, i))
        starts = sorted({c.window_start for c in chunks})
        window = np.searchsorted(np.asarray(starts, dtype=np.int64), pos, side="right")
        cuts = np.flatnonzero(np.diff(window)) + 1
        edges = [0, *cuts.tolist(), hi - lo]
        current: tuple[int, int, set[int]] | None = None
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            need = {i for sa, sb, i in spans if sa < b and sb > a}
            if current is not None:
                merged = current[2] | need
                if sum(chunks[i].bytes for i in merged) <= limit or not need or not current[2]:
                    current = (current[0], b, merged)
                    continue
                units.append(_unit(ds, name, lo, current, chunks))
            current = (a, b, need)
        if current is not None:
            units.append(_unit(ds, name, lo, current, chunks))
    return units


def _unit(ds: DatasetReader, name: str, lo: int, piece: tuple[int, int, set[int]],
          chunks: Sequence[ChunkInfo]) -> Unit:
    a, b, need = piece
    return Unit(ds, name, lo + a, lo + b, tuple(chunks[i] for i in sorted(need)))


@dataclass(frozen=True)
class _Task:
    unit: Unit
    positions: I64
    options: GenotypeOptions


def read_unit_records(unit: Unit, columns: Sequence[str]) -> pa.Table:
    """The records of a unit's chunks, in file order, with only ``columns``."""
    tables = [ChunkRef(unit.ds.storage, unit.rname, c).read(columns) for c in unit.chunks]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables)


def count_positions(table: pa.Table, positions: I64, options: GenotypeOptions, rname: str, where: str) -> I64:
    """Counts (sites, 7, 2) at positions in file order (repeats allowed), from a reference's records."""
    if len(positions) == 0 or table.num_rows == 0:
        return np.zeros((len(positions), len(CATEGORIES), 2), dtype=np.int64)
    uniq, inverse = np.unique(positions, return_inverse=True)
    try:
        counts = count_sites(table, uniq, options, rname)
    except ValueError as exc:
        raise CorruptDatasetError(f"{where}: {exc}") from None
    return counts[inverse]


def _run_task(task: _Task) -> I64:
    unit = task.unit
    table = read_unit_records(unit, task.options.columns)
    return count_positions(table, task.positions, task.options, unit.rname, unit.ds.url)


def iter_sample_counts(
    datasets: Sequence[DatasetReader],
    sites: Sites,
    options: GenotypeOptions,
    *,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> Iterator[tuple[str, I64]]:
    """Yield (sample, counts of shape (sites, 7, 2)) per dataset, in dataset order."""
    plans = [(ds, plan_units(ds, sites)) for ds in datasets]
    total = sum(len(u) for _, u in plans)
    tasks = [_Task(u, sites.pos[u.lo: u.hi], options) for _, units in plans for u in units]
    results = process_map(_run_task, tasks, min(workers, max(1, len(tasks))))
    done = 0
    nbytes = 0
    for ds, units in plans:
        counts = np.zeros((len(sites), len(CATEGORIES), 2), dtype=np.int64)
        for u in units:
            counts[u.lo: u.hi] = next(results)
            done += 1
            nbytes += u.bytes
            if progress is not None:
                progress(done, total, nbytes)
        yield ds.sample, counts


def counts_table(sample: str, chroms: list[str], pos: I64, counts: I64) -> pa.Table:
    """One sample's counts as a table with :data:`SCHEMA`."""
    per_cat = counts.sum(axis=2)
    depth = per_cat[:, :6].sum(axis=1)  # bases and deletions; not insertions
    cols: list[pa.Array] = [
        string_array([sample] * len(pos)),
        string_array(chroms),
        int_array(pos + 1, pa.int32()),
        int_array(depth, pa.int32()),
    ]
    cols += [int_array(per_cat[:, i], pa.int32()) for i in range(len(CATEGORIES))]
    cols += [int_array(counts[:, i, s], pa.int32()) for i in range(len(CATEGORIES)) for s in (0, 1)]
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def genotype(
    datasets: DatasetsArg,
    sites: SitesArg,
    options: GenotypeOptions | None = None,
    *,
    workers: int | str | None = 1,
    progress: ProgressCallback | None = None,
    on_warning: Callable[[str], None] | None = None,
    **storage_options: Any,
) -> Iterator[tuple[str, Sites, I64]]:
    """Count alleles of datasets at sites; yield (sample, sites, counts) per dataset.

    Args:
        datasets: Dataset(s): open datasets or URLs.
        sites: A BED or VCF file, or :class:`Sites`.
        options: Counting options (default: ``samtools mpileup -B``'s).
        workers: Worker processes (``"auto"``: one per core).
        progress: Called with (units done, units in all, bytes of their chunks).
        on_warning: Receives warnings (sites past a reference's end); default
            :func:`warnings.warn`.
        **storage_options: fsspec options for URLs.

    Raises:
        SitesError: For a bad sites file.
        Bams3Error, OSError: For unusable datasets or storage failures.
    """
    opts = options or GenotypeOptions()
    dss = open_datasets(datasets, storage_options)
    st = load_sites(sites, storage_options)
    for w in check_sites(dss, st):
        (on_warning or (lambda m: warnings.warn(m, stacklevel=3)))(w)
    n = resolve_workers(workers)
    for sample, counts in iter_sample_counts(dss, st, opts, workers=n, progress=progress):
        yield sample, st, counts


def genotype_table(
    datasets: DatasetsArg,
    sites: SitesArg,
    options: GenotypeOptions | None = None,
    *,
    workers: int | str | None = 1,
    **storage_options: Any,
) -> pa.Table:
    """Allele counts of one or many datasets at sites, as one Arrow table (:data:`SCHEMA`).

    Rows: datasets in order, then sites in file order. Counts follow
    ``samtools mpileup -B`` (see :mod:`bams3_spark.genotype.options`);
    ``depth`` is bases plus deletions (mpileup's depth without reference skips).
    """
    tables = []
    chroms: list[str] | None = None
    for sample, st, counts in genotype(datasets, sites, options, workers=workers, **storage_options):
        if chroms is None:
            chroms = st.chrom_of()
        tables.append(counts_table(sample, chroms, st.pos, counts))
    if not tables:
        return SCHEMA.empty_table()
    return pa.concat_tables(tables)
