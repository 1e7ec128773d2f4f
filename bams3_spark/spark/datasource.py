"""The ``bams3`` Spark data source: BAMS3 datasets as a DataFrame, one partition per chunk.

``spark.read.format("bams3").load(path)`` reads one dataset, a list of paths or
a glob of dataset prefixes (a cohort) with pyspark's Python Data Source API
(pyspark 4.x). Rows follow the record schema of FORMAT.md ("Record schema",
``bams3_spark/format/schema.py``) plus a ``sample`` column.

How a query runs:

1. ``load()`` (driver): options are checked and every dataset's manifest is
   read (:func:`resolve_scan`), so a bad option, a path that is not a dataset,
   an incomplete dataset or mixed format versions fail here with one message.
2. Planning (driver, once per query): :meth:`Bams3Reader.pushFilters` keeps
   the filters it applies exactly; :meth:`Bams3Reader.partitions` reads the
   per-reference indexes it needs and returns one :class:`ChunkPartition` per
   chunk object that can hold matching rows (region and filter pruning).
3. Tasks (executors): :meth:`Bams3Reader.read` opens storage, reads only the
   columns the schema and the row filters need, filters rows and yields
   ``pyarrow.RecordBatch`` es.

Readers, partitions and the source itself hold only picklable configuration
(URLs, chunk descriptions, storage options); clients are opened in ``read()``.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyspark.sql.datasource import (
    DataSource,
    DataSourceReader,
    EqualNullSafe,
    EqualTo,
    Filter,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    InputPartition,
    IsNotNull,
    IsNull,
    LessThan,
    LessThanOrEqual,
    Not,
    StringContains,
    StringEndsWith,
    StringStartsWith,
)
from pyspark.sql.types import StringType, StructField, StructType

from bams3_spark.exceptions import DatasetError, InvalidArgumentError, NotADatasetError

if TYPE_CHECKING:
    import pyarrow as pa

    from bams3_spark.dataset import Dataset
    from bams3_spark.format.manifest import ChunkInfo
    from bams3_spark.format.regions import Region

#: The format name: ``spark.read.format(SOURCE_NAME)``.
SOURCE_NAME = "bams3"
#: The column added to the record schema: the dataset's sample name.
SAMPLE_COLUMN = "sample"

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


# ---------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------


def bams3_schema(columns: Sequence[str] | None = None) -> StructType:
    """Return the Spark schema of the data source, or of a projection of it.

    The record columns come from ``RECORD_SCHEMA`` (FORMAT.md, "Record schema")
    converted with pyspark's own Arrow mapping, followed by ``sample``.

    Args:
        columns: Column names to keep (record columns and/or ``sample``), in
            any order; None for every column. The result is in schema order.

    Raises:
        InvalidArgumentError: If a name is not a column.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    from bams3_spark.format.schema import RECORD_SCHEMA, subschema

    if columns is None:
        records, with_sample = None, True
    else:
        wanted = list(dict.fromkeys(columns))
        with_sample = SAMPLE_COLUMN in wanted
        records = [c for c in wanted if c != SAMPLE_COLUMN]
        if not wanted:
            raise InvalidArgumentError("bams3: empty column list")
    try:
        arrow = RECORD_SCHEMA if records is None else subschema(records)
    except ValueError as exc:
        raise InvalidArgumentError(f"bams3: {exc}, {SAMPLE_COLUMN}") from None
    schema = from_arrow_schema(arrow)
    if with_sample:
        schema = schema.add(StructField(SAMPLE_COLUMN, StringType(), nullable=False))
    return schema


