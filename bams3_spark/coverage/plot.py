"""Depth plots (``bams3 coverage --plot``): depth along a region or along references.

Each :class:`~bams3_spark.coverage.slices.DepthSlice` is reduced to bins as it
arrives (:meth:`CoveragePlot.add`), so plotting a whole genome keeps only a few
thousand numbers per reference and sample. The figure has one panel per
reference (or one for the region), one line per sample, genomic coordinates on
the x axis. matplotlib runs with the Agg backend (no display needed).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bams3_spark.coverage.slices import DepthSlice

#: Bins per reference panel, and the most points drawn for a region.
BINS = 1500
#: Regions up to this many bases are drawn base by base (steps).
PER_BASE_LIMIT = 5000
#: At most this many reference panels (the longest references with reads).
MAX_PANELS = 12


@dataclass
class Track:
    """One sample's binned depth along one reference (or region)."""

    sample: str
    rname: str
    ref_length: int
    start: int  # reference position of the first bin
    edges: npt.NDArray[np.int64]  # bin starts, relative; plus the end
    means: npt.NDArray[np.float64]
    has_reads: bool  # some base has depth > 0


def track(sl: DepthSlice, bins: int = BINS) -> Track:
    """Bin a depth slice for plotting (picklable: runs in coverage workers)."""
    d = sl.depth.depth
    n = len(d)
    if n == 0:
        return Track(sl.sample, sl.rname, sl.ref_length, sl.start, np.zeros(1, np.int64), np.zeros(0), False)
    covered = bool(d.any())
    if n <= PER_BASE_LIMIT:
        edges = np.arange(n + 1, dtype=np.int64)
        return Track(sl.sample, sl.rname, sl.ref_length, sl.start, edges, d.astype(np.float64), covered)
    width = max(1, math.ceil(n / bins))
    edges = np.concatenate((np.arange(0, n, width, dtype=np.int64), [n]))
    sums = np.add.reduceat(d.astype(np.int64), edges[:-1])
    return Track(sl.sample, sl.rname, sl.ref_length, sl.start, edges, sums / np.diff(edges), covered)


class CoveragePlot:
    """Collects binned depth of many samples and references; saves a PNG.

    Args:
        mode: Counting mode shown in the title (``mosdepth``, ``fast``, ``samtools``).
        region: The region text when the depth is of one region, for the title.
    """

    def __init__(self, mode: str = "mosdepth", region: str | None = None) -> None:
        self.mode = mode
        self.region = region
        self._tracks: dict[str, dict[str, Track]] = {}  # rname -> sample -> track
        self._lengths: dict[str, int] = {}
        self._samples: list[str] = []

    def add(self, sl: DepthSlice) -> None:
        """Bin one slice and add it (call for every slice of every sample)."""
        self.add_track(track(sl))

    def add_track(self, tr: Track) -> None:
        """Add one binned slice (from :func:`track`)."""
        if tr.sample not in self._samples:
            self._samples.append(tr.sample)
        self._lengths.setdefault(tr.rname, tr.ref_length)
        self._tracks.setdefault(tr.rname, {})[tr.sample] = tr

    def _panels(self) -> tuple[list[str], int]:
        # References where some sample has depth: filtered-out reads draw nothing.
        with_reads = [r for r, t in self._tracks.items() if any(tr.has_reads for tr in t.values())]
        if self.region is not None:
            return list(self._tracks), len(self._tracks)
        if len(with_reads) > MAX_PANELS:
            longest = set(sorted(with_reads, key=lambda r: -self._lengths[r])[:MAX_PANELS])
            return [r for r in with_reads if r in longest], len(with_reads)
        return with_reads, len(with_reads)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Draw and write the PNG.

        Raises:
            ValueError: If nothing was added, or no reference has reads.
            OSError: If the file cannot be written.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        panels, total = self._panels()
        if not panels:
            raise ValueError("nothing to plot: no reference has depth")
        fig, axes = plt.subplots(
            len(panels), 1, figsize=(12, 1.2 + 2.6 * len(panels)), squeeze=False, constrained_layout=True
        )
        colors = plt.get_cmap("tab10")
        for ax, rname in zip(axes[:, 0], panels, strict=True):
            span_end = 0
            span_start = None
            for i, sample in enumerate(self._samples):
                tr = self._tracks[rname].get(sample)
                if tr is None or len(tr.means) == 0:
                    continue
                x = tr.start + tr.edges
                y = np.append(tr.means, tr.means[-1])
                ax.step(x, y, where="post", color=colors(i % 10), linewidth=1.1, label=sample)
                span_start = x[0] if span_start is None else min(span_start, x[0])
                span_end = max(span_end, int(x[-1]))
            if span_start is None:
                continue
            span = span_end - span_start
            unit, scale = ("Mb", 1e6) if span >= 5e6 else ("kb", 1e3) if span >= 5e3 else ("bp", 1.0)

            def fmt(v: float, _pos: int, scale: float = scale) -> str:
                return f"{v / scale:,g}" if scale > 1 else f"{int(v):,}"

            ax.xaxis.set_major_formatter(FuncFormatter(fmt))
            ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=scale == 1.0))
            ax.set_xlim(span_start, span_end)
            ax.set_ylim(bottom=0)
            ax.set_xlabel(f"Position on {rname} ({unit})")
            ax.set_ylabel("Depth")
            ax.grid(True, alpha=0.3)
            ax.set_title(rname if self.region is None else self.region, loc="left", fontsize=10)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        if handles:
            axes[0, 0].legend(handles, labels, loc="upper right", fontsize=9, title="sample")
        rules = {"mosdepth": "mosdepth rules", "fast": "mosdepth -x rules",
                 "samtools": "samtools depth rules"}[self.mode]
        if self.region:
            what = f"region {self.region}"
        elif total > len(panels):
            what = f"{len(panels)} of {total} references with reads"
        else:
            what = "references with reads"
        tracks = [t for p in panels for t in self._tracks[p].values()]
        per_base = all(len(t.means) == 0 or np.all(np.diff(t.edges) == 1) for t in tracks)
        binned = "" if per_base else f"; mean depth in up to {BINS:,} bins per panel"
        fig.suptitle(f"Read depth of {', '.join(self._samples)} ({what}; {rules}{binned})", fontsize=12)
        fig.savefig(os.fspath(path), dpi=110)
        plt.close(fig)


__all__ = ["BINS", "CoveragePlot", "Track", "track"]
