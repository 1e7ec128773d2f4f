"""Distributed genotyping: allele counts at sites across a cohort with Spark (``jobs/genotype.py``).

:func:`genotype_dataframe` returns the table of the local engine
(:func:`bams3_spark.genotype.engine.genotype_table`) as a DataFrame, row for
row; :func:`run_genotype` writes it as Parquet or TSV partitioned by sample,
or as one multi-sample bgzipped, tabix-indexed VCF.

How the work is split (Spark 3.5 to 4.x: only ``sc.parallelize``,
``mapInArrow`` and ``applyInPandas``):

1. **Plan, one task per sample.** Each task opens its dataset (manifest and
   the indexes of the references with sites) and cuts its sites into units:
   groups of sites and the chunk objects holding their reads
   (:func:`~bams3_spark.genotype.engine.plan_units`). The sites travel as a
   broadcast; the driver reads only the sites file and the first manifest.
2. **Count, one task per few units.** Each unit reads only its chunks, only
   the counting's columns, and runs the local engine, so counts are those of
   ``bams3 genotype``. No record becomes a Spark row: only counts leave.
3. **VCF, one group per block of sites.** Counts are grouped by blocks of
   consecutive sites (``applyInPandas``); each group writes its VCF lines for
   every sample as a BGZF part. The driver streams the parts in site order
   into one file (BGZF members concatenate), adds the end block and indexes
   it: it holds one compressed part at a time, never per-read data.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bams3_spark.exceptions import InvalidArgumentError
from bams3_spark.genotype.engine import SCHEMA, Unit, load_sites
from bams3_spark.genotype.options import GenotypeOptions

if TYPE_CHECKING:
    import pyarrow as pa

    from bams3_spark.genotype.sites import Sites

#: Output formats of :func:`run_genotype`.
FORMATS = ("parquet", "tsv", "vcf")
#: Site-by-sample cells per VCF block (one reduce group).
VCF_BLOCK_CELLS = 200_000

_UNIT_SCHEMA = "sidx int, sample string, lo long, hi long, unit binary"


@dataclass
class GenotypeResult:
    """What a genotyping job did: where, warnings (sites past a reference's end) and its costs.

    Attributes:
        out: The output (directory, or the ``.vcf.gz`` file).
        format: ``parquet``, ``tsv`` or ``vcf``.
        warnings: One line per sites file problem that did not stop the job.
        costs: A :class:`~bams3_spark.spark.costs.JobCosts`: units counted, chunk
            objects, GET requests and bytes the executors read (planning included).
    """

    out: str
    format: str
    warnings: list[str] = field(default_factory=list)
    costs: Any = None


def _spark_schema() -> str:
    import pyarrow as pa

    cols = ", ".join(f"`{f.name}` {'string' if pa.types.is_string(f.type) else 'int'}" for f in SCHEMA)
    return f"sidx int, idx long, {cols}"


def _plan(sites_bc: Any, storage_options: Mapping[str, Any], acc: Any) -> Any:
    """Planning (executors): each item is (dataset index, URL, sample); yields its units.

    The dataset is read through a counting storage; its manifest and index
    reads go to ``acc`` here, and the units carry the storage to the counting
    tasks, which add what they read.
    """

    def run(item: tuple[int, str, str]) -> Iterator[tuple[Any, ...]]:
        from bams3_spark.genotype.engine import plan_units
        from bams3_spark.spark import cohort

        sidx, url, sample = item
        ds = cohort.open_counted(cohort.Unit(sample, url, sidx), storage_options)
        sites = sites_bc.value
        sites.check_references(dict(ds.lengths), ds.url)  # unknown references fail here
        units = plan_units(ds, sites)
        acc.add([0, *cohort.unit_costs(ds, 0)[1:]])
        if not units:
            yield (sidx, ds.sample, 0, 0, None)
        for u in units:
            yield (sidx, ds.sample, u.lo, u.hi, pickle.dumps(u))

    return run


def _count(sites_bc: Any, options: GenotypeOptions, acc: Any) -> Any:
    """Counting (executors): each row is one unit; yields its rows of counts and adds its costs to ``acc``."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import numpy as np
        import pyarrow as pa

        from bams3_spark.genotype.engine import count_positions, counts_table, read_unit_records

        sites = sites_bc.value
        chroms = sites.chrom_of()
        for batch in batches:
            for row in batch.to_pylist():
                if row["unit"] is None:
                    continue
                unit: Unit = pickle.loads(row["unit"])
                lo, hi = unit.lo, unit.hi
                st: Any = unit.ds.storage  # the planning's counting storage, with its figures then
                before = (st.requests, st.bytes_read)
                table = read_unit_records(unit, options.columns)
                acc.add([1, len(unit.chunks), st.requests - before[0], st.bytes_read - before[1]])
                counts = count_positions(table, sites.pos[lo:hi], options, unit.rname, unit.ds.url)
                t = counts_table(row["sample"], chroms[lo:hi], sites.pos[lo:hi], counts)
                t = t.add_column(0, "idx", pa.array(np.arange(lo, hi, dtype=np.int64)))
                t = t.add_column(0, "sidx", pa.array([row["sidx"]] * (hi - lo), pa.int32()))
                yield from t.to_batches()

    return run


@dataclass
class _Prepared:
    counts: Any  # DataFrame of counts (sidx, idx, SCHEMA)
    samples: list[str]
    sites: Sites
    first: Any  # the first dataset (its header makes the VCF's)
    warnings: list[str]
    costs: Any  # JobCosts, filled from ``acc`` once the counts are written
    acc: Any


def _prepare(
    spark: Any, paths: Sequence[str], sites: str | Sites, options: GenotypeOptions,
    storage_options: Mapping[str, Any], manifest: str | None = None,
) -> _Prepared:
    from bams3_spark.dataset.reader import DatasetReader
    from bams3_spark.spark.cohort import resolve_cohort
    from bams3_spark.spark.costs import JobCosts, accumulator, logger

    sc = spark.sparkContext
    t0 = time.monotonic()
    cores = max(1, int(sc.defaultParallelism))
    # Paths, URLs, globs and --manifest; manifests read, duplicate samples refused (one line).
    cohort = resolve_cohort(list(paths), manifest, storage_options, parallelism=cores)
    st = load_sites(sites, storage_options)
    first = DatasetReader.open(cohort.samples[0].url, **storage_options)
    warns = st.check_references(dict(first.lengths), first.url)  # fail early on a bad sites file
    sites_bc = sc.broadcast(st)
    acc = accumulator(spark)
    items = [(s.index, s.url, s.sample) for s in cohort.samples]
    planned = sc.parallelize(items, max(1, min(len(items), 4 * cores)))
    units = spark.createDataFrame(planned.flatMap(_plan(sites_bc, dict(storage_options), acc)), _UNIT_SCHEMA)
    units = units.localCheckpoint(eager=True)  # planned once: its reads are counted once
    n_units = units.count()
    parts = max(1, min(n_units, 4 * cores))
    costs = JobCosts(samples=len(cohort), tasks=parts, planning_seconds=time.monotonic() - t0)
    logger.info(f"plan: {len(cohort):,} sample(s), {len(st):,} site(s), {n_units:,} unit(s) "
                f"in {parts:,} task(s); planned in {costs.planning_seconds:.2f} s")
    counts = units.repartition(parts).mapInArrow(_count(sites_bc, options, acc), _spark_schema())
    return _Prepared(counts, cohort.names, st, first, warns, costs, acc)


def genotype_dataframe(
    spark: Any,
    paths: str | Sequence[str],
    sites: str | Sites,
    options: GenotypeOptions | None = None,
    *,
    manifest: str | None = None,
    **storage_options: Any,
) -> Any:
    """Allele counts of one or many datasets at sites, as a DataFrame.

    The columns and rows (datasets in order, then sites in file order) of
    :func:`bams3_spark.genotype.engine.genotype_table`. ``paths`` may hold
    URLs and quoted globs; ``manifest`` is a sample sheet
    (:func:`bams3_spark.spark.cohort.parse_sample_sheet`).
    """
    opts = options or GenotypeOptions()
    prep = _prepare(spark, [paths] if isinstance(paths, str) else list(paths), sites, opts, storage_options,
                    manifest)
    return prep.counts.orderBy("sidx", "idx").select(*SCHEMA.names)


def _vcf_block(sites_bc: Any, samples: list[str]) -> Any:
    """VCF lines of one block of sites, every sample, as a BGZF part (executors)."""

    def run(df: Any) -> Any:
        import numpy as np
        import pandas as pd

        from bams3_spark.genotype.engine import COUNT_COLUMNS
        from bams3_spark.genotype.output import bgzf_bytes, vcf_lines

        sites = sites_bc.value
        lo, hi = int(df["idx"].min()), int(df["idx"].max()) + 1
        n = hi - lo
        counts = []
        for s in range(len(samples)):
            c = np.zeros((n, len(COUNT_COLUMNS), 2), dtype=np.int64)
            rows = df[df["sidx"] == s]
            at = rows["idx"].to_numpy() - lo
            for k, name in enumerate(COUNT_COLUMNS):
                c[at, k, 0] = rows[f"{name}_fwd"].to_numpy()
                c[at, k, 1] = rows[f"{name}_rev"].to_numpy()
            counts.append(c)
        chroms = sites.chrom_of()
        text = vcf_lines(chroms, sites, lo, hi, counts)
        return pd.DataFrame({"block": [int(df["block"].iloc[0])], "part": [bgzf_bytes(text)]})

    return run


def _write_vcf(spark: Any, counts: Any, samples: list[str], sites: Sites, first: Any, out: str,
               storage_options: Mapping[str, Any]) -> None:
    from pyspark.sql import functions as F  # noqa: N812 - Spark's convention

    from bams3_spark.genotype.output import bgzf_bytes, index_vcf, vcf_header
    from bams3_spark.io.bgzf import EOF_BLOCK
    from bams3_spark.io.storage import Storage, replacing

    block = max(1, VCF_BLOCK_CELLS // max(1, len(samples)))
    sites_bc = spark.sparkContext.broadcast(sites)
    parts = (
        counts.withColumn("block", (F.col("idx") / F.lit(block)).cast("long"))
        .groupBy("block")
        .applyInPandas(_vcf_block(sites_bc, samples), "block long, part binary")
        .orderBy("block")
    )
    remote = "://" in out and not out.startswith("file://")
    local = tempfile.mkdtemp(prefix="bams3-vcf-") if remote else None
    path = os.path.join(local, "out.vcf.gz") if local else out.removeprefix("file://")
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        fh.write(bgzf_bytes(vcf_header(first.references, samples)))
        for row in parts.toLocalIterator():
            fh.write(bytes(row["part"]))
        fh.write(EOF_BLOCK)
    index_vcf(path)
    if local:
        parent, name = out.rstrip("/").rsplit("/", 1)
        dest = Storage(parent, **storage_options)
        with open(path, "rb") as f:
            dest.write_bytes(name, f.read())
        with open(path + ".tbi", "rb") as f:
            dest.write_bytes(name + ".tbi", f.read())


def run_genotype(
    spark: Any,
    paths: Sequence[str],
    sites: str | Sites,
    out: str,
    *,
    fmt: str = "parquet",
    options: GenotypeOptions | None = None,
    overwrite: bool = False,
    manifest: str | None = None,
    **storage_options: Any,
) -> GenotypeResult:
    """Count alleles of datasets at sites and write them to ``out``.

    Formats:

    - ``parquet``: ``out/sample=NAME/part-*.parquet``, the columns of
      :func:`genotype_dataframe` but ``sample``, sites in file order (Spark
      escapes characters such as ``:`` in NAME: ``%3A``).
    - ``tsv``: the same as tab-separated text with a header line per file.
    - ``vcf``: one bgzipped multi-sample VCF at ``out`` (and ``out.tbi``),
      FORMAT ``DP:AD``, samples in dataset order, sites in file order, as
      ``bams3 genotype -o out.vcf.gz`` writes it.

    Returns:
        Where and what was written, the sites file's warnings (sites past a
        reference's end), and the job's costs (units, chunk objects, GET
        requests, bytes fetched; each counting unit is counted once, unless
        Spark retries its task).

    Raises:
        InvalidArgumentError: For an unknown format.
        FileExistsError: If ``out`` exists and ``overwrite`` is False.
        SitesError, Bams3Error, OSError: For a bad sites file, datasets or storage.
    """
    from bams3_spark.io.storage import Storage
    from bams3_spark.spark.costs import add_costs

    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown format {fmt!r}; formats are {', '.join(FORMATS)}")
    if not overwrite and Storage(out, **storage_options).exists():
        raise FileExistsError(f"{out}: already exists (use --overwrite to replace it)")
    opts = options or GenotypeOptions()
    prep = _prepare(spark, list(paths), sites, opts, storage_options, manifest)
    if fmt == "vcf":
        _write_vcf(spark, prep.counts, prep.samples, prep.sites, prep.first, out, storage_options)
    else:
        mode = "overwrite" if overwrite else "errorifexists"
        n = max(1, min(len(prep.samples), 4 * int(spark.sparkContext.defaultParallelism)))
        frame = prep.counts.repartition(n, "sample").sortWithinPartitions("sample", "idx")
        frame = frame.select(*SCHEMA.names)
        writer = frame.write.mode(mode).partitionBy("sample")
        if fmt == "tsv":
            writer.option("sep", "\t").option("header", True).csv(out)
        else:
            writer.parquet(out)
    return GenotypeResult(out, fmt, prep.warnings, add_costs(prep.costs, prep.acc.value))


__all__ = ["FORMATS", "GenotypeResult", "genotype_dataframe", "run_genotype"]