def _bind_schema(schema: StructType) -> tuple[str, ...]:
    """Map each field of a (possibly user-given) schema to its column; check types.

    Spark resolves column names case-insensitively by default, so ``POS int``
    binds to ``pos``; the output keeps the user's spelling.
    """
    full = {f.name: f.dataType for f in bams3_schema().fields}
    canon: list[str] = []
    for field in schema.fields:
        name = field.name.lower()
        if name not in full:
            raise InvalidArgumentError(
                f"bams3 schema: unknown column {field.name!r}; columns are {', '.join(full)}"
            )
        if field.dataType != full[name]:
            raise InvalidArgumentError(
                f"bams3 schema: column {field.name!r} is {full[name].simpleString()}, "
                f"not {field.dataType.simpleString()}"
            )
        if name in canon:
            raise InvalidArgumentError(f"bams3 schema: column {field.name!r} appears twice")
        canon.append(name)
    if not canon:
        raise InvalidArgumentError("bams3 schema: no column")
    return tuple(canon)


# ---------------------------------------------------------------------------
# Options and datasets (driver side, at load() time)
# ---------------------------------------------------------------------------


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


def _parse_bool(name: str, text: str) -> bool:
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
            opts[name] = _parse_bool(name, raw)
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

    from bams3_spark.io import normalize_options, split_url

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
            raise OSError(f"{path}: cannot list ({str(exc).splitlines()[0] if str(exc) else exc!r})") from exc
        if not matches:
            raise NotADatasetError(f"{path}: no dataset matches this pattern")
        out += [m if protocol == "file" else f"{protocol}://{m}" for m in matches]
    return list(dict.fromkeys(out))


