"""The ``bams3`` Spark data source: BAMS3 datasets as a DataFrame, one partition per chunk.

``spark.read.format("bams3").load(path)`` reads one dataset, a list of paths or
a glob of dataset prefixes (a cohort) with pyspark's Python Data Source API
(pyspark 4.0+; filter pushdown 4.1+). Importing this module needs pyspark 4.0:
``bams3_spark.spark.register`` says so in one line on 3.5, where
:func:`~bams3_spark.spark.read.read_bams3` is the way in (and the faster one
everywhere: it scans with Spark's own Parquet reader). Rows follow the record
schema of FORMAT.md ("Record schema", ``bams3_spark/format/schema.py``) plus a
``sample`` column.

How a query runs:

1. ``load()`` (driver): options are checked and every dataset's manifest is
   read (:func:`resolve_scan`), so a bad option, a path that is not a dataset,
   an incomplete dataset or mixed format versions fail here with one message.
2. Planning (driver, once per query): :meth:`Bams3Reader.pushFilters` keeps
   the filters it applies exactly; :meth:`Bams3Reader.partitions` plans the
   chunks with :func:`~bams3_spark.spark.scan.plan_dataset` (the planning
   ``read_bams3`` uses) and returns one :class:`ChunkPartition` per chunk
   object that can hold matching rows (region and filter pruning).
3. Tasks (executors): :meth:`Bams3Reader.read` reads only the columns the
   schema and the row filters need and yields ``pyarrow.RecordBatch`` es
   (:func:`~bams3_spark.spark.rows.chunk_batches`, shared with ``read_bams3``).

Readers, partitions and the source itself hold only picklable configuration
(URLs, chunk descriptions, storage options); clients are opened in ``read()``.
pyspark imports this module (through ``pyspark_bams3``) in every process where
it looks up data sources, so pyarrow, fsspec and the dataset modules are
imported where they are used.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
from pyspark.sql.types import StringType, StructType

from bams3_spark.exceptions import InvalidArgumentError
from bams3_spark.parallel import thread_map
from bams3_spark.spark.compat import has_filter_pushdown, require_data_source_api
from bams3_spark.spark.rows import chunk_batches
from bams3_spark.spark.scan import (
    SOURCE_NAME,
    DatasetEntry,
    PlannedChunk,
    ScanConfig,
    parse_bool,
    plan_dataset,
    resolve_scan,
)
from bams3_spark.spark.schema import SAMPLE_COLUMN, arrow_schema, bams3_schema

if TYPE_CHECKING:
    import pyarrow as pa

    from bams3_spark.format.manifest import ChunkInfo
    from bams3_spark.query.filter import Predicate

#: Manifests and indexes are small objects: the driver plans many datasets at once.
_PLAN_THREADS = 16

# ---------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------


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
# Filters
# ---------------------------------------------------------------------------

def _filter_ops() -> dict[type, str]:
    """Pushed filter classes to predicate operators (the classes exist in pyspark 4.1+ only)."""
    from pyspark.sql import datasource as ds

    return {
        ds.EqualTo: "eq",  # type: ignore[attr-defined]
        ds.EqualNullSafe: "eq",  # type: ignore[attr-defined]
        ds.GreaterThan: "gt",  # type: ignore[attr-defined]
        ds.GreaterThanOrEqual: "ge",  # type: ignore[attr-defined]
        ds.LessThan: "lt",  # type: ignore[attr-defined]
        ds.LessThanOrEqual: "le",  # type: ignore[attr-defined]
        ds.In: "in",  # type: ignore[attr-defined]
        ds.IsNull: "isnull",  # type: ignore[attr-defined]
        ds.IsNotNull: "isnotnull",  # type: ignore[attr-defined]
        ds.StringStartsWith: "startswith",  # type: ignore[attr-defined]
        ds.StringEndsWith: "endswith",  # type: ignore[attr-defined]
        ds.StringContains: "contains",  # type: ignore[attr-defined]
    }


def _predicate(flt: Any, columns: Mapping[str, str]) -> Predicate | None:
    """Translate a pushed filter, or return None if it cannot be applied exactly.

    Args:
        flt: The filter Spark pushed.
        columns: Output field name to column name.
    """
    from pyspark.sql.datasource import Not  # type: ignore[attr-defined]

    from bams3_spark.format.schema import INT_COLUMNS
    from bams3_spark.query.filter import INT64_MAX, INT64_MIN, STRING_ONLY_OPS, Predicate

    negated = False
    if isinstance(flt, Not):
        negated, flt = True, flt.child
    op = _filter_ops().get(type(flt))
    attribute = getattr(flt, "attribute", None)
    if op is None or not isinstance(attribute, tuple) or len(attribute) != 1:
        return None
    column = columns.get(attribute[0])
    if column is None:
        return None
    is_int = column in INT_COLUMNS
    if op in ("isnull", "isnotnull"):
        return Predicate(column, op, None, negated)
    if is_int and op in STRING_ONLY_OPS:
        return None
    value = getattr(flt, "value", None)
    values = tuple(value) if op == "in" and isinstance(value, list | tuple) else (value,)
    for v in values:
        if is_int:
            # bool is an int in Python; floats or huge literals mean Spark
            # compares in another type: leave those to Spark.
            if isinstance(v, bool) or not isinstance(v, int) or not INT64_MIN <= v <= INT64_MAX:
                return None
        elif not isinstance(v, str):
            return None
    return Predicate(column, op, values if op == "in" else value, negated)


# ---------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkPartition(InputPartition):
    """One Spark partition: one planned chunk, and the row filters it still needs.

    Attributes:
        chunk: The chunk object and the region intervals its rows must overlap.
        predicates: Pushed filters the index statistics could not decide.
    """

    chunk: PlannedChunk
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
        self._columns = _bind_schema(schema)
        self._arrow_schema = arrow_schema(schema)
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
        planned = thread_map(self._plan_dataset, datasets, min(_PLAN_THREADS, len(datasets)), "bams3-plan")
        return [p for parts in planned for p in parts]

    def _plan_dataset(self, entry: DatasetEntry) -> list[ChunkPartition]:
        assert self._scan is not None
        rname_preds = [p for p in self._predicates if p.column == "rname"]
        row_preds = [p for p in self._predicates if p.column not in ("rname", SAMPLE_COLUMN)]
        chunks = plan_dataset(
            entry,
            self._storage_options,
            bool(self._scan.region_texts),
            # the index of a reference the filters exclude is never read
            lambda rname: all(p.on_value(rname) for p in rname_preds),
        )
        parts: list[ChunkPartition] = []
        for chunk in chunks:
            pending: list[Predicate] = []
            keep = True
            for pred in row_preds:
                state = self._pred_state(pred, chunk.info)
                if state is False:
                    keep = False
                    break
                if state is None:
                    pending.append(pred)
            if keep:
                parts.append(ChunkPartition(chunk, tuple(pending)))
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
        yield from chunk_batches(
            partition.chunk, self._columns, self._arrow_schema, self._storage_options, self._batch_rows,
            partition.predicates,
        )


class Bams3Reader(Bams3ScanReader):
    """:class:`Bams3ScanReader` with filter pushdown (option ``pushdown=true``).

    Needs ``spark.sql.python.filterPushdown.enabled=true`` (set by
    :func:`register`); pyspark refuses to plan a reader with ``pushFilters``
    otherwise.

    **pyspark 4.1-4.3 caveat** (seen on 4.3.0). ``PythonDataSourceV2`` keeps the read plan of
    the last query that pushed filters and reuses it for a later query on
    the same DataFrame that pushes none (``df.filter(...).count()`` then
    ``df.count()`` returns the filtered count). Newer Spark keeps that plan
    per scan. So pushdown is opt-in, and :func:`load_bams3` adds an
    always-true filter (:func:`guard_filter`) to the DataFrame it returns:
    every query on it then pushes a filter, and is planned afresh.
    """

    def pushFilters(self, filters: list[Any]) -> Iterable[Any]:  # noqa: N802 - pyspark's name
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
            pred = _predicate(flt, self._field_columns)
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
        # pushFilters exists from pyspark 4.1; 4.0 would never call it.
        pushdown = scan.pushdown and has_filter_pushdown()
        return Bams3Reader(scan, schema) if pushdown else Bams3ScanReader(scan, schema)


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
    require_data_source_api()
    if spark in _REGISTERED:
        return
    if has_filter_pushdown():
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
    if pushdown is not None and parse_bool("pushdown", pushdown) and has_filter_pushdown():
        df = df.filter(guard_filter(schema))
    return df
