"""Chunk-parallel coverage: each chunk counted alone, mate overlaps across chunks resolved after.

The form of the counting used by the Spark coverage job
(:mod:`bams3_spark.spark.coverage_job`): :func:`chunk_partial` counts one
chunk on its own, and the few mate pairs whose overlap correction depends on
an earlier chunk are resolved afterwards, exactly, by
:func:`mate_corrections` (see :func:`chunk_partial` for why it is exact).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from bams3_spark.coverage.depth import STORE, STORE_IF_UNSEEN, TAKE, DepthAccumulator
from bams3_spark.coverage.options import MATE_COLUMNS, CoverageOptions
from bams3_spark.coverage.slices import shift_positions
from bams3_spark.format.flags import PROPER_PAIR, SUPPLEMENTARY

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

_MATE_FIELDS = MATE_COLUMNS


def mate_rows_schema() -> pa.Schema:
    """Schema of the mate rows of :class:`ChunkPartial` (pending and groups)."""
    return pa.schema(
        [
            ("qname", pa.string()),
            ("flag", pa.int32()),
            ("pos", pa.int32()),
            ("end", pa.int32()),
            ("mapq", pa.int32()),
            ("cigar", pa.string()),
            ("rnext", pa.string()),
            ("pnext", pa.int32()),
            ("row", pa.int32()),
            ("typ", pa.int8()),
        ]
    )


@dataclass
class ChunkPartial:
    """The depth contribution of one chunk counted alone, and its mate state.

    Attributes:
        offset: Reference position (0-based) of ``contribution[0]``.
        contribution: Depth added by the chunk's reads (blocks, minus the
            mate overlaps resolved inside the chunk), clipped to the
            reference; may extend past the chunk's window (reads straddling
            it). Empty when the chunk has no counted read.
        pending: Mate rows the chunk leaves stored (mode ``"mosdepth"``):
            the first mates still waiting for their mate when the chunk ends,
            had nothing been stored before it.
        groups: For every read name among the chunk's mate candidates, its
            first row, and all its rows when the first one is a
            store-if-unseen row (mates starting at the same position).
    """

    offset: int
    contribution: I32
    pending: pa.Table
    groups: pa.Table


def _mate_types(table: pa.Table, rname: str, options: CoverageOptions) -> tuple[I64, npt.NDArray[np.int8]]:
    """Rows that take part in mosdepth's mate rule, and their kind.

    The rule (see :class:`~bams3_spark.coverage.DepthAccumulator`): a read
    passing the filters with the proper-pair bit and not supplementary is
    stored (S1) if its mate is on the same reference, starts after it and
    before its end; stored if nothing is stored yet (S2) when the mate starts
    at the same position; otherwise (E) it takes the stored read, if any.
    """
    flag = table.column("flag").to_numpy().astype(np.int64)
    mapq = table.column("mapq").to_numpy()
    keep = (mapq >= options.mapq) & ((flag & options.flag_exclude) == 0)
    if options.flag_include:
        keep &= (flag & options.flag_include) != 0
    keep &= ((flag & PROPER_PAIR) != 0) & ((flag & SUPPLEMENTARY) == 0)
    keep &= table.column("pos").to_numpy() > 0
    rows = np.flatnonzero(keep)
    rnext = table.column("rnext").take(pa.array(rows))
    same = pc.or_(pc.equal(rnext, "="), pc.equal(rnext, rname)).to_numpy(zero_copy_only=False)
    st = table.column("pos").to_numpy()[rows].astype(np.int64) - 1
    sp = table.column("end").to_numpy()[rows].astype(np.int64)
    mpos = table.column("pnext").to_numpy()[rows].astype(np.int64) - 1
    base = same & (sp > mpos)
    typ = np.full(len(rows), TAKE, dtype=np.int8)
    typ[base & (st == mpos)] = STORE_IF_UNSEEN
    typ[base & (st < mpos)] = STORE
    return rows.astype(np.int64), typ


def _final_state(prior: int | None, typs: Sequence[int], rows: Sequence[int]) -> int | None:
    """mosdepth's stored read for one name after ``rows`` (None: nothing stored)."""
    state = prior
    for t, r in zip(typs, rows, strict=True):
        if t == STORE or (t == STORE_IF_UNSEEN and state is None):
            state = r
        elif state is not None:
            state = None
    return state