def parallel_map(fn: Any, items: Sequence[Any]) -> list[Any]:
    """Map ``fn`` over ``items`` with threads (I/O bound); the first error in order wins."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(_METADATA_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))


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
    from bams3_spark.dataset import open_dataset
    from bams3_spark.exceptions import RegionError

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
    pushdown = _parse_bool("pushdown", opts["pushdown"]) if opts.get("pushdown") is not None else False
    storage_options = _storage_options(opts)
    region_texts = _region_texts(opts)
    urls = expand_paths(_paths(opts), storage_options)
    datasets: list[Dataset] = parallel_map(lambda u: open_dataset(u, **storage_options), urls)

    entries: list[DatasetEntry] = []
    seen_urls: set[str] = set()
    for ds in datasets:
        if ds.url in seen_urls:  # the same dataset named twice (a glob and a path)
            continue
        seen_urls.add(ds.url)
        order = {e.name: i for i, e in enumerate(ds.manifest.references)}
        regions = []
        for text in region_texts:
            try:
                regions.append(ds.parse_region(text))
            except RegionError as exc:
                raise RegionError(f"{ds.url}: {exc}") from None
        regions.sort(key=lambda r: (order.get(r.rname, len(order)), r.start, r.end))
        entries.append(DatasetEntry(ds.url, ds.sample, ds.manifest.format_version, tuple(regions)))

    first = entries[0]
    for e in entries[1:]:
        if e.format_version != first.format_version:
            raise DatasetError(
                f"mixed BAMS3 format versions: {first.url} is {first.format_version}, "
                f"{e.url} is {e.format_version}; load them separately"
            )
    by_sample: dict[str, str] = {}
    for e in entries:
        if e.sample in by_sample:
            raise DatasetError(
                f"sample {e.sample!r} appears twice ({by_sample[e.sample]} and {e.url}): "
                "the sample column must identify the dataset; give each dataset its own SM"
            )
        by_sample[e.sample] = e.url
    return ScanConfig(tuple(entries), tuple(region_texts), storage_options, batch_rows, pushdown)


# ---------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------

_FILTER_OPS: dict[type, str] = {
    EqualTo: "eq",
    EqualNullSafe: "eq",
    GreaterThan: "gt",
    GreaterThanOrEqual: "ge",
    LessThan: "lt",
    LessThanOrEqual: "le",
    In: "in",
    IsNull: "isnull",
    IsNotNull: "isnotnull",
    StringStartsWith: "startswith",
    StringEndsWith: "endswith",
    StringContains: "contains",
}
_STRING_ONLY_OPS = frozenset({"startswith", "endswith", "contains"})
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


@dataclass(frozen=True)
class Predicate:
    """A pushed Spark filter on one column, applied exactly to rows.

    Every column is non-nullable, so ``NOT p`` is the exact complement of
    ``p`` and comparisons never yield NULL: evaluating the same comparison
    with Arrow compute gives exactly Spark's answer.

    Attributes:
        column: Column name (record column or ``sample``).
        op: ``eq``, ``gt``, ``ge``, ``lt``, ``le``, ``in``, ``isnull``,
            ``isnotnull``, ``startswith``, ``endswith`` or ``contains``.
        value: The literal (a tuple for ``in``; None for the null tests).
        negated: True for ``NOT (column op value)``.
    """

    column: str
    op: str
    value: Any = None
    negated: bool = False

    @staticmethod
    def from_filter(flt: Filter, columns: Mapping[str, str]) -> Predicate | None:
        """Translate a pushed filter, or return None if it cannot be applied exactly.

        Args:
            flt: The filter Spark pushed.
            columns: Output field name to column name.
        """
        from bams3_spark.format.schema import INT_COLUMNS

        negated = False
        if isinstance(flt, Not):
            negated, flt = True, flt.child
        op = _FILTER_OPS.get(type(flt))
        attribute = getattr(flt, "attribute", None)
        if op is None or not isinstance(attribute, tuple) or len(attribute) != 1:
            return None
        column = columns.get(attribute[0])
        if column is None:
            return None
        is_int = column in INT_COLUMNS
        if op in ("isnull", "isnotnull"):
            return Predicate(column, op, None, negated)
        if is_int and op in _STRING_ONLY_OPS:
            return None
        value = getattr(flt, "value", None)
        values = tuple(value) if op == "in" and isinstance(value, list | tuple) else (value,)
        for v in values:
            if is_int:
                # bool is an int in Python; floats or huge literals mean Spark
                # compares in another type: leave those to Spark.
                if isinstance(v, bool) or not isinstance(v, int) or not _INT64_MIN <= v <= _INT64_MAX:
                    return None
            elif not isinstance(v, str):
                return None
        return Predicate(column, op, values if op == "in" else value, negated)

    def mask(self, column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        """Return the boolean mask of the rows this predicate keeps."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from bams3_spark.format.schema import INT_COLUMNS

        op = self.op
        if op == "isnull":
            result = pc.is_null(column)
        elif op == "isnotnull":
            result = pc.is_valid(column)
        else:
            if self.column in INT_COLUMNS:
                # int64 so literals beyond int32 compare instead of overflowing.
                column = pc.cast(column, pa.int64())
                kind: pa.DataType = pa.int64()
            else:
                kind = pa.string()
            if op == "in":
                result = pc.is_in(column, value_set=pa.array(list(self.value), kind))
            elif op == "startswith":
                result = pc.starts_with(column, pattern=self.value)
            elif op == "endswith":
                result = pc.ends_with(column, pattern=self.value)
            elif op == "contains":
                result = pc.match_substring(column, pattern=self.value)
            else:
                fn = {"eq": pc.equal, "gt": pc.greater, "ge": pc.greater_equal,
                      "lt": pc.less, "le": pc.less_equal}[op]
                result = fn(column, pa.scalar(self.value, kind))
        return pc.invert(result) if self.negated else result

    def on_value(self, value: str | int) -> bool:
        """Evaluate on a constant column value (``rname`` of a chunk, ``sample`` of a dataset)."""
        import pyarrow as pa

        arr = pa.array([value], pa.string() if isinstance(value, str) else pa.int32())
        return bool(self.mask(arr)[0].as_py())

    def on_range(self, lo: int, hi: int) -> bool | None:
        """Evaluate on every value in ``[lo, hi]``: True/False if all rows agree, None if unknown."""
        v = self.value
        result: bool | None
        if self.op == "isnull":
            result = False
        elif self.op == "isnotnull":
            result = True
        elif self.op == "eq":
            result = False if v < lo or v > hi else (True if lo == hi == v else None)
        elif self.op == "gt":
            result = True if lo > v else (False if hi <= v else None)
        elif self.op == "ge":
            result = True if lo >= v else (False if hi < v else None)
        elif self.op == "lt":
            result = True if hi < v else (False if lo >= v else None)
        elif self.op == "le":
            result = True if hi <= v else (False if lo > v else None)
        elif self.op == "in":
            if all(x < lo or x > hi for x in v):
                result = False
            else:
                result = True if lo == hi and lo in v else None
        else:
            return None
        if result is None or not self.negated:
            return result
        return not result


