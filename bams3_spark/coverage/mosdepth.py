"""mosdepth's output files, written one reference at a time (text identical to mosdepth 0.3.3's).

The scans of a reference's depth (:meth:`MosdepthPlan.summarize`) can run in a
worker process; :class:`MosdepthWriter` then writes the small results in
``@SQ`` order. The same writer serves ``--region`` runs, whose files describe
one region (mosdepth has no such option; see :class:`MosdepthWriter`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

import numpy as np
import numpy.typing as npt

from bams3_spark.coverage.depth import ReferenceDepth
from bams3_spark.coverage.options import ByArg, resolve_by
from bams3_spark.coverage.stats import (
    REGION_DIST_WINDOW_CAP,
    UINT32_MAX,
    Regions,
    RegionStats,
    bed_regions,
    dist_counts,
    group_bed,
    per_base_text,
    region_multiplicity,
    region_stats,
    sum_into,
    window_regions,
)
from bams3_spark.io.bed import BedRegion
from bams3_spark.io.bgzf import BgzfWriter

logger = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

SUMMARY_HEADER = "chrom\tlength\tbases\tmean\tmin\tmax\n"


@dataclass
class Stat:
    """mosdepth's ``depth_stat``; its zero value has ``min_depth`` 0."""

    length: int = 0
    bases: int = 0
    min: int = 0
    max: int = 0

    def __add__(self, other: Stat) -> Stat:
        return Stat(self.length + other.length, self.bases + other.bases,
                    min(self.min, other.min), max(self.max, other.max))

    @classmethod
    def cleared(cls) -> Stat:
        """The value mosdepth clears a stat to: no base seen yet."""
        return cls(0, 0, UINT32_MAX, 0)


def window_mean_counts(means: F64) -> I64:
    """The region distribution's counts of ``--by N`` windows with these means.

    mosdepth 0.3.3 counts one entry per window at its mean rounded by Nim's
    ``toInt`` (``int(mean + 0.5)``), capped at 999 (the last slot of its
    1000-entry array). Found by comparison with the binary.
    """
    rounded = np.trunc(means + 0.5).astype(np.int64)
    return np.bincount(np.minimum(rounded[rounded >= 0], REGION_DIST_WINDOW_CAP)).astype(np.int64)


@dataclass(frozen=True)
class ReferenceSummary:
    """What :class:`MosdepthWriter` writes for one reference (or region), computed in advance.

    Made by :meth:`MosdepthPlan.summarize` (the costly scans of the per-base
    array), possibly in a worker process; written by
    :meth:`MosdepthWriter.add_summary`. Picklable and small (no per-base array).
    """

    name: str
    skipped: bool  # BED-only run and no region on this reference: mosdepth skips it
    found: bool  # the reference has records (mosdepth prints summary rows)
    region_text: str
    threshold_text: str
    region_stat: Stat | None  # added to the chromosome's region stat
    region_counts: I64
    chrom_counts: I64
    chrom_stat: Stat
    per_base_text: bytes | None


