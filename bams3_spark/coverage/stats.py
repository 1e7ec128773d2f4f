"""Region statistics and depth tables: mosdepth's windows, BED regions, means, distributions.

Means are mosdepth's sequential float sums (``imean``), so the printed
``%.2f`` values are the same to the last digit; per-base arrays are scanned in
blocks so temporaries stay small whatever the reference length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv

from bams3_spark.arrays import int_array, string_array
from bams3_spark.coverage.depth import ReferenceDepth
from bams3_spark.io.bed import BedRegion

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]

#: mosdepth clamps depths above this when building distributions
#: (``MAX_COVERAGE`` in mosdepth.nim) ...
DIST_MAX_COVERAGE = 400_000
#: ... and replaces them by this value.
DIST_CLAMPED = DIST_MAX_COVERAGE - 10
#: Highest slot of mosdepth's per-window region distribution (``--by N``).
REGION_DIST_WINDOW_CAP = 999
#: mosdepth's ``depth_stat.min_depth`` starts at ``uint32.high``.
UINT32_MAX = 2**32 - 1


@dataclass(frozen=True)
class Regions:
    """Regions of one reference as arrays."""

    starts: I64
    ends: I64
    names: list[str]
    window: int = 0  # > 0 when these are --by N windows


def window_regions(length: int, window: int) -> Regions:
    """Return mosdepth's ``--by N`` windows of a reference.

    Windows are ``[k*N, (k+1)*N)``; the last one is truncated at the end.
    """
    if window <= 0:
        raise ValueError(f"window size must be positive; got {window}")
    starts = np.arange(0, length, window, dtype=np.int64)
    ends = np.minimum(starts + window, length)
    return Regions(starts, ends, [""] * len(starts), window)


def bed_regions(regions: Sequence[BedRegion], length: int, chrom: str) -> Regions:
    """Return BED regions of one reference as mosdepth uses them.

    Raises:
        ValueError: If a region ends past the reference end (mosdepth 0.3.3 crashes there).
    """
    # mosdepth sorts each chromosome's regions by start (stable sort).
    ordered = sorted(regions, key=lambda r: r.start)
    starts = np.array([r.start for r in ordered], dtype=np.int64)
    ends = np.array([r.end for r in ordered], dtype=np.int64)
    if len(ends) and int(ends.max()) > length + 1:
        # mosdepth 0.3.3 dies with an IndexDefect here; fail clearly instead.
        raise ValueError(
            f"BED region {chrom}:{int(starts[ends.argmax()])}-{int(ends.max())} "
            f"extends past the end of {chrom} (length {length})"
        )
    return Regions(starts, ends, [r.name for r in ordered])


def group_bed(regions: Iterable[BedRegion]) -> dict[str, list[BedRegion]]:
    """BED regions by chromosome, each in file order."""
    out: dict[str, list[BedRegion]] = {}
    for r in regions:
        out.setdefault(r.chrom, []).append(r)
    return out


@dataclass(frozen=True)
class RegionStats:
    means: F64
    lengths: I64
    sums: I64
    mins: I64  # UINT32_MAX for empty regions
    maxs: I64
    thresholds: I64  # (n_regions, n_thresholds)


#: Elements per block when scanning per-base arrays, so that temporaries
#: (float64 copies, int64 casts) stay small whatever the reference length.
SCAN_BLOCK = 1 << 20


def _sequential_mean(arr: I32, start: int, end: int) -> float:
    """mosdepth's ``imean`` of ``arr[start:end]``, scanned in blocks."""
    n = end - start
    if n <= 0:
        return 0.0
    acc = 0.0
    for b0 in range(start, end, SCAN_BLOCK):
        block = arr[b0: min(end, b0 + SCAN_BLOCK)] / float(n)
        block[0] += acc  # continue the same left-to-right float sum
        np.cumsum(block, out=block)
        acc = float(block[-1])
    return acc