def _region_state(info: ChunkInfo, region: Region) -> bool | None:
    """Whether all (True), none (False) or some (None) records of a chunk overlap ``region``.

    Index statistics bound every record: ``min_start <= pos <= max_start`` and
    ``pos <= end <= max_end`` (``end`` is never before ``pos``).
    """
    if region.unplaced:
        return True
    if info.min_start > region.end or info.max_end <= region.start:
        return False
    if info.min_start > region.start and info.max_start <= region.end:
        return True
    return None


# ---------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkPartition(InputPartition):
    """One Spark partition: one chunk object, and the row filters it still needs.

    Attributes:
        dataset_url: The dataset prefix.
        sample: The dataset's sample name (the ``sample`` column).
        rname: The chunk's reference (``*`` for unplaced reads).
        info: The chunk's index entry (path, size, SHA-256, records, bounds).
        intervals: Region intervals (0-based half-open) a row must overlap,
            or None when every row of the chunk is inside the regions.
        predicates: Pushed filters the index statistics could not decide.
    """

    dataset_url: str
    sample: str
    rname: str
    info: ChunkInfo
    intervals: tuple[tuple[int, int], ...] | None = None
    predicates: tuple[Predicate, ...] = ()


class Bams3ScanReader(DataSourceReader):
    """Reads chunk objects as Arrow batches; prunes by the region options.

    This reader does not implement ``pushFilters``: Spark applies every
    filter itself. It is the default (see :class:`Bams3Reader` for why), and
    it plans with Spark's default ``spark.sql.python.filterPushdown.enabled=false``.

    Args:
        scan: The validated scan configuration.
        schema: The output schema (the source's, or a user-given projection).
    """

    def __init__(self, scan: ScanConfig, schema: StructType) -> None:
        from pyspark.sql.pandas.types import to_arrow_schema

        self._columns = _bind_schema(schema)
        self._arrow_schema = to_arrow_schema(schema, timezone="UTC")
        self._storage_options = dict(scan.storage_options)
        self._batch_rows = scan.batch_rows
        self._field_columns = {f.name: c for f, c in zip(schema.fields, self._columns, strict=True)}
        self._predicates: list[Predicate] = []
        self._scan: ScanConfig | None = scan

    def __getstate__(self) -> dict[str, Any]:
        # The reader is pickled into every task's read function; the dataset
        # list (planning only) can be large for a cohort, so it stays behind.
        state = self.__dict__.copy()
        state["_scan"] = None
        return state

    # -- planning (driver) --------------------------------------------------

    def partitions(self) -> list[InputPartition]:
        """Return one partition per chunk object that may hold matching rows.

        Datasets come in load order; within a dataset, references in header
        order (unplaced reads last), chunks in window and part order: the
        order of ``samtools view`` (with ``-M`` for several regions).
        """
        if self._scan is None:
            raise RuntimeError("bams3 reader: partitions() called after pickling")
        sample_preds = [p for p in self._predicates if p.column == SAMPLE_COLUMN]
        datasets = [d for d in self._scan.datasets if all(p.on_value(d.sample) for p in sample_preds)]
        planned = parallel_map(self._plan_dataset, datasets)
        return [p for parts in planned for p in parts]

    def _plan_dataset(self, entry: DatasetEntry) -> list[ChunkPartition]:
        from bams3_spark.dataset import open_dataset

        ds = open_dataset(entry.url, **self._storage_options)
        if ds.manifest.format_version != entry.format_version:
            raise DatasetError(f"{entry.url}: dataset replaced while the query was planned")
        rname_preds = [p for p in self._predicates if p.column == "rname"]
        row_preds = [p for p in self._predicates if p.column not in ("rname", SAMPLE_COLUMN)]
        by_ref: dict[str, list[Region]] = {}
        for region in entry.regions:
            by_ref.setdefault(region.rname, []).append(region)
        names = list(by_ref) if entry.regions else [e.name for e in ds.manifest.references if e.chunks]
        parts: list[ChunkPartition] = []
        for rname in names:
            if not all(p.on_value(rname) for p in rname_preds):
                continue  # the index of a reference the filters exclude is never read
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
                pending: list[Predicate] = []
                keep = True
                for pred in row_preds:
                    state = self._pred_state(pred, info)
                    if state is False:
                        keep = False
                        break
                    if state is None:
                        pending.append(pred)
                if keep:
                    parts.append(
                        ChunkPartition(entry.url, entry.sample, rname, info, intervals, tuple(pending))
                    )
        return parts

    @staticmethod
    def _pred_state(pred: Predicate, info: ChunkInfo) -> bool | None:
        if pred.column == "pos":
            return pred.on_range(info.min_start, info.max_start)
        if pred.column == "end":
            return pred.on_range(info.min_start, info.max_end)
        if pred.op in ("isnull", "isnotnull"):
            return pred.on_range(0, 0)
        return None

    # -- tasks (executors) --------------------------------------------------

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        """Yield the partition's matching rows as Arrow batches of the output schema."""
        if not isinstance(partition, ChunkPartition):
            return  # pyspark's placeholder partition when nothing matched
        import pyarrow as pa
        import pyarrow.compute as pc

        from bams3_spark.dataset import ChunkRef
        from bams3_spark.format.schema import COLUMNS
        from bams3_spark.io import shared_storage

        needed = {c for c in self._columns if c != SAMPLE_COLUMN}
        needed |= {p.column for p in partition.predicates}
        if partition.intervals is not None:
            needed |= {"pos", "end"}
        table: pa.Table | None = None
        if needed:
            storage = shared_storage(partition.dataset_url, **self._storage_options)
            chunk = ChunkRef(storage, partition.rname, partition.info)
            table = chunk.read([c for c in COLUMNS if c in needed])
            mask = None
            for pred in partition.predicates:
                m = pred.mask(table.column(pred.column))
                mask = m if mask is None else pc.and_(mask, m)
            if partition.intervals is not None:
                pos, end = table.column("pos"), table.column("end")
                inside = None
                for start, stop in partition.intervals:
                    m = pc.and_(pc.less_equal(pos, stop), pc.greater(end, start))
                    inside = m if inside is None else pc.or_(inside, m)
                mask = inside if mask is None else pc.and_(mask, inside)
            if mask is not None:
                table = table.filter(mask)
            rows = table.num_rows
        else:
            # Only the sample column, and every row matches: the index's
            # record count (checked against the manifest) is the answer.
            rows = partition.info.records
        if rows == 0:
            return
        arrays = []
        for name in self._columns:
            if name == SAMPLE_COLUMN:
                arrays.append(pa.chunked_array([pa.repeat(pa.scalar(partition.sample, pa.string()), rows)]))
            else:
                assert table is not None
                arrays.append(table.column(name))
        out = pa.Table.from_arrays(arrays, schema=self._arrow_schema)
        yield from out.to_batches(max_chunksize=self._batch_rows)


