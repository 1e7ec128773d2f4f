"""Cohort inputs and by-sample work units, shared by every Spark job (driver side, no pyspark).

Every cohort job (``jobs/coverage.py``, ``jobs/query.py``, ...) takes the same
inputs, resolved here once:

* dataset paths, URLs or quoted globs (``'s3://bucket/cohort/*.bams3'``),
  expanded with fsspec (:func:`bams3_spark.spark.scan.expand_paths`);
* a sample sheet, ``--manifest TSV`` (:func:`parse_sample_sheet`): one
  dataset per line, optionally with the sample name to report it under;
* two datasets of one sample are refused with one line naming both.

Then :func:`plan_units` cuts the cohort into units of work, from manifests
(and, only for references split for parallelism, their chunk indexes): a
whole sample, a sample's reference, or a run of consecutive chunks of one
reference sized by bytes. The driver holds, per sample, its URL, name and a
few totals; never a record, never a read name, so planning memory and time
grow linearly with the number of samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bams3_spark.exceptions import DatasetError, InvalidArgumentError

if TYPE_CHECKING:
    from bams3_spark.dataset.reader import DatasetReader

#: Manifests (and indexes) are small objects: fetch many at once.
METADATA_THREADS = 16
#: Whole samples are the units once there are this many per core: every core
#: stays busy without splitting a sample, and no mate state is ever merged.
SAMPLES_PER_CORE = 3
#: Units per core when samples are split (references, runs of chunks).
UNITS_PER_CORE = 3
#: Column names a sample sheet's header may use.
SAMPLE_HEADER = ("sample", "name", "sm")
DATASET_HEADER = ("dataset", "path", "url", "output", "bams3")
INPUT_HEADER = ("input", "bam", "input_bam")


@dataclass(frozen=True)
class SheetRow:
    """One line of a sample sheet: a dataset, and optionally its sample name and source BAM.

    Attributes:
        dataset: Dataset path or URL (the ``OUTPUT`` of a conversion sheet).
        sample: Sample name to report the dataset under (None: the dataset's own).
        input: Source BAM (conversion sheets), or None.
        line: Line number in the sheet, for messages.
    """

    dataset: str
    sample: str | None = None
    input: str | None = None
    line: int = 0


def _columns(line: str) -> list[str]:
    return [c.strip() for c in line.split("\t")] if "\t" in line else line.split()


def parse_sample_sheet(text: str, where: str = "samples.tsv", *, conversion: bool = False) -> list[SheetRow]:
    """Parse a sample sheet (TSV): the one rule for every job's ``--manifest``.

    Blank lines and ``#`` comments are skipped; columns are tab-separated
    (whitespace-separated when a line has no tab). A first line naming its
    columns is a header: ``sample``, ``dataset`` (or ``output``, ``path``,
    ``url``) and ``input`` (or ``bam``), in any order; other columns are
    ignored. Without a header, a cohort sheet (``conversion`` False) is
    ``DATASET`` or ``SAMPLE<TAB>DATASET`` per line; a conversion sheet is
    ``INPUT<TAB>OUTPUT``. So one sheet with a header (``sample input output``)
    serves ``jobs/convert.py`` and then every cohort job.

    Args:
        text: The sheet's text.
        where: Its name, for messages.
        conversion: Parse for ``jobs/convert.py`` (an input BAM is required).

    Returns:
        The rows, in sheet order.

    Raises:
        InvalidArgumentError: For a line with the wrong number of columns, a
            missing column, or no rows.
    """
    rows: list[SheetRow] = []
    layout: dict[str, int] | None = None
    width = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cols = _columns(line)
        if layout is None and not rows:
            names = [c.lower() for c in cols]
            found = {
                key: next((i for i, n in enumerate(names) if n in aliases), -1)
                for key, aliases in (("sample", SAMPLE_HEADER), ("dataset", DATASET_HEADER),
                                     ("input", INPUT_HEADER))
            }
            if any(i >= 0 for i in found.values()):
                layout = {k: i for k, i in found.items() if i >= 0}
                width = len(cols)
                if "dataset" not in layout:
                    raise InvalidArgumentError(f"{where} line {number}: header has no dataset/output column")
                if conversion and "input" not in layout:
                    raise InvalidArgumentError(f"{where} line {number}: header has no input column")
                continue
        if layout is not None:
            if len(cols) != width or not all(cols[i] for i in layout.values()):
                raise InvalidArgumentError(
                    f"{where} line {number}: expected {width} columns as in the header, got {len(cols)}"
                )
            rows.append(SheetRow(
                cols[layout["dataset"]],
                cols[layout["sample"]] if "sample" in layout else None,
                cols[layout["input"]] if "input" in layout else None,
                number,
            ))
            continue
        if conversion:
            if len(cols) != 2 or not all(cols):
                raise InvalidArgumentError(
                    f"{where} line {number}: expected 2 columns (input BAM, output dataset), got {len(cols)}"
                )
            rows.append(SheetRow(cols[1], None, cols[0], number))
        elif len(cols) == 1:
            rows.append(SheetRow(cols[0], None, None, number))
        elif len(cols) == 2 and all(cols):
            rows.append(SheetRow(cols[1], cols[0], None, number))
        else:
            raise InvalidArgumentError(
                f"{where} line {number}: expected DATASET or SAMPLE<TAB>DATASET, got {len(cols)} columns"
            )
    if not rows:
        raise InvalidArgumentError(f"{where}: no samples")
    return rows


def read_sample_sheet(url: str, storage_options: Mapping[str, Any] | None = None, *,
                      conversion: bool = False) -> list[SheetRow]:
    """Read and parse a sample sheet from a path or URL (see :func:`parse_sample_sheet`).

    Raises:
        FileNotFoundError: If there is no such file.
        InvalidArgumentError: For a malformed sheet.
    """
    from bams3_spark.io.storage import storage_for_file

    storage, name = storage_for_file(url, **dict(storage_options or {}))
    if not storage.exists(name):
        raise FileNotFoundError(f"{url}: no such file")
    return parse_sample_sheet(storage.read_bytes(name).decode("utf-8", "replace"), url, conversion=conversion)


@dataclass(frozen=True)
class RefTotals:
    """What planning keeps of one reference: name, length and the manifest's totals."""

    name: str
    length: int
    chunks: int
    bytes: int


@dataclass(frozen=True)
class CohortSample:
    """One sample of a cohort, as the driver keeps it.

    Attributes:
        url: Dataset prefix.
        sample: Sample name (the sheet's, else the dataset's read-group SM or base name).
        index: Position in the cohort (the order of outputs).
        chunks: Chunk objects of its placed references.
        bytes: Bytes of those chunk objects.
        references: Per-reference totals (header order), only when the plan may split samples.
    """

    url: str
    sample: str
    index: int
    chunks: int
    bytes: int
    references: tuple[RefTotals, ...] = ()


@dataclass(frozen=True)
class Cohort:
    """The samples of a job, validated: distinct names, readable manifests."""

    samples: tuple[CohortSample, ...]
    storage_options: Mapping[str, Any]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def names(self) -> list[str]:
        """Sample names, in cohort order."""
        return [s.sample for s in self.samples]


def cohort_inputs(
    datasets: Sequence[str], manifest: str | None, storage_options: Mapping[str, Any]
) -> list[tuple[str, str | None]]:
    """(dataset URL, sample name or None) of every input: paths and globs, then the sheet's rows.

    The same dataset named twice (a glob and a path) counts once.

    Raises:
        InvalidArgumentError: For no input or a malformed sheet.
        NotADatasetError: For a glob matching nothing.
        OSError: For listing or reading failures.
    """
    from bams3_spark.spark.scan import expand_paths

    items: list[tuple[str, str | None]] = [(p, None) for p in expand_paths(list(datasets), storage_options)]
    if manifest:
        for row in read_sample_sheet(manifest, storage_options):
            for url in expand_paths([row.dataset], storage_options):
                items.append((url, row.sample))
    if not items:
        raise InvalidArgumentError(
            "no dataset given: name datasets (paths, URLs, quoted globs) or --manifest TSV"
        )
    seen: dict[str, str | None] = {}
    out: list[tuple[str, str | None]] = []
    for url, sample in items:
        key = url.rstrip("/")
        if key in seen:
            if sample is not None and seen[key] is not None and seen[key] != sample:
                raise DatasetError(f"{url}: listed twice, as sample {seen[key]!r} and {sample!r}")
            continue
        seen[key] = sample
        out.append((url, sample))
    return out


def with_sample(ds: DatasetReader, sample: str | None) -> DatasetReader:
    """The dataset reported under ``sample`` (the sheet's name), or as it is."""
    if sample is not None and sample != ds.sample:
        ds.manifest = replace(ds.manifest, sample=sample)
    return ds


def _summarize(url: str, sample: str | None, index: int, storage_options: Mapping[str, Any],
               keep_references: bool) -> CohortSample:
    from bams3_spark.dataset.reader import DatasetReader
    from bams3_spark.format.layout import UNPLACED_NAME

    ds = with_sample(DatasetReader.open(url, **storage_options), sample)
    refs = tuple(RefTotals(r.name, r.length, r.chunks, r.bytes)
                 for r in ds.manifest.references if r.name != UNPLACED_NAME)
    return CohortSample(ds.url, ds.sample, index, sum(r.chunks for r in refs), sum(r.bytes for r in refs),
                        refs if keep_references else ())


def resolve_cohort(
    datasets: Sequence[str],
    manifest: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    *,
    parallelism: int | None = None,
) -> Cohort:
    """Expand and validate a job's inputs: every manifest is read (only that) before any task runs.

    Args:
        datasets: Dataset paths, URLs or globs.
        manifest: A sample sheet (see :func:`parse_sample_sheet`), or None.
        storage_options: fsspec options (``endpoint_url``...).
        parallelism: Cores the job will use: per-reference totals are kept
            only when the plan may split samples (fewer than
            :data:`SAMPLES_PER_CORE` per core), so a large cohort holds a few
            numbers per sample. None keeps them.

    Returns:
        The cohort, in input order.

    Raises:
        InvalidArgumentError: For no input or a bad sheet.
        DatasetError: For an unusable dataset or a duplicate sample (one line).
        OSError: For storage failures.
    """
    from bams3_spark.dataset.reader import check_distinct_samples
    from bams3_spark.parallel import thread_map

    opts = dict(storage_options or {})
    inputs = cohort_inputs(datasets, manifest, opts)
    keep_references = parallelism is None or not by_sample(len(inputs), parallelism)
    threads = min(METADATA_THREADS, len(inputs))
    samples = list(thread_map(
        lambda item: _summarize(item[1][0], item[1][1], item[0], opts, keep_references),
        list(enumerate(inputs)), threads, "bams3-cohort",
    ))
    check_distinct_samples(samples, "the read groups' SM, or the sample column of --manifest")
    return Cohort(tuple(samples), opts)


# --------------------------------------------------------------------------- units


@dataclass(frozen=True)
class Unit:
    """One unit of work: a whole sample, one reference of it, or a run of its chunks.

    Attributes:
        sample: Sample name.
        url: Dataset prefix.
        index: The sample's position in the cohort.
        rname: Reference name; None for the whole sample.
        tid: The reference's position in the header (-1 for a whole sample).
        first: First chunk (position in the reference's index) of a run; -1 for every chunk.
        last: One past the run's last chunk; -1 for every chunk.
        part: The run's number within its reference (0 when not split).
        parts: Runs the reference is split into (1 when not split).
        bytes: Chunk bytes the unit reads (its weight).
    """

    sample: str
    url: str
    index: int
    rname: str | None = None
    tid: int = -1
    first: int = -1
    last: int = -1
    part: int = 0
    parts: int = 1
    bytes: int = 0

    @property
    def split(self) -> bool:
        """Whether the unit is one run of several of its reference (mates resolved after)."""
        return self.parts > 1


def by_sample(n_samples: int, parallelism: int) -> bool:
    """Whether whole samples are the units: enough samples to keep every core busy."""
    return n_samples >= SAMPLES_PER_CORE * max(1, parallelism)


def _runs(sizes: Sequence[int], budget: float) -> list[tuple[int, int]]:
    """Cut consecutive chunks into runs of about ``budget`` bytes (a chunk is never split)."""
    runs: list[tuple[int, int]] = []
    start, load = 0, 0
    for i, size in enumerate(sizes):
        if i > start and load + size > budget:
            runs.append((start, i))
            start, load = i, 0
        load += size
    if sizes:
        runs.append((start, len(sizes)))
    return runs


def plan_units(
    cohort: Cohort,
    parallelism: int,
    *,
    split_references: bool = True,
    chunk_sizes: Any = None,
) -> list[Unit]:
    """Cut a cohort into units of work, in output order (samples, references in header order, runs).

    With at least :data:`SAMPLES_PER_CORE` samples per core, each sample is
    one unit. Otherwise each reference is one, and a reference larger than
    one core's share of the work (total bytes over ``parallelism``) is cut
    into runs of about a third of that share, by the chunk sizes in its index
    (only those indexes are read).

    Args:
        cohort: The cohort (with per-reference totals unless every sample is a unit).
        parallelism: Cores of the cluster (Spark's default parallelism).
        split_references: Allow runs of chunks (False: at most a reference per unit).
        chunk_sizes: ``(url, rname) -> list of chunk sizes``; default reads the index.

    Returns:
        The units, in output order.
    """
    if by_sample(len(cohort), parallelism) or not any(s.references for s in cohort.samples):
        return [Unit(s.sample, s.url, s.index, bytes=s.bytes) for s in cohort.samples]
    total = sum(s.bytes for s in cohort.samples)
    # Only a reference larger than one core's share is split (counting a run
    # alone and resolving its mates costs about twice the CPU of counting the
    # reference whole), into runs of a fraction of that share.
    share = total / max(1, parallelism)
    budget = max(1.0, share / UNITS_PER_CORE)
    sizes_of = chunk_sizes or _index_sizes(cohort.storage_options)
    units: list[Unit] = []
    for s in cohort.samples:
        if not s.references:
            units.append(Unit(s.sample, s.url, s.index, bytes=0))
            continue
        # Every reference, empty ones too: their (zero) rows come from their unit.
        for tid, ref in enumerate(s.references):
            if not split_references or ref.bytes <= share or ref.chunks < 2:
                units.append(Unit(s.sample, s.url, s.index, ref.name, tid, bytes=ref.bytes))
                continue
            sizes = sizes_of(s.url, ref.name)
            runs = _runs(sizes, budget)
            for part, (first, last) in enumerate(runs):
                units.append(Unit(s.sample, s.url, s.index, ref.name, tid, first, last, part, len(runs),
                                  sum(sizes[first:last])))
    return units


def _index_sizes(storage_options: Mapping[str, Any]) -> Any:
    def sizes(url: str, rname: str) -> list[int]:
        from bams3_spark.dataset.reader import DatasetReader

        return [c.bytes for c in DatasetReader.open(url, **storage_options).index(rname).chunks]

    return sizes


def bundle(units: Sequence[Unit], n_tasks: int) -> list[list[Unit]]:
    """Group consecutive units into at most ``n_tasks`` tasks of similar bytes, keeping their order.

    Tasks then hold neighbouring samples, so a task's output follows the
    cohort order and the job's part files are in order without a sort.
    """
    if not units:
        return []
    n = max(1, min(n_tasks, len(units)))
    weights = [max(u.bytes, 1) for u in units]  # empty references still cost a little
    total = sum(weights)
    groups: list[list[Unit]] = [[] for _ in range(n)]
    done = 0
    for u, w in zip(units, weights, strict=True):
        # Each unit goes to the task whose share of the bytes holds its middle.
        groups[min(n - 1, int((done + w / 2) * n / total))].append(u)
        done += w
    return [g for g in groups if g]


def open_counted(unit: Unit, storage_options: Mapping[str, Any]) -> DatasetReader:
    """Open a unit's dataset through a counting storage, under the unit's sample name (executors)."""
    from bams3_spark.dataset.reader import DatasetReader, load_manifest
    from bams3_spark.io.storage import CountingStorage, Storage

    counting = CountingStorage(Storage(unit.url, **dict(storage_options)))
    return with_sample(DatasetReader(counting, load_manifest(counting)), unit.sample)


def unit_costs(ds: DatasetReader, chunks: int) -> list[int]:
    """The accumulator figures of one unit: (1 unit, chunk objects, requests, bytes)."""
    st: Any = ds.storage
    return [1, chunks, int(st.requests), int(st.bytes_read)]


def safe_name(sample: str) -> str:
    """A sample's file name stem: characters other than letters, digits, ``._-`` become ``_``."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in sample)[:200]


def check_file_names(samples: Iterable[str]) -> None:
    """Refuse two samples whose output files would have the same name.

    Raises:
        InvalidArgumentError: Naming both samples.
    """
    seen: dict[str, str] = {}
    for s in samples:
        name = safe_name(s)
        if name in seen:
            raise InvalidArgumentError(
                f"samples {seen[name]!r} and {s!r} map to the same file name {name!r}; rename one"
            )
        seen[name] = s


__all__ = [
    "Cohort",
    "CohortSample",
    "RefTotals",
    "SheetRow",
    "Unit",
    "bundle",
    "by_sample",
    "check_file_names",
    "open_counted",
    "cohort_inputs",
    "parse_sample_sheet",
    "plan_units",
    "read_sample_sheet",
    "resolve_cohort",
    "safe_name",
    "unit_costs",
    "with_sample",
]