def _full_windows(reg: Regions) -> int:
    """How many of ``reg``'s first regions are whole ``--by N`` windows (0 for BED regions)."""
    if reg.window <= 0:
        return 0
    return int(np.count_nonzero(reg.ends - reg.starts == reg.window))


def _sequential_means(arr: I32, reg: Regions, which: I64 | None = None) -> F64:
    """Region means computed exactly like mosdepth's ``imean``.

    mosdepth adds ``float64(depth) / float64(length)`` base by base, in order;
    the rounding of that sum decides the printed ``%.2f`` value (e.g. 125
    bases of depth 1 in a 1000 bp window print ``0.13``, not ``0.12``), so the
    same sequential float sum is computed here (``np.cumsum`` accumulates
    sequentially; ``np.sum`` would not).

    Args:
        arr: The depth.
        reg: The regions.
        which: Indexes of the regions to compute (None: all); the others are 0.
    """
    n = len(reg.starts)
    out = np.zeros(n, dtype=np.float64)
    todo = np.arange(n, dtype=np.int64) if which is None else which
    w = reg.window
    nfull = _full_windows(reg) if w <= SCAN_BLOCK else 0
    if nfull:
        # Regular windows: one row per window, cumsum along rows.
        rows = todo[todo < nfull]
        todo = todo[todo >= nfull]
        grid = arr[: nfull * w].reshape(nfull, w)
        per_block = max(1, SCAN_BLOCK // w)
        for r0 in range(0, len(rows), per_block):
            sel = rows[r0: r0 + per_block]
            picked = grid[sel] if which is not None else grid[sel[0]: sel[-1] + 1]  # a view when all
            mat = picked.astype(np.float64)
            mat /= float(w)
            np.cumsum(mat, axis=1, out=mat)
            out[sel] = mat[:, -1]
    for i in todo.tolist():
        out[i] = _sequential_mean(arr, int(reg.starts[i]), int(reg.ends[i]))
    return out


#: The unit roundoff of float64.
_U = 2.0**-53


def _printed_means(arr: I32, reg: Regions, sums: I64, mins: I64, precision: int) -> F64:
    """Means that print as mosdepth's ``imean`` does, with ``precision`` decimals and as integers.

    mosdepth's sequential float sum (:func:`_sequential_means`) and the exact
    quotient ``sum / length`` both lie within ``(length + 1) * u * mean`` of
    the exact mean (``u`` the float64 unit roundoff; depths not negative).
    Unless the exact mean is a rounding midpoint of the printed decimals (or
    of Nim's ``toInt``, for the region distribution), it is at least
    ``1 / (2 * 10**precision * length)`` from one, so both print the same:
    the quotient serves, computed from the integer sums. The rest -- about
    one window in ten at two decimals -- is summed sequentially.
    """
    lengths = reg.ends - reg.starts
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.where(lengths > 0, sums / np.maximum(lengths, 1), 0.0)
    two_l = np.maximum(2 * lengths, 1)
    # 10**precision mod 2L step by step: 2 * 10**precision can exceed int64.
    pow10 = np.ones(len(lengths), dtype=np.int64) % two_l
    for _ in range(precision):
        pow10 = pow10 * 10 % two_l
    s_mod = sums % two_l
    on_midpoint = ((2 * pow10 % two_l) * s_mod % two_l == lengths) | ((2 * s_mod) % two_l == lengths)
    unsafe = (
        on_midpoint | (lengths <= 0) | (lengths > 2**30) | (mins < 0) | (sums >= 2**52)
        | (4.0 * 10.0**precision * (lengths + 2) * _U * sums >= 1.0)
    )
    slow = np.flatnonzero(unsafe & (lengths > 0))
    if len(slow):
        means[slow] = _sequential_means(arr, reg, slow)[slow]
    return means


def _prefix_sums_at(
    arr: I32, points: I64, transform: Callable[[I32], npt.NDArray[np.generic]] | None = None,
) -> I64:
    """Return ``sum(f(arr[:p]))`` for every ``p`` in ``points`` (0..len(arr)).

    Scans ``arr`` in blocks, so no reference-sized int64 temporary is made.
    """
    out = np.zeros(len(points), dtype=np.int64)
    order = np.argsort(points, kind="stable")
    sp = points[order]
    running = 0
    for b0 in range(0, len(arr), SCAN_BLOCK):
        b1 = min(len(arr), b0 + SCAN_BLOCK)
        block = arr[b0:b1] if transform is None else transform(arr[b0:b1])
        lo, hi = np.searchsorted(sp, [b0, b1], side="right")
        if hi > lo:
            cs = np.cumsum(block, dtype=np.int64)
            out[order[lo:hi]] = running + cs[sp[lo:hi] - b0 - 1]
            running += int(cs[-1])
        else:
            running += int(block.sum(dtype=np.int64))
    return out


def _region_sums(arr: I32, reg: Regions, length: int) -> I64:
    """Depth sums of the regions: per row for whole windows, by prefix sums for the rest."""
    n = len(reg.starts)
    nfull = _full_windows(reg)
    sums = np.zeros(n, dtype=np.int64)
    if nfull:
        sums[:nfull] = arr[: nfull * reg.window].reshape(nfull, reg.window).sum(axis=1, dtype=np.int64)
    if nfull < n:
        bounds = np.concatenate((reg.starts[nfull:], reg.ends[nfull:]))
        prefix = _prefix_sums_at(arr[: length + 1], bounds)
        sums[nfull:] = prefix[n - nfull:] - prefix[: n - nfull]
    return sums


def region_stats(
    rd: ReferenceDepth, reg: Regions, thresholds: Sequence[int], precision: int | None = None,
) -> RegionStats:
    """Means, sums, minimums, maximums and threshold counts of regions of a depth.

    Args:
        rd: The depth.
        reg: The regions (windows or BED regions) of its reference.
        thresholds: Depths; for each, the bases at or above it are counted.
        precision: None for mosdepth's exact float means; a number of
            decimals for means that only need to print (at that precision,
            and rounded to integers) as mosdepth's do, which are much
            cheaper (:func:`_printed_means`).
    """
    n = len(reg.starts)
    lengths = reg.ends - reg.starts
    nt = len(thresholds)
    if not rd.has_records or n == 0:
        z = np.zeros(n, dtype=np.int64)
        return RegionStats(np.zeros(n), lengths, z, np.full(n, UINT32_MAX, np.int64), z,
                            np.zeros((n, nt), dtype=np.int64))
    arr = rd.padded
    empty = lengths <= 0
    sums = _region_sums(arr, reg, rd.length)
    bounds = np.concatenate((reg.starts, reg.ends))
    counts = np.zeros((n, nt), dtype=np.int64)
    for j, t in enumerate(thresholds):

        def at_least(block: I32, t: int = t) -> BoolArr:
            return np.greater_equal(block, t)

        prefix = _prefix_sums_at(arr[: rd.length + 1], bounds, at_least)
        counts[:, j] = prefix[n:] - prefix[:n]
    # min/max with reduceat over interleaved [start, end) bounds (no cast, no
    # copy); the padded array's extra 0 makes index length + 1 addressable.
    idx = np.empty(2 * n, dtype=np.int64)
    idx[0::2] = reg.starts
    idx[1::2] = reg.ends
    mins = np.minimum.reduceat(arr, idx)[0::2].astype(np.int64)
    maxs = np.maximum.reduceat(arr, idx)[0::2].astype(np.int64)
    if precision is None:
        means = _sequential_means(arr, reg)
    else:
        means = _printed_means(arr, reg, sums, mins, precision)
    mins[empty] = UINT32_MAX
    maxs[empty] = 0
    return RegionStats(means, lengths, sums, mins, maxs, counts)


def dist_counts(values: I32, weights: I32 | None = None, *, in_range: bool = False) -> I64:
    """Depth histogram as mosdepth builds it (negative skipped, clamped).

    Args:
        values: Depths.
        weights: Optional count of each value (region multiplicity).
        in_range: The caller knows every value is from 0 to
            :data:`DIST_MAX_COVERAGE` (nothing to skip or clamp).
    """
    total = np.zeros(0, dtype=np.int64)
    for b0 in range(0, len(values), SCAN_BLOCK):
        block = values[b0: b0 + SCAN_BLOCK]
        if weights is None and len(block) and (
            in_range or (0 <= block.min() and block.max() <= DIST_MAX_COVERAGE)
        ):
            # The usual case: nothing to skip or clamp, count directly.
            total = sum_into(total, np.bincount(block).astype(np.int64))
            continue
        v = block.astype(np.int64)
        keep = v >= 0
        w = None
        if weights is not None:
            wb = weights[b0: b0 + SCAN_BLOCK]
            keep &= wb > 0
            w = wb[keep].astype(np.float64)
        v = v[keep]
        v[v > DIST_MAX_COVERAGE] = DIST_CLAMPED
        # Float weights are exact: counts stay far below 2**53.
        total = sum_into(total, np.rint(np.bincount(v, weights=w)).astype(np.int64))
    return total


def sum_into(total: I64, counts: I64) -> I64:
    """Add a histogram into a running total, growing it as needed; return the total."""
    if len(counts) > len(total):
        total = np.concatenate((total, np.zeros(len(counts) - len(total), dtype=np.int64)))
    total[: len(counts)] += counts
    return total


def region_multiplicity(rd: ReferenceDepth, reg: Regions) -> I32:
    """How many regions cover each base of mosdepth's ``arr`` (length+1)."""
    diff = np.zeros(rd.length + 2, dtype=np.int32)
    s = np.minimum(reg.starts, rd.length + 1)
    e = np.minimum(reg.ends, rd.length + 1)
    ok = e > s
    np.add.at(diff, s[ok], 1)
    np.subtract.at(diff, e[ok], 1)
    out = diff[: rd.length + 1]
    np.cumsum(out, dtype=np.int32, out=out)
    return out


# --------------------------------------------------------------------------
# Arrow tables
# --------------------------------------------------------------------------


def intervals_table(rd: ReferenceDepth) -> pa.Table:
    """Per-base depth as run-length intervals (mosdepth ``per-base.bed.gz``).

    Returns:
        Columns ``rname`` (string), ``start`` (int32, 0-based), ``end``
        (int32, exclusive), ``depth`` (int32), covering the whole reference.
    """
    starts, ends, depth = rd.intervals()
    return pa.table({
        "rname": repeat_name(rd.name, len(starts)),
        "start": pa.array(starts.astype(np.int32)),
        "end": pa.array(ends.astype(np.int32)),
        "depth": pa.array(depth.astype(np.int32)),
    })


#: mosdepth's per-base text layout: "chrom\tstart\tend\tdepth" lines.
_TSV = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")


def per_base_text(rd: ReferenceDepth, offset: int = 0) -> bytes:
    """The lines of mosdepth's ``per-base.bed.gz`` for a depth, positions shifted by ``offset``."""
    starts, ends, depth = rd.intervals()
    return runs_text(rd.name, starts + offset, ends + offset, depth)


def runs_text(name: str, starts: npt.ArrayLike, ends: npt.ArrayLike, depth: npt.ArrayLike) -> bytes:
    """``name\tstart\tend\tdepth`` lines of runs of equal depth (mosdepth's per-base layout).

    Arrow's CSV writer formats the (many) integer lines in C++.
    """
    table = pa.Table.from_arrays(
        [repeat_name(name, len(np.asarray(starts))), int_array(starts), int_array(ends),
         int_array(depth, pa.int32())],
        names=["rname", "start", "end", "depth"],
    )
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, _TSV)
    return sink.getvalue().to_pybytes()


