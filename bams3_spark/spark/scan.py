"""Planning a scan of BAMS3 datasets for Spark: options, datasets and regions, validated on the driver.

Shared by the ``bams3`` data source and :func:`~bams3_spark.spark.read.read_bams3`:
options are checked and every dataset's manifest is read here
(:func:`resolve_scan`), so a bad option, a path that is not a dataset, an
incomplete dataset or mixed format versions fail before any task runs, with
one message. Nothing here imports pyspark. Storage and dataset modules
(fsspec, pyarrow) are imported on use: pyspark imports the data source's
module, and so this one, in every process where it looks up data sources.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bams3_spark.exceptions import DatasetError, InvalidArgumentError, NotADatasetError, RegionError, one_line

if TYPE_CHECKING:
    from bams3_spark.format.manifest import ChunkInfo
    from bams3_spark.format.regions import Region

#: The format name: ``spark.read.format(SOURCE_NAME)``.
SOURCE_NAME = "bams3"

#: Storage options accepted as data source options, with their value type.
#: They are passed to fsspec (``bams3_spark.io.Storage``) on the driver and in tasks.
STORAGE_OPTIONS: dict[str, type] = {
    "endpoint_url": str,
    "s3_endpoint": str,
    "anon": bool,
    "profile": str,
    "key": str,
    "secret": str,
    "token": str,
    "requester_pays": bool,
}
#: Rows per Arrow batch handed to Spark (``batch_rows`` option).
DEFAULT_BATCH_ROWS = 32_768
OPTIONS: tuple[str, ...] = ("path", "paths", "region", "regions", "pushdown", "batch_rows", *STORAGE_OPTIONS)

#: Manifests and indexes are small objects: fetch many at once on the driver.
_METADATA_THREADS = 16
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset of the scan, as validated on the driver.

    Attributes:
        url: Dataset prefix (absolute path or URL).
        sample: Sample name (read-group SM, or the dataset's base name).
        format_version: The manifest's ``format_version``.
        regions: The region options parsed against this dataset's references
            (0-based half-open), in header order; empty for no region option.
    """

    url: str
    sample: str
    format_version: str
    regions: tuple[Region, ...] = ()


@dataclass(frozen=True)
class ScanConfig:
    """Everything a scan needs, validated: datasets, regions, storage options."""

    datasets: tuple[DatasetEntry, ...]
    region_texts: tuple[str, ...]
    storage_options: Mapping[str, Any]
    batch_rows: int = DEFAULT_BATCH_ROWS
    pushdown: bool = False

    @property
    def samples(self) -> list[str]:
        """Sample names, in dataset order."""
        return [d.sample for d in self.datasets]


