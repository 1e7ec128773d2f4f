"""mosdepth's files for a whole reference in bounded memory: depth drained bucket by bucket.

:func:`stream_summary` adds a reference's chunks in order to a streaming
:class:`~bams3_spark.coverage.depth.DepthAccumulator` and, after each chunk,
takes out the depth no later read can change (up to the next chunk's first
start, rounded down to a window edge), so a worker holds a few Mbp of depth
instead of a whole reference. Each bucket is summarized as
:meth:`~bams3_spark.coverage.mosdepth.MosdepthPlan.summarize` would summarize
the whole reference -- window lines and statistics (windows never straddle
buckets), the depth distribution, the chromosome's totals -- and its runs of
equal depth are written to the per-base part as they close. The result is
the same :class:`~bams3_spark.coverage.mosdepth.ReferenceSummary`, byte for
byte the same files.

Used by :func:`bams3_spark.coverage.engine.write_coverage` for whole
references with ``--by N`` or no regions, in the mosdepth counting modes; BED
regions, ``--region`` and ``--samtools`` keep the whole-reference array.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bams3_spark.coverage.depth import DepthAccumulator, DrainedTooEarly, ReferenceDepth
from bams3_spark.coverage.mosdepth import MosdepthPlan, ReferenceSummary, Stat, window_mean_counts
from bams3_spark.coverage.options import CoverageOptions, required_columns
from bams3_spark.coverage.slices import read_ahead_tables
from bams3_spark.coverage.stats import (
    DIST_MAX_COVERAGE,
    UINT32_MAX,
    dist_counts,
    runs_text,
    sum_into,
    window_regions,
)
from bams3_spark.dataset.chunks import ChunkRef
from bams3_spark.dataset.reader import DatasetReader
from bams3_spark.io.bgzf import BgzfWriter

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]


def can_stream(plan: MosdepthPlan, options: CoverageOptions) -> bool:
    """Whether :func:`stream_summary` serves this configuration."""
    return not plan.region and plan.bed is None and options.mode != "samtools"


def stream_summary(
    ds: DatasetReader,
    rname: str,
    options: CoverageOptions,
    plan: MosdepthPlan,
    per_base_path: str | None,
) -> ReferenceSummary | None:
    """Summarize a whole reference bucket by bucket; write its per-base lines to ``per_base_path``.

    Returns:
        The reference's summary, or None when the reference has no chunk or
        its data changes depth behind the drained position (then the caller
        uses the whole-reference array; the per-base part is truncated).
    """
    chunks = [ChunkRef(ds.storage, rname, info) for info in ds.index(rname).chunks]
    if not chunks or not can_stream(plan, options):
        return None
    length = ds.lengths[rname]
    acc = DepthAccumulator(length, options, name=rname, stream=True)
    out = _Buckets(plan, rname, length, per_base_path)
    align = plan.window or 1
    try:
        for i, table in enumerate(read_ahead_tables(chunks, required_columns(options))):
            acc.add(table)
            if i + 1 < len(chunks):
                upto = (chunks[i + 1].info.min_start - 1) // align * align
                if upto > acc.origin:
                    out.add(acc.origin, acc.drain(upto))
        out.add(acc.origin, acc.drain_rest())
    except DrainedTooEarly:
        out.abort()
        return None
    if acc.n_records == 0:
        out.abort()
        return None
    return out.finish()


class _Buckets:
    """Running summary of consecutive depth buckets of one reference."""

    def __init__(self, plan: MosdepthPlan, name: str, length: int, per_base_path: str | None) -> None:
        self.plan = plan
        self.name = name
        self.length = length
        self.region_text: list[str] = []
        self.threshold_text: list[str] = []
        self.region_stat: Stat | None = None
        self.region_counts = np.zeros(0, dtype=np.int64)
        self.chrom_counts = np.zeros(0, dtype=np.int64)
        self.bases = 0
        self.min = UINT32_MAX
        self.max = 0
        self.per_base = BgzfWriter(per_base_path, level=1) if per_base_path else None
        self.run: tuple[int, int] | None = None  # (start, depth) of the run still open

    def add(self, start: int, depth: I32) -> None:
        """Add the depth of positions ``start .. start + len(depth) - 1`` (buckets in order)."""
        n = len(depth)
        if n == 0:
            return
        if self.plan.window:
            # The bucket's windows tile it: its totals are theirs (three scans fewer).
            stat = self._windows(start, depth)
            lo, hi, total = stat.min, stat.max, stat.bases
        else:
            lo, hi, total = int(depth.min()), int(depth.max()), int(depth.sum(dtype=np.int64))
        counts = dist_counts(depth, in_range=0 <= lo and hi <= DIST_MAX_COVERAGE)
        self.chrom_counts = sum_into(self.chrom_counts, counts)
        self.bases += total
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        if self.per_base is not None:
            self._runs(start, depth)

    def _windows(self, start: int, depth: I32) -> Stat:
        """Add the lines of the windows of a bucket; return their totals."""
        rd = ReferenceDepth(self.name, len(depth), depth)
        reg = window_regions(len(depth), self.plan.window)
        region_text, threshold_text, stats = self.plan.region_lines(rd, reg, start)
        self.region_text.append(region_text)
        self.threshold_text.append(threshold_text)
        assert stats is not None
        stat = Stat(
            int(stats.lengths.sum()), int(stats.sums.sum()), int(stats.mins.min()), int(stats.maxs.max())
        )
        self.region_stat = stat if self.region_stat is None else self.region_stat + stat
        self.region_counts = sum_into(self.region_counts, window_mean_counts(stats.means))
        return stat

    def _runs(self, start: int, depth: I32) -> None:
        change = np.flatnonzero(depth[1:] != depth[:-1]) + 1
        starts = np.concatenate(([0], change)).astype(np.int64) + start
        values = depth[starts - start].astype(np.int64)
        if self.run is not None:
            if self.run[1] == values[0]:
                starts[0] = self.run[0]
            else:
                starts = np.concatenate(([self.run[0]], starts))
                values = np.concatenate(([self.run[1]], values))
        # Every run but the last is closed; the last may continue in the next bucket.
        self.run = (int(starts[-1]), int(values[-1]))
        self._write_runs(starts[:-1], starts[1:], values[:-1])

    def _write_runs(self, starts: I64, ends: I64, values: I64) -> None:
        if len(starts) and self.per_base is not None:
            self.per_base.write(runs_text(self.name, starts, ends, values))

    def finish(self) -> ReferenceSummary:
        """The reference's summary (all buckets added)."""
        if self.per_base is not None:
            if self.run is not None:
                self._write_runs(np.array([self.run[0]]), np.array([self.length]), np.array([self.run[1]]))
            self.per_base.close()
        chrom_stat = Stat(self.length, self.bases, self.min if self.length else UINT32_MAX, self.max)
        return ReferenceSummary(
            self.name, False, True, "".join(self.region_text), "".join(self.threshold_text),
            self.region_stat, self.region_counts if self.plan.window else np.zeros(0, np.int64),
            self.chrom_counts, chrom_stat, None,
        )

    def abort(self) -> None:
        """Stop (the caller starts the reference again and rewrites the per-base part)."""
        if self.per_base is not None:
            self.per_base.close()
            self.per_base = None