def repeat_name(name: str, n: int) -> pa.Array:
    """A string array holding ``name`` ``n`` times (built without a list)."""
    return pa.DictionaryArray.from_arrays(
        int_array(np.zeros(n, dtype=np.int32), pa.int32()), string_array([name]),
    ).cast(pa.string())


def _means_table(rd: ReferenceDepth, reg: Regions) -> pa.Table:
    stats = region_stats(rd, reg, ())
    return pa.table({
        "rname": repeat_name(rd.name, len(reg.starts)),
        "start": pa.array(reg.starts.astype(np.int32)),
        "end": pa.array(reg.ends.astype(np.int32)),
        "mean_depth": pa.array(stats.means, pa.float64()),
    })


def window_means_table(rd: ReferenceDepth, window: int) -> pa.Table:
    """Mean depth per window (``mosdepth --by N``).

    Returns:
        Columns ``rname``, ``start``, ``end`` (int32, BED coordinates) and
        ``mean_depth`` (float64, mosdepth's value; format with ``%.2f``).
    """
    return _means_table(rd, window_regions(rd.length, window))


def region_means_table(rd: ReferenceDepth, regions: Sequence[BedRegion]) -> pa.Table:
    """Mean depth per BED region of this reference (``mosdepth --by BED``).

    Regions of other references are ignored; regions are sorted by start.

    Returns:
        Columns ``rname``, ``start``, ``end``, ``mean_depth``.
    """
    own = [r for r in regions if r.chrom == rd.name]
    return _means_table(rd, bed_regions(own, rd.length, rd.name))