class Bams3Reader(Bams3ScanReader):
    """:class:`Bams3ScanReader` with filter pushdown (option ``pushdown=true``).

    Needs ``spark.sql.python.filterPushdown.enabled=true`` (set by
    :func:`register`); pyspark refuses to plan a reader with ``pushFilters``
    otherwise.

    **pyspark 4.1-4.3 caveat** (seen on 4.3.0). ``PythonDataSourceV2`` keeps the read plan of
    the last query that pushed filters and reuses it for a later query on
    the same DataFrame that pushes none (``df.filter(...).count()`` then
    ``df.count()`` returns the filtered count). Newer Spark keeps that plan
    per scan. So pushdown is opt-in, and :func:`load_bams3` /
    :func:`read_bams3` add an always-true filter (:func:`guard_filter`) to the
    DataFrame they return: every query on it then pushes a filter, and is
    planned afresh.
    """

    def pushFilters(self, filters: list[Filter]) -> Iterable[Filter]:  # noqa: N802 - pyspark's name
        """Keep the filters applied exactly (to chunks and rows); return the others.

        Kept: comparisons (=, <=>, <, <=, >, >=, IN, and their NOT) with an
        integer literal on an integer column or a string literal on a string
        column, IS [NOT] NULL, and LIKE prefix/suffix/substring on string
        columns. ``rname`` and ``sample`` filters prune references and
        datasets; ``pos``/``end`` filters prune chunks by the index; every
        kept filter is also applied to rows. Everything else (OR, casts,
        float literals...) is returned and Spark applies it.
        """
        for flt in filters:
            pred = Predicate.from_filter(flt, self._field_columns)
            if pred is None:
                yield flt
            else:
                self._predicates.append(pred)