def _json_list(name: str, text: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise InvalidArgumentError(f"bams3 option {name!r}: not a JSON array of strings: {text!r}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgumentError(f"bams3 option {name!r}: not a JSON array of strings: {text!r}")
    return value


def parse_bool(name: str, text: str) -> bool:
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidArgumentError(f"bams3 option {name!r}: expected true or false, got {text!r}")


def _storage_options(options: Mapping[str, str]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for name, kind in STORAGE_OPTIONS.items():
        if name not in options or options[name] is None:
            continue
        raw = options[name]
        if kind is bool:
            opts[name] = parse_bool(name, raw)
        elif not str(raw).strip():
            raise InvalidArgumentError(f"bams3 option {name!r}: empty value")
        else:
            opts[name] = str(raw)
    if "endpoint_url" in opts and "s3_endpoint" in opts and opts["endpoint_url"] != opts["s3_endpoint"]:
        raise InvalidArgumentError("bams3 options 'endpoint_url' and 's3_endpoint' disagree")
    if "s3_endpoint" in opts:
        opts["endpoint_url"] = opts.pop("s3_endpoint")
    return opts


def _region_texts(options: Mapping[str, str]) -> list[str]:
    texts: list[str] = []
    if options.get("region") is not None:
        texts.append(str(options["region"]).strip())
    raw = options.get("regions")
    if raw is not None:
        raw = str(raw).strip()
        # Region strings may contain commas (1,000-2,000), so a list is a JSON
        # array or whitespace-separated, as on samtools' command line.
        texts += _json_list("regions", raw) if raw.startswith("[") else raw.split()
    for t in texts:
        if not t:
            raise InvalidArgumentError("bams3 option 'region': empty region")
    return list(dict.fromkeys(texts))


def _paths(options: Mapping[str, str]) -> list[str]:
    paths: list[str] = []
    if options.get("path"):
        paths.append(str(options["path"]))
    if options.get("paths"):
        paths += _json_list("paths", str(options["paths"]))
    if not paths:
        raise InvalidArgumentError("bams3: no dataset given: use .load(PATH), .load([PATHS]) or a glob")
    if any(not p.strip() for p in paths):
        raise InvalidArgumentError("bams3: empty dataset path")
    return list(dict.fromkeys(p.strip() for p in paths))


def expand_paths(paths: Iterable[str], storage_options: Mapping[str, Any]) -> list[str]:
    """Expand glob patterns (``*``, ``?``, ``[``) among dataset paths.

    Args:
        paths: Dataset paths or URLs, some of them patterns such as
            ``s3://bucket/cohort/*.bams3``.
        storage_options: fsspec options for listing object stores.

    Returns:
        The paths, each pattern replaced by its sorted matches.

    Raises:
        NotADatasetError: If a pattern matches nothing.
        OSError: If listing fails.
    """
    import fsspec

    from bams3_spark.io.storage import normalize_options, split_url

    out: list[str] = []
    for path in paths:
        if not any(c in path for c in "*?["):
            out.append(path)
            continue
        protocol, root = split_url(path.rstrip("/"))
        try:
            fs = fsspec.filesystem(protocol, **normalize_options(protocol, dict(storage_options)))
            matches = sorted(str(m) for m in fs.glob(root))
        except Exception as exc:  # noqa: BLE001 - storage clients raise anything
            raise OSError(f"{path}: cannot list ({one_line(exc)})") from exc
        if not matches:
            raise NotADatasetError(f"{path}: no dataset matches this pattern")
        out += [m if protocol == "file" else f"{protocol}://{m}" for m in matches]
    return list(dict.fromkeys(out))


def resolve_scan(options: Mapping[str, str]) -> ScanConfig:
    """Validate data source options and the datasets they name (driver side).

    Reads each dataset's manifest (only that), so every problem surfaces
    before any task runs, with one message naming the input.

    Args:
        options: The data source options (case-insensitive names, string values):
            ``path``/``paths``, ``region``/``regions``, ``pushdown``,
            ``batch_rows`` and the storage options of :data:`STORAGE_OPTIONS`.

    Returns:
        The validated scan configuration.

    Raises:
        InvalidArgumentError: Unknown option, bad value, or a region that does
            not parse against a dataset's references.
        NotADatasetError, IncompleteDatasetError, UnsupportedVersionError,
        CorruptDatasetError: For a path that is not a usable dataset.
        DatasetError: For mixed format versions or duplicate sample names.
        OSError: For storage failures.
    """
    from bams3_spark.dataset.reader import DatasetReader, check_distinct_samples
    from bams3_spark.parallel import thread_map

    opts = {str(k).lower(): v for k, v in options.items()}
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise InvalidArgumentError(
            f"bams3: unknown option(s) {', '.join(unknown)}; options are {', '.join(OPTIONS)}"
        )
    batch_rows = DEFAULT_BATCH_ROWS
    if opts.get("batch_rows") is not None:
        try:
            batch_rows = int(str(opts["batch_rows"]))
        except ValueError:
            batch_rows = 0
        if batch_rows < 1:
            raise InvalidArgumentError(
                f"bams3 option 'batch_rows': expected a positive integer, got {opts['batch_rows']!r}"
            )
    pushdown = parse_bool("pushdown", opts["pushdown"]) if opts.get("pushdown") is not None else False
    storage_options = _storage_options(opts)
    region_texts = _region_texts(opts)
    urls = expand_paths(_paths(opts), storage_options)
    threads = min(_METADATA_THREADS, len(urls))
    datasets = list(thread_map(lambda u: DatasetReader.open(u, **storage_options), urls, threads))

    # The same dataset named twice (a glob and a path) is read once.
    unique = list({ds.url: ds for ds in datasets}.values())
    entries = [
        DatasetEntry(ds.url, ds.sample, ds.manifest.format_version, regions)
        for ds, regions in zip(unique, _dataset_regions(unique, region_texts), strict=True)
    ]

    first = entries[0]
    for e in entries[1:]:
        if e.format_version != first.format_version:
            raise DatasetError(
                f"mixed BAMS3 format versions: {first.url} is {first.format_version}, "
                f"{e.url} is {e.format_version}; load them separately"
            )
    check_distinct_samples(unique)
    return ScanConfig(tuple(entries), tuple(region_texts), storage_options, batch_rows, pushdown)


def _dataset_regions(datasets: Sequence[Any], texts: Sequence[str]) -> list[tuple[Region, ...]]:
    """Parse the region texts against each dataset's references, in header order.

    A cohort need not share references (chrY, decoys, alt contigs): a dataset
    without a region's reference simply has no records there. The region is an
    error only when it is malformed, or when no dataset has its reference.
    """
    from bams3_spark.format.regions import parse_region

    union: dict[str, int] = {}
    for ds in datasets:
        for name, length in ds.lengths.items():
            union.setdefault(name, length)
    for text in texts:
        try:
            parse_region(text, union)
        except RegionError as exc:
            where = datasets[0].url if len(datasets) == 1 else f"all {len(datasets)} datasets"
            raise RegionError(f"{where}: {exc}") from None
    out: list[tuple[Region, ...]] = []
    for ds in datasets:
        order = {name: i for i, name in enumerate(ds.lengths)}
        regions = []
        for text in texts:
            try:
                regions.append(ds.parse_region(text))
            except RegionError:
                continue  # this dataset lacks the reference (checked above: another has it)
        regions.sort(key=lambda r: (order.get(r.rname, len(order)), r.start, r.end))
        out.append(tuple(regions))
    return out


@dataclass(frozen=True)
class PlannedChunk:
    """A chunk object a scan reads, and the region intervals its rows must overlap.

    Attributes:
        dataset_url: The dataset prefix.
        sample: The dataset's sample name (the ``sample`` column).
        rname: The chunk's reference (``*`` for unplaced reads).
        info: The chunk's index entry (path, size, SHA-256, records, bounds).
        intervals: Region intervals (0-based half-open) a row must overlap,
            or None when every row of the chunk is inside the regions.
    """

    dataset_url: str
    sample: str
    rname: str
    info: ChunkInfo
    intervals: tuple[tuple[int, int], ...] | None = None

    @property
    def url(self) -> str:
        """The chunk object's URL."""
        return self.dataset_url.rstrip("/") + "/" + self.info.path


def _region_state(info: ChunkInfo, region: Region) -> bool | None:
    """Whether all (True), none (False) or some (None) records of a chunk overlap ``region``."""
    if region.unplaced or info.inside(region.start, region.end):
        return True
    return None if info.overlaps(region.start, region.end) else False


def plan_dataset(
    entry: DatasetEntry,
    storage_options: Mapping[str, Any],
    restricted: bool,
    keep_reference: Callable[[str], bool] = lambda _: True,
) -> list[PlannedChunk]:
    """The chunks of one dataset a scan reads, in ``samtools view`` order (FORMAT.md §6).

    Reads the manifest and the indexes of the references the regions name (all
    references without regions); a chunk outside every region is never listed.

    Args:
        entry: The validated dataset.
        storage_options: fsspec options.
        restricted: Whether the scan has regions (then a dataset without any of
            their references contributes nothing).
        keep_reference: Whether a reference is wanted at all (pushed filters on
            ``rname``); its index is not read otherwise.

    Raises:
        DatasetError: If the dataset changed since it was validated.
    """
    from bams3_spark.dataset.reader import DatasetReader

    ds = DatasetReader.open(entry.url, **storage_options)
    if ds.manifest.format_version != entry.format_version:
        raise DatasetError(f"{entry.url}: dataset replaced while the query was planned")
    by_ref: dict[str, list[Region]] = {}
    for region in entry.regions:
        by_ref.setdefault(region.rname, []).append(region)
    names = list(by_ref) if restricted else [e.name for e in ds.manifest.references if e.chunks]
    planned: list[PlannedChunk] = []
    for rname in names:
        if not keep_reference(rname):
            continue
        regions = by_ref.get(rname)
        for info in ds.index(rname).chunks:
            intervals: tuple[tuple[int, int], ...] | None = None
            if regions is not None:
                states = [_region_state(info, r) for r in regions]
                if all(s is False for s in states):
                    continue
                if not any(s is True for s in states):
                    intervals = tuple(
                        (r.start, r.end) for r, s in zip(regions, states, strict=True) if s is None
                    )
            planned.append(PlannedChunk(entry.url, entry.sample, rname, info, intervals))
    return planned


def plan_scan(scan: ScanConfig, datasets: Sequence[DatasetEntry] | None = None) -> list[PlannedChunk]:
    """The chunks of every dataset of ``scan`` (datasets in order), indexes read in parallel."""
    from bams3_spark.parallel import thread_map

    chosen = list(scan.datasets if datasets is None else datasets)
    if not chosen:
        return []
    restricted = bool(scan.region_texts)
    planned = thread_map(
        lambda e: plan_dataset(e, scan.storage_options, restricted),
        chosen,
        min(_METADATA_THREADS, len(chosen)),
        "bams3-plan",
    )
    return [c for chunks in planned for c in chunks]


def scan_options(
    paths: str | Sequence[str],
    region: str | None = None,
    regions: Sequence[str] | None = None,
    **options: Any,
) -> dict[str, str]:
    """Return the data source options (strings) for Python arguments.

    Args:
        paths: One dataset path/URL/glob or several.
        region: One samtools region.
        regions: Several regions.
        **options: Storage options (``endpoint_url``, ``anon``, ``profile``...)
            and ``batch_rows``; names are checked by :func:`resolve_scan`.
    """
    opts: dict[str, str] = {"paths": json.dumps([paths] if isinstance(paths, str) else list(paths))}
    if region is not None:
        opts["region"] = region
    if regions:
        opts["regions"] = json.dumps(list(regions))
    for key, value in options.items():
        if value is not None:
            opts[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return opts
