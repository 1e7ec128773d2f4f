"""Printed window means (region_stats with a precision) against mosdepth's sequential float sums.

The means the mosdepth writer prints come from exact integer sums except near
a rounding midpoint; whatever the path, they must print (at the precision,
and rounded to integers for the region distribution) exactly as the
sequential float sums do. Midpoint windows are built on purpose.
"""

from __future__ import annotations

import numpy as np
import pytest

from bams3_spark.coverage.depth import ReferenceDepth
from bams3_spark.coverage.mosdepth import window_mean_counts
from bams3_spark.coverage.stats import bed_regions, region_stats, window_regions
from bams3_spark.io.bed import BedRegion


def _depth(seed: int, length: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = rng.poisson(rng.uniform(0.01, 40), length).astype(np.int32)
    # Windows whose exact mean is a midpoint: 125 bases of depth 1 in 1000
    # (0.125 at two decimals), 500 of depth 1 (0.5, Nim's toInt), 5 of 1 in 100.
    d[:1000] = 0
    d[:125] = 1
    d[1000:2000] = 0
    d[1000:1500] = 1
    d[2000:2100] = 0
    d[2000:2005] = 1
    return d


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("window", [100, 1000, 777])
@pytest.mark.parametrize("precision", [0, 1, 2, 3])
def test_printed_means_print_as_sequential_sums(seed: int, window: int, precision: int) -> None:
    length = 250_003
    rd = ReferenceDepth("chr1", length, _depth(seed, length))
    reg = window_regions(length, window)
    exact = region_stats(rd, reg, ())
    printed = region_stats(rd, reg, (), precision)
    assert [f"{m:.{precision}f}" for m in printed.means] == [f"{m:.{precision}f}" for m in exact.means]
    assert window_mean_counts(printed.means).tolist() == window_mean_counts(exact.means).tolist()
    assert printed.sums.tolist() == exact.sums.tolist()
    assert printed.mins.tolist() == exact.mins.tolist()
    assert printed.maxs.tolist() == exact.maxs.tolist()


def test_printed_means_of_bed_regions_and_negative_depths() -> None:
    length = 50_000
    d = _depth(7, length)
    d[30_000:30_010] = -3  # mosdepth's over-subtraction can leave negative depth
    rd = ReferenceDepth("chr1", length, d)
    spans = ((0, 1000), (1000, 1000), (29_990, 40), (40_000, 8))
    regions = [BedRegion("chr1", s, s + n, "") for s, n in spans]
    reg = bed_regions(regions + [BedRegion("chr1", 10, 10, "")], length, "chr1")
    exact = region_stats(rd, reg, ())
    printed = region_stats(rd, reg, (), 2)
    assert [f"{m:.2f}" for m in printed.means] == [f"{m:.2f}" for m in exact.means]
    assert printed.sums.tolist() == exact.sums.tolist()