# ---------------------------------------------------------------------------
# Data source
# ---------------------------------------------------------------------------


class Bams3DataSource(DataSource):
    """The ``bams3`` data source (``spark.read.format("bams3")``).

    Options (case-insensitive):

    - ``path`` / ``paths``: dataset prefixes (``.load(path)``, ``.load([paths])``),
      local paths or URLs; glob patterns select many datasets (a cohort).
    - ``region``: one samtools region (``chr17:43044295-43125364``, ``{HLA-A*01:01}:5-9``, ``*``).
    - ``regions``: several, as a JSON array or whitespace-separated.
    - ``pushdown``: ``true`` to let the source apply Spark filters (see
      :class:`Bams3Reader`); default ``false``.
    - ``batch_rows``: rows per Arrow batch handed to Spark (default 32768).
    - storage: ``endpoint_url`` (or ``s3_endpoint``), ``anon``, ``profile``,
      ``key``, ``secret``, ``token``, ``requester_pays``.

    See ``docs/sections/spark.md`` for the schema, pruning and pushdown.
    """

    # Set by schema() at load() time and carried to the planner in the pickled
    # instance, so the datasets are validated once, on the driver.
    _scan: ScanConfig | None = None

    @classmethod
    def name(cls) -> str:
        """The format name, ``bams3``."""
        return SOURCE_NAME

    def schema(self) -> StructType:
        """Validate the options and datasets, and return the full schema.

        Spark calls this at ``load()`` when no schema is given by the user.
        """
        self._scan = resolve_scan(self.options)
        return bams3_schema()

    def reader(self, schema: StructType) -> DataSourceReader:
        """Return a reader for ``schema``, with filter pushdown if the ``pushdown`` option is set."""
        # A user schema skips schema(): validate now, at planning (driver).
        # Popping keeps the dataset list out of the copy of this instance that
        # pyspark pickles into every task's read function.
        scan = self.__dict__.pop("_scan", None) or resolve_scan(self.options)
        return Bams3Reader(scan, schema) if scan.pushdown else Bams3ScanReader(scan, schema)


# ---------------------------------------------------------------------------
# Registration and helpers
# ---------------------------------------------------------------------------

_REGISTERED: weakref.WeakSet[Any] = weakref.WeakSet()


def register(spark: Any) -> None:
    """Register the ``bams3`` data source on a SparkSession (idempotent).

    Also enables ``spark.sql.python.filterPushdown.enabled``, which the
    ``pushdown`` option needs. Works with classic and Connect sessions; a
    source found by pyspark's automatic lookup (module ``pyspark_bams3``) is
    replaced by the same class.

    Args:
        spark: The SparkSession.
    """
    if spark in _REGISTERED:
        return
    spark.conf.set("spark.sql.python.filterPushdown.enabled", "true")
    if not _statically_registered(spark):
        try:
            spark.dataSource.register(Bams3DataSource)
        except Exception as exc:
            if "DATA_SOURCE_ALREADY_EXISTS" not in str(exc):
                raise
    _REGISTERED.add(spark)