@dataclass(frozen=True)
class MosdepthPlan:
    """The picklable configuration of a :class:`MosdepthWriter` (see :meth:`MosdepthWriter.plan`).

    Attributes:
        window: ``--by N`` window size, or 0.
        bed: BED regions by chromosome (``--by BED``), or None.
        thresholds: Sorted ``--thresholds``.
        per_base: Whether the per-base text is made.
        precision: Decimal places of means and distributions.
        region: The files describe one region (``bams3 coverage --region``).
    """

    window: int
    bed: Mapping[str, tuple[BedRegion, ...]] | None
    thresholds: tuple[int, ...]
    per_base: bool
    precision: int
    region: bool = False

    @property
    def has_regions(self) -> bool:
        """Windows or BED regions are requested."""
        return self.window > 0 or self.bed is not None

    def fmt(self, value: float) -> str:
        """A mean or fraction as mosdepth prints it: Nim's ``formatFloat(ffDecimal)``, C's ``%.Nf``."""
        return f"{value:.{self.precision}f}"

    def summarize(
        self, rd: ReferenceDepth, *, regions: Sequence[BedRegion] = (), offset: int = 0
    ) -> ReferenceSummary:
        """Compute everything the writer prints for one reference, or for one region.

        Args:
            rd: The depth of a whole reference; with :attr:`region`, the depth
                of the region, in region coordinates (position 0 is ``offset``).
            regions: With :attr:`region`, the windows or BED regions to report,
                in region coordinates (the plan's apply to whole references).
            offset: With :attr:`region`, the reference position of ``rd``'s first base.
        """
        empty = np.zeros(0, dtype=np.int64)
        text = per_base_text(rd, offset) if self.per_base else None
        if self.region:
            reg = bed_regions(regions, rd.length, rd.name) if self.has_regions else None
            region_text, threshold_text, _ = self.region_lines(rd, reg, offset)
            d = rd.depth
            n = rd.length
            stat = Stat(n, int(d.sum(dtype=np.int64)), int(d.min()) if n else 0, int(d.max()) if n else 0)
            return ReferenceSummary(
                rd.name, False, True, region_text, threshold_text, None, empty, empty, stat, text
            )

        bed_here: Sequence[BedRegion] | None = None
        if self.bed is not None:
            bed_here = self.bed.get(rd.name)
            # mosdepth skips the reference entirely (no summary or dist rows)
            # when nothing but BED regions is requested and it has none.
            if not self.per_base and not self.thresholds and bed_here is None:
                return ReferenceSummary(rd.name, True, False, "", "", None, empty, empty, Stat(), None)
        found = rd.has_records
        arr = rd.padded
        length = rd.length

        region_counts = empty
        region_stat = None
        reg = None
        if self.has_regions:
            reg = (
                window_regions(length, self.window) if self.window
                else bed_regions(bed_here or [], length, rd.name)
            )
        region_text, threshold_text, stats = self.region_lines(rd, reg, 0)
        if reg is not None and stats is not None and found and len(reg.starts):
            # Empty regions have min uint32.high and max 0, as in mosdepth.
            region_stat = Stat(
                int(stats.lengths.sum()), int(stats.sums.sum()), int(stats.mins.min()), int(stats.maxs.max()),
            )
            if self.window:
                region_counts = window_mean_counts(stats.means)
            else:
                region_counts = dist_counts(arr[: length + 1], region_multiplicity(rd, reg))

        chrom_counts = empty
        chrom_stat = Stat()
        if found:
            chrom_counts = dist_counts(arr[:length])
            d = arr[:length]
            chrom_stat = Stat(
                length, int(d.sum(dtype=np.int64)),
                int(d.min()) if length else UINT32_MAX, int(d.max()) if length else 0,
            )
        return ReferenceSummary(
            rd.name, False, found, region_text, threshold_text, region_stat, region_counts, chrom_counts,
            chrom_stat, text,
        )

    def region_lines(
        self, rd: ReferenceDepth, reg: Regions | None, offset: int
    ) -> tuple[str, str, RegionStats | None]:
        """The ``regions.bed.gz`` and ``thresholds.bed.gz`` lines of ``reg``, shifted by ``offset``."""
        if reg is None:
            return "", "", None
        # Only printed: means need not be mosdepth's floats to the last bit (region_stats).
        stats = region_stats(rd, reg, self.thresholds, self.precision)
        starts = (reg.starts + offset).tolist()
        ends = (reg.ends + offset).tolist()
        means = [self.fmt(m) for m in stats.means.tolist()]
        region_text = "".join(
            f"{rd.name}\t{s}\t{e}\t{nm}\t{m}\n" if nm else f"{rd.name}\t{s}\t{e}\t{m}\n"
            for s, e, nm, m in zip(starts, ends, reg.names, means, strict=True)
        )
        threshold_text = ""
        if self.thresholds:
            threshold_text = "".join(
                f"{rd.name}\t{s}\t{e}\t{nm or 'unknown'}\t" + "\t".join(map(str, row)) + "\n"
                for s, e, nm, row in zip(starts, ends, reg.names, stats.thresholds.tolist(), strict=True)
            )
        return region_text, threshold_text, stats