def chunk_partial(table: pa.Table, rname: str, ref_length: int, options: CoverageOptions) -> ChunkPartial:
    """Count one chunk of a reference on its own (the Spark job's map step).

    The depth of a reference is the sum of the :attr:`ChunkPartial.contribution`
    of its chunks plus the :func:`mate_corrections` computed from their
    :attr:`~ChunkPartial.pending` and :attr:`~ChunkPartial.groups` rows: this
    equals, base for base, :func:`~bams3_spark.coverage.reference_depth` over
    all the chunks in order.

    Why this is exact: block depth is additive. mosdepth's mate rule is a state
    machine per read name, so a chunk counted alone (nothing stored before it)
    differs from the sequential count only for names that are stored when an
    earlier chunk ends. A name stored at the end of some chunk in the
    sequential count is stored at the end of the first such chunk when that
    chunk is counted alone too, so the names that need correcting are among
    the :attr:`pending` rows of the chunks; for them, the groups of rows give
    what the sequential machine does next (a name whose first row in a chunk
    is a store overwrites the earlier read; a take takes it; a store-if-unseen
    row needs the whole group).

    Args:
        table: The chunk's records, at least :func:`required_columns` (and all
            of ``MATE_COLUMNS`` in mode ``"mosdepth"``).
        rname: Reference name.
        ref_length: Reference length.
        options: Counting options.

    Returns:
        The chunk's partial result.
    """
    schema = mate_rows_schema()
    empty = schema.empty_table()
    placed = table.filter(pc.greater(table.column("pos"), 0)) if table.num_rows else table
    if placed.num_rows == 0:
        return ChunkPartial(0, np.zeros(0, np.int32), empty, empty)
    offset = int(pc.min(placed.column("pos")).as_py()) - 1
    max_end = int(pc.max(placed.column("end")).as_py())
    span = max(0, min(ref_length, max_end) - offset)
    acc = DepthAccumulator(span, options, name=rname)
    acc.add(shift_positions(placed, offset))
    n_pending = acc.n_pending  # finish() clears it
    contribution = acc.finish().depth.copy()
    if options.mode != "mosdepth":
        return ChunkPartial(offset, contribution, empty, empty)

    rows, typ = _mate_types(placed, rname, options)
    if len(rows) == 0:
        if n_pending:
            raise RuntimeError(f"{rname}: mate state disagrees with the counting engine")
        return ChunkPartial(offset, contribution, empty, empty)
    qn = placed.column("qname").take(pa.array(rows))
    enc = pc.dictionary_encode(qn).combine_chunks()
    code = enc.indices.to_numpy().astype(np.int64)
    order = np.argsort(code, kind="stable")
    counts = np.bincount(code, minlength=len(enc.dictionary))
    ptr = np.concatenate(([0], np.cumsum(counts)))
    first = order[ptr[:-1]]
    # Final stored row of every name, vectorised for 1 or 2 rows (pairs).
    final = np.full(len(counts), -1, dtype=np.int64)
    one = np.flatnonzero(counts == 1)
    a = first[one]
    stores = typ[a] != TAKE
    final[one[stores]] = a[stores]
    two = np.flatnonzero(counts == 2)
    a, b = first[two], order[ptr[two] + 1]
    keep_b = (typ[b] == STORE) | ((typ[b] == STORE_IF_UNSEEN) & (typ[a] == TAKE))
    final[two[keep_b]] = b[keep_b]
    for g in np.flatnonzero(counts >= 3).tolist():
        members = order[ptr[g] : ptr[g + 1]].tolist()
        state = _final_state(None, typ[members].tolist(), members)
        final[g] = -1 if state is None else state
    stored = np.sort(final[final >= 0])
    if len(stored) != n_pending:
        raise RuntimeError(f"{rname}: mate state disagrees with the counting engine")
    s2_first = np.flatnonzero(typ[first] == STORE_IF_UNSEEN)
    group_rows = np.sort(np.concatenate([first] + [order[ptr[g] : ptr[g + 1]] for g in s2_first.tolist()]))
    group_rows = np.unique(group_rows)

    def mate_table(idx: I64) -> pa.Table:
        take = pa.array(rows[idx])
        cols = [placed.column(c).take(take) for c in _MATE_FIELDS]
        cols.append(pa.array(rows[idx].astype(np.int32)))
        cols.append(pa.array(typ[idx], pa.int8()))
        arrays = [c.cast(f.type) for c, f in zip(cols, schema, strict=True)]
        return pa.Table.from_arrays(arrays, schema=schema)

    return ChunkPartial(offset, contribution, mate_table(stored), mate_table(group_rows))


@dataclass(frozen=True)
class ChunkMates:
    """The mate rows of one chunk, for :func:`mate_corrections`.

    Attributes:
        key: Sort key giving the chunks' order in the reference.
        pending: :attr:`ChunkPartial.pending`.
        groups: :attr:`ChunkPartial.groups`, possibly only the rows whose name
            is among the pending rows of the reference's chunks (the others
            are not used).
    """

    key: int
    pending: pa.Table
    groups: pa.Table


def pending_names(chunks: Iterable[ChunkMates]) -> pa.Array:
    """Distinct read names among the chunks' pending rows."""
    names = [c.pending.column("qname") for c in chunks if c.pending.num_rows]
    if not names:
        return pa.array([], pa.string())
    return pc.unique(pa.chunked_array(names, pa.string()).combine_chunks())