def _statically_registered(spark: Any) -> bool:
    """Whether the JVM already knows ``bams3`` (found by automatic lookup); False if unknown.

    Registering over the looked-up class (the same one) only logs a warning.
    """
    try:
        manager = spark._jsparkSession.sessionState().dataSourceManager()
        return bool(manager.dataSourceExists(SOURCE_NAME))
    except Exception:  # noqa: BLE001 - Spark Connect or internals changed: just register
        return False


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


def guard_filter(schema: StructType) -> Any:
    """Return an always-true filter on ``schema`` that the source pushes and applies for free.

    Added by :func:`load_bams3` when pushdown is on, so that every query on
    the DataFrame pushes at least one filter (see :class:`Bams3Reader`):
    ``sample >= ''`` is decided per dataset, ``pos >= 0``/``end >= 0`` per
    chunk by the index; other columns are compared per row.
    """
    from pyspark.sql import functions as F

    fields = {f.name.lower(): f.name for f in schema.fields}
    for column, literal in ((SAMPLE_COLUMN, ""), ("pos", 0), ("end", 0)):
        if column in fields:
            return F.col(fields[column]) >= F.lit(literal)
    first = schema.fields[0]
    literal = "" if isinstance(first.dataType, StringType) else -((1 << 31) - 1)
    return F.col(first.name) >= F.lit(literal)


def load_bams3(spark: Any, options: Mapping[str, str], columns: Sequence[str] | None = None) -> Any:
    """Load with data source options as they are (see :func:`scan_options`), no validation here.

    With ``pushdown`` set, the DataFrame carries :func:`guard_filter`.

    Args:
        spark: The SparkSession (:func:`register` is called on it).
        options: Data source options.
        columns: Columns to read (a projected schema); None for all.

    Returns:
        The DataFrame.
    """
    register(spark)
    schema = bams3_schema(columns)
    reader = spark.read.format(SOURCE_NAME).options(**options)
    if columns is not None:
        reader = reader.schema(schema)
    df = reader.load()
    pushdown = {k.lower(): v for k, v in options.items()}.get("pushdown")
    if pushdown is not None and _parse_bool("pushdown", pushdown):
        df = df.filter(guard_filter(schema))
    return df


def read_bams3(
    spark: Any,
    paths: str | Sequence[str],
    columns: Sequence[str] | None = None,
    region: str | None = None,
    regions: Sequence[str] | None = None,
    pushdown: bool = True,
    **storage_options: Any,
) -> Any:
    """Load BAMS3 datasets as a DataFrame, validating everything first.

    Like ``spark.read.format("bams3")[.schema(...)].options(...).load(paths)``,
    but the options and datasets are checked here, in this process, so a bad
    input raises a plain :class:`~bams3_spark.exceptions.Bams3Error` (or
    ``OSError``) instead of a Spark analysis error; and filter pushdown is on,
    made safe by :func:`guard_filter`.

    Args:
        spark: The SparkSession (:func:`register` is called on it).
        paths: Dataset path(s), URL(s) or glob(s).
        columns: Columns to read (record columns and ``sample``); None for all.
            This is how to read fewer columns: the projection becomes the
            scan's schema, and chunks are read with only those columns.
        region: A samtools region.
        regions: Several samtools regions (records overlapping any of them).
        pushdown: Let the source prune chunks and rows with Spark's filters.
        **storage_options: ``endpoint_url``, ``anon``, ``profile``...

    Returns:
        A DataFrame with the record columns (or ``columns``) and ``sample``.
    """
    options = scan_options(paths, region, regions, pushdown=pushdown, **storage_options)
    if columns is not None:
        bams3_schema(columns)  # a bad column list fails here, not at the first action
    resolve_scan(options)
    return load_bams3(spark, options, columns)