class MosdepthWriter:
    """Write mosdepth's output files, one reference at a time.

    Feed :class:`ReferenceDepth` objects in ``@SQ`` order, *including*
    references without any record (:meth:`ReferenceDepth.empty`), exactly as
    mosdepth iterates the BAM header; then call :meth:`close`. Only one
    reference's depth is held at a time.

    Files (text identical to mosdepth 0.3.3 after ``zcat``; the ``.csi``
    indexes mosdepth also writes are not produced):

    * ``PREFIX.per-base.bed.gz`` unless ``per_base`` is False (``-n``),
    * ``PREFIX.regions.bed.gz`` and ``PREFIX.mosdepth.region.dist.txt`` with
      ``by``,
    * ``PREFIX.thresholds.bed.gz`` with ``thresholds``,
    * ``PREFIX.mosdepth.summary.txt`` and ``PREFIX.mosdepth.global.dist.txt``.

    With ``region`` (``bams3 coverage --region``), the summaries added describe
    regions (:meth:`MosdepthPlan.summarize` with ``regions`` and ``offset``):
    the windows (or BED regions) overlapping them, clipped, and a summary row
    per region then a ``total`` row; no distribution files.
    """

    def __init__(
        self,
        prefix: str | os.PathLike[str],
        *,
        by: ByArg = None,
        thresholds: Sequence[int] | None = None,
        per_base: bool = True,
        precision: int = 2,
        region: bool = False,
    ) -> None:
        """Open the output files.

        Args:
            prefix: Output prefix (``mosdepth <prefix>``).
            by: Window size (int or digit string), BED path, or BED regions
                (a sequence or a mapping by chromosome); None for no regions.
            thresholds: ``--thresholds`` values; requires ``by``.
            per_base: Write the per-base file (False = ``--no-per-base``).
            precision: Decimal places of means and distributions (mosdepth's
                ``MOSDEPTH_PRECISION``, default 2).
            region: The files describe regions, not whole references (see above).
        """
        self.prefix = str(prefix)
        self._thresholds = sorted(int(t) for t in thresholds) if thresholds else []
        if self._thresholds and by is None:
            raise ValueError("thresholds can only be used when by (windows or BED regions) is given")
        if not isinstance(precision, int) or precision < 0:
            raise ValueError(f"precision must be a non-negative integer; got {precision!r}")
        spec = resolve_by(by)
        self._window = spec if isinstance(spec, int) else 0
        self._bed = None if spec is None or isinstance(spec, int) else group_bed(spec)
        self._has_regions = spec is not None
        self._per_base = per_base
        self._region = region
        self._plan = MosdepthPlan(
            self._window,
            None if self._bed is None else {k: tuple(v) for k, v in self._bed.items()},
            tuple(self._thresholds),
            per_base,
            precision,
            region,
        )

        self._base = BgzfWriter(self.prefix + ".per-base.bed.gz", level=1) if per_base else None
        self._regions = BgzfWriter(self.prefix + ".regions.bed.gz") if self._has_regions else None
        self._thr = BgzfWriter(self.prefix + ".thresholds.bed.gz", level=1) if self._thresholds else None
        if self._thr is not None:
            header = "#chrom\tstart\tend\tregion" + "".join(f"\t{t}X" for t in self._thresholds)
            self._thr.write(header + "\n")
        self._summary = open(self.prefix + ".mosdepth.summary.txt", "w", encoding="utf-8")
        self._summary.write(SUMMARY_HEADER)
        self._gdist = (
            None if region else open(self.prefix + ".mosdepth.global.dist.txt", "w", encoding="utf-8")
        )
        self._rdist = (
            open(self.prefix + ".mosdepth.region.dist.txt", "w", encoding="utf-8")
            if self._has_regions and not region else None
        )
        # mosdepth's global stat starts zeroed (so its total min is 0); a
        # region run's total is of the regions added.
        self._global_stat = Stat.cleared() if region else Stat()
        self._global_region_stat = Stat()
        # mosdepth's chrom_region_stat starts zeroed (min 0) and is only
        # cleared after the first reference with records: its first _region
        # row therefore always has min 0. Reproduced.
        self._chrom_region_stat = Stat()
        self._global_dist = np.zeros(0, dtype=np.int64)
        self._region_dist = np.zeros(0, dtype=np.int64)
        self._closed = False

    def __enter__(self) -> MosdepthWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_summary(self, name: str, stat: Stat) -> None:
        mean = float(stat.bases) / float(stat.length) if stat.length > 0 else 0.0
        smin = 0 if stat.min == UINT32_MAX else stat.min
        fmt = self._plan.fmt
        self._summary.write(f"{name}\t{stat.length}\t{stat.bases}\t{fmt(mean)}\t{smin}\t{stat.max}\n")

    def _write_dist(self, fh: IO[str] | None, name: str, counts: I64) -> None:
        total = int(counts.sum())
        if fh is None or total < 1:
            return
        rev = counts[::-1].astype(np.float64)
        # mosdepth: cum += float64(v) / float64(sum), highest depth first.
        cum = np.cumsum(rev / float(total))
        depth = np.arange(len(counts) - 1, -1, -1)
        show = ~((depth > 300) & (counts[::-1] == 0)) & ~(cum < 8e-5)
        rows = zip(depth[show].tolist(), cum[show].tolist(), strict=True)
        fmt = self._plan.fmt
        fh.write("".join(f"{name}\t{d}\t{fmt(c)}\n" for d, c in rows))

    def plan(self) -> MosdepthPlan:
        """The writer's picklable configuration, to summarize references elsewhere.

        ``writer.add(rd)`` is ``writer.add_summary(writer.plan().summarize(rd))``;
        the summary can be computed in another process (the heavy part), the
        files written here, in ``@SQ`` order.
        """
        return self._plan

    def add(self, rd: ReferenceDepth) -> None:
        """Write the outputs of one reference (call in ``@SQ`` order)."""
        self.add_summary(self._plan.summarize(rd))

    def add_summary(self, s: ReferenceSummary) -> None:
        """Write the outputs of one reference from its summary (call in ``@SQ`` order)."""
        if self._closed:
            raise ValueError("MosdepthWriter is closed")
        if self._bed is not None and not self._region:
            self._bed.pop(s.name, None)
        if s.skipped:
            return
        if self._regions is not None:
            self._regions.write(s.region_text)
        if self._thr is not None:
            self._thr.write(s.threshold_text)
        if self._base is not None and s.per_base_text is not None:
            self._base.write(s.per_base_text)
        if self._region:
            self._global_stat = self._global_stat + s.chrom_stat
            self._write_summary(s.name, s.chrom_stat)
            return
        chrom_region_stat = self._chrom_region_stat
        if s.region_stat is not None:
            chrom_region_stat = chrom_region_stat + s.region_stat
        if s.found:
            self._global_stat = self._global_stat + s.chrom_stat
            self._write_summary(s.name, s.chrom_stat)
            if self._has_regions:
                self._write_summary(s.name + "_region", chrom_region_stat)
            self._global_region_stat = self._global_region_stat + chrom_region_stat
            self._chrom_region_stat = Stat.cleared()

        self._write_dist(self._gdist, s.name, s.chrom_counts)
        self._write_dist(self._rdist, s.name, s.region_counts)
        if s.found:
            self._global_dist = sum_into(self._global_dist, s.chrom_counts)
            if self._has_regions:
                self._region_dist = sum_into(self._region_dist, s.region_counts)

    def close(self) -> None:
        """Write the totals and close every file."""
        if self._closed:
            return
        self._closed = True
        self._write_summary("total", self._global_stat)
        if self._has_regions and not self._region:
            self._write_summary("total_region", self._global_region_stat)
        self._write_dist(self._gdist, "total", self._global_dist)
        self._write_dist(self._rdist, "total", self._region_dist)
        if self._bed and not self._region:
            for chrom, regs in self._bed.items():
                logger.warning(
                    "[mosdepth] warning chromosome:%s from bed with %d regions not found", chrom, len(regs),
                )
        for w in (self._regions, self._thr, self._base):
            if w is not None:
                w.close()
        for fh in (self._summary, self._gdist, self._rdist):
            if fh is not None:
                fh.close()

    def paths(self) -> list[str]:
        """Return the paths of the files this writer produces."""
        if self._region:
            names = [".mosdepth.summary.txt"] + ([".regions.bed.gz"] if self._has_regions else [])
        else:
            names = [".mosdepth.global.dist.txt", ".mosdepth.summary.txt"]
            if self._has_regions:
                names += [".mosdepth.region.dist.txt", ".regions.bed.gz"]
        if self._thresholds:
            names.append(".thresholds.bed.gz")
        if self._per_base:
            names.append(".per-base.bed.gz")
        return [self.prefix + n for n in names]


def write_mosdepth_outputs(
    prefix: str | os.PathLike[str],
    depths: Iterable[ReferenceDepth],
    *,
    by: ByArg = None,
    thresholds: Sequence[int] | None = None,
    per_base: bool = True,
    precision: int = 2,
) -> list[str]:
    """Write mosdepth's files for references given in ``@SQ`` order.

    Args:
        prefix: Output prefix.
        depths: One :class:`ReferenceDepth` per ``@SQ`` line, in header order
            (may be a generator; consumed once).
        by: See :class:`MosdepthWriter`.
        thresholds: See :class:`MosdepthWriter`.
        per_base: See :class:`MosdepthWriter`.
        precision: See :class:`MosdepthWriter`.

    Returns:
        Paths of the files written.
    """
    with MosdepthWriter(prefix, by=by, thresholds=thresholds, per_base=per_base, precision=precision) as w:
        for rd in depths:
            w.add(rd)
    return w.paths()