def mate_corrections(
    rname: str, ref_length: int, options: CoverageOptions, chunks: Sequence[ChunkMates]
) -> list[tuple[int, I32]]:
    """Depth corrections for mate pairs whose reads are in different chunks.

    Replays mosdepth's per-name state machine over the chunks in order for
    the names some chunk leaves stored (see :func:`chunk_partial`); where a
    read stored in an earlier chunk meets a later row, the difference between
    counting them together and apart is computed with
    :class:`~bams3_spark.coverage.DepthAccumulator` itself (both mates
    together, minus the later group alone, minus the stored read's own
    blocks), so the overlap rule is the engine's, quirks included.

    Args:
        rname: Reference name.
        ref_length: Reference length.
        options: Counting options (mode ``"mosdepth"``; others need none).
        chunks: The reference's chunks (any order; sorted by ``key``).

    Returns:
        ``(offset, delta)`` pairs: add ``delta`` to the depth from ``offset``.
    """
    if options.mode != "mosdepth":
        return []
    ordered = sorted(chunks, key=lambda c: c.key)
    names = pending_names(ordered)
    if len(names) == 0:
        return []
    stored: dict[tuple[int, str], dict[str, Any]] = {}
    sequences: dict[str, list[tuple[int, list[dict[str, Any]]]]] = {}
    for ci, c in enumerate(ordered):
        for row in c.pending.filter(pc.is_in(c.pending.column("qname"), value_set=names)).to_pylist():
            stored[(ci, row["qname"])] = row
        groups = c.groups.filter(pc.is_in(c.groups.column("qname"), value_set=names))
        by_name: dict[str, list[dict[str, Any]]] = {}
        for row in sorted(groups.to_pylist(), key=lambda r: r["row"]):
            by_name.setdefault(row["qname"], []).append(row)
        for q, rows in by_name.items():
            sequences.setdefault(q, []).append((ci, rows))

    junctions: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for q, groups_of_q in sequences.items():
        state: dict[str, Any] | None = None
        for ci, rows in groups_of_q:
            t0 = rows[0]["typ"]
            if state is not None and t0 != STORE:
                junctions.append((state, rows if t0 == STORE_IF_UNSEEN else rows[:1]))
            if state is not None and t0 == STORE_IF_UNSEEN:
                idx = _final_state(-1, [r["typ"] for r in rows], list(range(len(rows))))
                state = None if idx is None else state if idx < 0 else rows[idx]
            else:
                state = stored.get((ci, q))
    return _junction_deltas(rname, ref_length, options, junctions)


def _junction_deltas(
    rname: str,
    ref_length: int,
    options: CoverageOptions,
    junctions: Sequence[tuple[dict[str, Any], list[dict[str, Any]]]],
) -> list[tuple[int, I32]]:
    """Count every junction (stored read + later rows) apart, in disjoint slots of one array."""
    if not junctions:
        return []
    schema = pa.schema([f for f in mate_rows_schema() if f.name in _MATE_FIELDS])
    together: list[dict[str, Any]] = []
    later: list[dict[str, Any]] = []
    alone: list[dict[str, Any]] = []
    slots: list[tuple[int, int, int]] = []  # (reference offset, slot base, span)
    base = 0
    for i, (mate, rows) in enumerate(junctions):
        lo = int(mate["pos"]) - 1
        hi = max(int(r["end"]) for r in [mate, *rows])
        span = hi - lo + 1
        shift = base - lo

        def moved(r: dict[str, Any], i: int = i, shift: int = shift) -> dict[str, Any]:
            # A name per junction: junctions of one name must not meet.
            return {
                **{k: r[k] for k in _MATE_FIELDS},
                "qname": str(i),
                "pos": r["pos"] + shift,
                "end": r["end"] + shift,
                "pnext": r["pnext"] + shift,
            }

        together += [moved(mate)] + [moved(r) for r in rows]
        later += [moved(r) for r in rows]
        alone.append(moved(mate))
        slots.append((lo, base, span))
        base += span + 1
    total = base + 1
    blocks = CoverageOptions("samtools", options.mapq, options.flag_exclude, options.flag_include)

    def depth(rows: list[dict[str, Any]], opts: CoverageOptions) -> I64:
        acc = DepthAccumulator(total, opts, name=rname)
        acc.add(pa.Table.from_pylist(rows, schema=schema))
        return acc.finish().depth.astype(np.int64)

    delta = depth(together, options) - depth(later, options) - depth(alone, blocks)
    out: list[tuple[int, I32]] = []
    for lo, b, span in slots:
        n = min(span, ref_length - lo)
        if n <= 0:
            continue
        d = delta[b : b + n]
        if d.any():
            out.append((lo, d.astype(np.int32)))
    return out


def table_to_ipc(table: pa.Table) -> bytes:
    """Serialize a table as an LZ4-compressed Arrow IPC stream (to ship mate rows through Spark).

    Read names compress several times over; LZ4 costs about a millisecond per chunk.
    """
    sink = io.BytesIO()
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_stream(sink, table.schema, options=options) as w:
        w.write_table(table)
    return sink.getvalue()


def table_from_ipc(data: bytes) -> pa.Table:
    """Read a table written by :func:`table_to_ipc`."""
    return pa.ipc.open_stream(data).read_all()
