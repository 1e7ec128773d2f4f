"""htslib's overlap rule, stated once: the vectorized mask agrees with the one-record rule."""

from __future__ import annotations

import random

import numpy as np

from bams3_spark.format.regions import Region, merge_intervals, overlap_mask


def test_merge_intervals_is_samtools_bed_unify() -> None:
    assert merge_intervals([(10, 20), (0, 5), (20, 30), (4, 6), (40, 41)]) == ((0, 6), (10, 30), (40, 41))
    assert merge_intervals([]) == ()


def test_overlap_mask_agrees_with_region_overlaps() -> None:
    rng = random.Random(3)
    pos = np.array([rng.randint(1, 2_000) for _ in range(3_000)], dtype=np.int64)
    end = pos + np.array([rng.choice((0, 1, 50, 150, 900)) for _ in range(len(pos))], dtype=np.int64)
    for _ in range(50):
        intervals = []
        for _ in range(rng.randint(1, 6)):  # unsorted, overlapping, touching: as users give them
            s = rng.randint(0, 2_100)
            intervals.append((s, s + rng.randint(1, 400)))
        expected = [
            any(Region("c", s, e).overlaps(int(p), int(q)) for s, e in intervals)
            for p, q in zip(pos, end, strict=True)
        ]
        assert overlap_mask(pos, end, intervals).tolist() == expected, intervals
