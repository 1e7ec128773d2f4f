"""What the coverage job's tasks do on the executors: the local engine, one unit at a time.

A unit (:class:`~bams3_spark.spark.cohort.Unit`) is a whole sample, one
reference of it, or a run of consecutive chunks of one reference.

* :func:`unit_rows`: a sample or a reference is counted exactly as
  ``bams3 coverage`` counts it (:func:`~bams3_spark.coverage.slices.compute_slice`
  per reference, in header order) and leaves as finished rows.
* :func:`run_partial`: a run of chunks is counted alone
  (:func:`~bams3_spark.coverage.chunked.chunk_partial`): its depth
  contribution as runs of equal value, and its mate state (the names it
  leaves stored, the first rows of its names), a few rows per run.
* :func:`reduce_reference`: the runs of one (sample, reference), grouped on
  an executor: contributions added, mate overlaps across run boundaries
  resolved (:func:`~bams3_spark.coverage.chunked.mate_corrections`), finished
  rows out. Mate state never crosses a task boundary any other way.
* :func:`sample_files`: a sample's mosdepth files, written by
  :func:`~bams3_spark.coverage.engine.write_coverage` and moved into the
  output directory.

Each unit reads through a :class:`~bams3_spark.io.storage.CountingStorage`
and reports (units, chunk objects, requests, bytes) for the job's summary.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from bams3_spark.coverage.options import CoverageOptions, required_columns

if TYPE_CHECKING:
    from bams3_spark.spark.cohort import Unit

#: Output columns of finished rows, before the value column.
ROW_FIELDS = [("sample", pa.string()), ("sidx", pa.int32()), ("tid", pa.int32()), ("rname", pa.string()),
              ("start", pa.int32()), ("end", pa.int32())]
#: Rows of :func:`run_partial`.
PARTIAL_SCHEMA = pa.schema([
    ("sample", pa.string()), ("sidx", pa.int32()), ("tid", pa.int32()), ("rname", pa.string()),
    ("length", pa.int64()), ("part", pa.int32()), ("run_starts", pa.binary()), ("run_values", pa.binary()),
    ("run_end", pa.int64()), ("pending", pa.binary()), ("groups", pa.binary()),
])


@dataclass(frozen=True)
class CoverageSpec:
    """What every task of one coverage job computes (pickled to the executors).

    Attributes:
        options: Counting options.
        by: Window size, or None for per-base runs.
        storage_options: fsspec options for the datasets (and the output).
        out: Output directory (``mosdepth`` format), else None.
        per_base: Write the per-base file (``mosdepth`` format).
        thresholds: ``--thresholds`` (``mosdepth`` format).
    """

    options: CoverageOptions
    by: int | None
    storage_options: Mapping[str, Any]
    out: str | None = None
    per_base: bool = True
    thresholds: tuple[int, ...] = ()


def row_schema(by: int | None) -> pa.Schema:
    """Schema of finished rows: per-base runs (``depth``) or window means (``mean_depth``)."""
    value = ("mean_depth", pa.float64()) if by is not None else ("depth", pa.int32())
    return pa.schema([*ROW_FIELDS, value])


def _rows(table: pa.Table, sidx: int, tid: int, by: int | None) -> pa.RecordBatch:
    n = table.num_rows
    value = "mean_depth" if by is not None else "depth"
    arrays = [
        table.column("sample"), pa.array(np.full(n, sidx, np.int32)), pa.array(np.full(n, tid, np.int32)),
        table.column("rname"), table.column("start"), table.column("end"), table.column(value),
    ]
    return pa.Table.from_arrays(arrays, schema=row_schema(by)).combine_chunks().to_batches()[0]


def unit_rows(unit: Unit, spec: CoverageSpec) -> tuple[list[pa.RecordBatch], list[int]]:
    """Finished rows of a whole sample or one reference (the local engine's), and the unit's costs."""
    from bams3_spark.coverage.slices import compute_slice, slice_table
    from bams3_spark.spark.cohort import open_counted, unit_costs

    ds = open_counted(unit, spec.storage_options)
    refs = list(enumerate(ds.references))
    if unit.rname is not None:
        refs = [(unit.tid, (unit.rname, ds.lengths[unit.rname]))]
    batches: list[pa.RecordBatch] = []
    chunks = 0
    for tid, (name, _) in refs:
        sl = compute_slice(ds, name, spec.options)
        chunks += ds.reference_entry(name).chunks
        table = slice_table(sl, spec.by)
        if table.num_rows:
            batches.append(_rows(table, unit.index, tid, spec.by))
    return batches, unit_costs(ds, chunks)


def _runs_of(values: np.ndarray, offset: int) -> tuple[bytes, bytes]:
    """Runs of equal value of a depth contribution: (absolute starts, values) as int32 bytes."""
    if len(values) == 0:
        return b"", b""
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate(([0], change))
    return (starts + offset).astype(np.int32).tobytes(), values[starts].astype(np.int32).tobytes()


def run_partial(unit: Unit, spec: CoverageSpec) -> tuple[pa.RecordBatch, list[int]]:
    """One run of chunks of a reference, counted alone: its contribution and its mate state."""
    from bams3_spark.coverage.chunked import chunk_partial, table_to_ipc
    from bams3_spark.coverage.slices import read_ahead_tables
    from bams3_spark.dataset.chunks import ChunkRef
    from bams3_spark.spark.cohort import open_counted, unit_costs

    assert unit.rname is not None
    ds = open_counted(unit, spec.storage_options)
    length = ds.lengths[unit.rname]
    infos = ds.index(unit.rname).chunks[unit.first : unit.last]
    chunks = [ChunkRef(ds.storage, unit.rname, info) for info in infos]
    tables = list(read_ahead_tables(chunks, required_columns(spec.options)))
    table = pa.concat_tables(tables) if tables else pa.table({})
    partial = chunk_partial(table, unit.rname, length, spec.options)
    starts, values = _runs_of(partial.contribution, partial.offset)
    row = {
        "sample": [unit.sample], "sidx": [unit.index], "tid": [unit.tid], "rname": [unit.rname],
        "length": [length], "part": [unit.part], "run_starts": [starts], "run_values": [values],
        "run_end": [partial.offset + len(partial.contribution)],
        "pending": [table_to_ipc(partial.pending)], "groups": [table_to_ipc(partial.groups)],
    }
    batch = pa.RecordBatch.from_pydict(row, schema=PARTIAL_SCHEMA)
    return batch, unit_costs(ds, len(chunks))


def reduce_reference(runs: pa.Table, spec: CoverageSpec) -> pa.Table:
    """The finished rows of one (sample, reference) from its runs (an executor's group)."""
    from bams3_spark.coverage.chunked import ChunkMates, mate_corrections, table_from_ipc
    from bams3_spark.coverage.depth import ReferenceDepth
    from bams3_spark.coverage.slices import DepthSlice, slice_table

    first = runs.slice(0, 1).to_pylist()[0]
    rname, length = first["rname"], int(first["length"])
    diff = np.zeros(length + 1, dtype=np.int64)
    columns = (runs.column(c).to_pylist() for c in ("run_starts", "run_values", "run_end"))
    for starts_b, values_b, end in zip(*columns, strict=True):
        if not starts_b:
            continue
        starts = np.frombuffer(starts_b, dtype=np.int32).astype(np.int64)
        values = np.frombuffer(values_b, dtype=np.int32).astype(np.int64)
        # Starts of one run are distinct, so fancy-index += is exact.
        diff[starts] += np.diff(values, prepend=0)
        diff[min(int(end), length)] -= values[-1]
    mates = [
        ChunkMates(int(part), table_from_ipc(p), table_from_ipc(g))
        for part, p, g in zip(runs.column("part").to_pylist(), runs.column("pending").to_pylist(),
                              runs.column("groups").to_pylist(), strict=True)
    ]
    for offset, delta in mate_corrections(rname, length, spec.options, mates):
        step: np.ndarray = np.diff(delta.astype(np.int64), prepend=0)
        diff[offset : offset + len(delta)] += step
        diff[offset + len(delta)] -= int(delta[-1])
    depth = np.cumsum(diff[:length]).astype(np.int32)
    sl = DepthSlice(first["sample"], rname, length, 0, ReferenceDepth(rname, length, depth), True)
    table = slice_table(sl, spec.by)
    return pa.Table.from_batches([_rows(table, int(first["sidx"]), int(first["tid"]), spec.by)])


def sample_files(unit: Unit, spec: CoverageSpec) -> tuple[int, list[int]]:
    """Write one sample's mosdepth files into the output directory; return (files, costs)."""
    from bams3_spark.coverage.engine import write_coverage
    from bams3_spark.spark.cohort import open_counted, safe_name, unit_costs
    from bams3_spark.spark.outputs import publish, staging

    assert spec.out is not None
    ds = open_counted(unit, spec.storage_options)
    stem = safe_name(unit.sample)
    with staging(spec.out, spec.storage_options) as folder:
        run = write_coverage(
            ds, os.path.join(folder, stem), by=spec.by, thresholds=list(spec.thresholds) or None,
            per_base=spec.per_base, options=spec.options, workers=1,
        )
        paths = run.paths.get(ds.sample, [])
        for path in paths:
            publish(path, spec.out, os.path.basename(path), spec.storage_options)
    return len(paths), unit_costs(ds, sum(r.chunks for r in ds.manifest.references if r.index is not None))


#: Rows of the ``mosdepth`` format's reference tasks (assembled per sample).
SUMMARY_SCHEMA = pa.schema([("sample", pa.string()), ("sidx", pa.int32()), ("tid", pa.int32()),
                            ("summary", pa.binary()), ("part", pa.string())])
#: Where reference tasks leave per-base parts, under the output directory, until assembled.
PARTS_DIR = ".parts"


def reference_files(unit: Unit, spec: CoverageSpec) -> tuple[pa.RecordBatch, list[int]]:
    """One reference of a sample for ``--format mosdepth``: its summary, and its per-base part under OUT."""
    from bams3_spark.coverage.engine import reference_summary
    from bams3_spark.coverage.mosdepth import MosdepthPlan
    from bams3_spark.spark.cohort import open_counted, safe_name, unit_costs
    from bams3_spark.spark.outputs import publish, staging

    assert spec.out is not None and unit.rname is not None
    ds = open_counted(unit, spec.storage_options)
    # As write_coverage's writers: no per-base text in the plan (parts carry it).
    plan = MosdepthPlan(spec.by or 0, None, spec.thresholds, False, 2, False)
    name = f"{PARTS_DIR}/{safe_name(unit.sample)}/{unit.tid:06d}.bgz" if spec.per_base else ""
    with staging(spec.out, spec.storage_options) as folder:
        local = os.path.join(folder, "part.bgz") if spec.per_base else None
        summary = reference_summary(ds, unit.rname, spec.options, plan, spec.by, local)
        if local is not None:
            publish(local, spec.out, name, spec.storage_options)
    row = {"sample": [unit.sample], "sidx": [unit.index], "tid": [unit.tid],
           "summary": [pickle.dumps(summary)], "part": [name]}
    figures = unit_costs(ds, ds.reference_entry(unit.rname).chunks)
    return pa.RecordBatch.from_pydict(row, schema=SUMMARY_SCHEMA), figures


def assemble_sample(spec: CoverageSpec) -> Any:
    """The ``applyInPandas`` function that writes a sample's mosdepth files from its references' results."""

    def run(frame: Any) -> Any:
        import pandas as pd

        from bams3_spark.coverage.mosdepth import MosdepthWriter
        from bams3_spark.io.bgzf import BgzfConcatenator
        from bams3_spark.io.storage import shared_storage
        from bams3_spark.spark.cohort import safe_name
        from bams3_spark.spark.outputs import publish, staging

        assert spec.out is not None
        rows = frame.sort_values("tid")
        sample = str(rows["sample"].iloc[0])
        stem = safe_name(sample)
        storage = shared_storage(spec.out, **dict(spec.storage_options))
        with staging(spec.out, spec.storage_options) as folder:
            prefix = os.path.join(folder, stem)
            thresholds = list(spec.thresholds) or None
            writer = MosdepthWriter(prefix, by=spec.by, thresholds=thresholds, per_base=False)
            try:
                for blob in rows["summary"]:
                    writer.add_summary(pickle.loads(blob))
            finally:
                writer.close()
            paths = writer.paths()
            if spec.per_base:
                cat = BgzfConcatenator(prefix + ".per-base.bed.gz")
                for i, name in enumerate(rows["part"]):
                    local = os.path.join(folder, f"part{i}.bgz")
                    if storage.is_local:
                        os.replace(storage.full_path(name), local)
                    else:
                        storage.fs.get_file(storage.full_path(name), local)
                    cat.append_part(local)
                cat.close()
                paths.append(cat.path)
            for path in paths:
                publish(path, spec.out, os.path.basename(path), spec.storage_options)
        if spec.per_base:
            storage.delete_tree(f"{PARTS_DIR}/{stem}")
        return pd.DataFrame({"sample": [sample], "files": [len(paths)]})

    return run


def map_units(spec: CoverageSpec, kind: str, costs: Any) -> Any:
    """The ``mapInArrow`` function of a job's tasks: each input row holds a pickled list of units."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for payload in batch.column("units").to_pylist():
                for unit in pickle.loads(payload):
                    if kind == "rows":
                        out, figures = unit_rows(unit, spec)
                        yield from out
                    elif kind == "partial":
                        part, figures = run_partial(unit, spec)
                        yield part
                    elif kind == "reference":
                        part, figures = reference_files(unit, spec)
                        yield part
                    else:
                        n, figures = sample_files(unit, spec)
                        yield pa.RecordBatch.from_pydict({"sample": [unit.sample], "files": [n]},
                                                         schema=FILES_SCHEMA)
                    costs.add(figures)

    return run


#: Rows of the ``mosdepth`` format's tasks.
FILES_SCHEMA = pa.schema([("sample", pa.string()), ("files", pa.int32())])


def reduce_groups(spec: CoverageSpec) -> Any:
    """The ``applyInPandas`` function of the (sample, reference) groups of split references."""

    def run(frame: Any) -> Any:
        table = pa.Table.from_pandas(frame, schema=PARTIAL_SCHEMA, preserve_index=False)
        return reduce_reference(table, spec).to_pandas()

    return run


__all__ = [
    "FILES_SCHEMA",
    "PARTIAL_SCHEMA",
    "CoverageSpec",
    "map_units",
    "reduce_groups",
    "reduce_reference",
    "row_schema",
    "run_partial",
    "unit_rows",
]