def thresholds_table(
    rd: ReferenceDepth, by: int | Sequence[BedRegion], thresholds: Sequence[int],
) -> pa.Table:
    """Bases at or above each threshold per window/region (``--thresholds``).

    Args:
        rd: Depth of one reference.
        by: Window size, or BED regions (those of other references ignored).
        thresholds: Depth thresholds (sorted ascending in the output).

    Returns:
        Columns ``rname``, ``start``, ``end``, ``region`` (name or
        ``"unknown"``) and one int64 column ``"{t}X"`` per threshold.
    """
    ts = sorted(int(t) for t in thresholds)
    if isinstance(by, bool):
        raise ValueError("by must be a window size or BED regions")
    if isinstance(by, (int, np.integer)):
        reg = window_regions(rd.length, int(by))
    else:
        reg = bed_regions([r for r in by if r.chrom == rd.name], rd.length, rd.name)
    stats = region_stats(rd, reg, ts)
    cols: dict[str, pa.Array] = {
        "rname": repeat_name(rd.name, len(reg.starts)),
        "start": pa.array(reg.starts.astype(np.int32)),
        "end": pa.array(reg.ends.astype(np.int32)),
        "region": pa.array([nm if nm else "unknown" for nm in reg.names], pa.string()),
    }
    for j, t in enumerate(ts):
        cols[f"{t}X"] = pa.array(stats.thresholds[:, j])
    return pa.table(cols)


def samtools_depth_table(rd: ReferenceDepth, *, all_references: bool = False) -> pa.Table:
    """Per-position depth like ``samtools depth -a`` (or ``-aa``).

    ``samtools depth -a`` prints every position of a reference only if at
    least one read on it passed the filters; ``-aa`` (``all_references``)
    prints references without such reads too (all zeros). Positions past the
    reference end covered by reads are printed too, as samtools does.

    Returns:
        Columns ``rname`` (string), ``pos`` (int32, 1-based), ``depth`` (int32).
    """
    if rd.n_passing == 0:
        n = rd.length if all_references else 0
    else:
        n = rd.extent
    return pa.table({
        "rname": repeat_name(rd.name, n),
        "pos": pa.array(np.arange(1, n + 1, dtype=np.int32)),
        "depth": pa.array(rd.padded[:n].astype(np.int32)),
    })
