"""Region strings, parsed exactly as ``samtools view`` parses them.

Glossary (used everywhere in the package): a *region string* is samtools'
1-based, inclusive ``NAME[:START[-END]]``; a :class:`Region` holds the same
interval 0-based and half-open (``start``, ``end``), like BED and pysam.
``*`` is the pseudo-region of unplaced unmapped reads.

The parsing rules follow htslib's ``hts_parse_region`` (samtools convention,
thousands separators allowed): ``chr1`` is the whole reference, ``chr1:100``
runs from 100 to the reference end, ``chr1:-100`` is ``chr1:1-100``,
``chr1:100-`` runs to the end, and names containing colons
(``HLA-DRB1*15:01:01:01``) are resolved against the header, with
``{NAME}:START-END`` braces to remove ambiguity.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bams3_spark.exceptions import RegionError

UNPLACED = "*"
POS_MAX = (1 << 63) - 1

_DECIMAL_RE = re.compile(r"\s*([+-]?)([0-9,]*)(?:\.([0-9]*))?(?:([eE])([+-]?[0-9]*)|([kKmMgG]))?")


@dataclass(frozen=True, order=True)
class Region:
    """A 0-based, half-open interval on one reference.

    Attributes:
        rname: Reference name, or ``*`` for unplaced unmapped reads.
        start: 0-based first base.
        end: 0-based exclusive end, clamped to the reference length (see
            :func:`parse_region`).
    """

    rname: str
    start: int
    end: int

    @property
    def unplaced(self) -> bool:
        """True for the ``*`` pseudo-region."""
        return self.rname == UNPLACED

    def __str__(self) -> str:
        if self.unplaced:
            return UNPLACED
        name = f"{{{self.rname}}}" if ":" in self.rname else self.rname
        return f"{name}:{self.start + 1}-{self.end}"

    def overlaps(self, pos: int, end: int) -> bool:
        """Return whether a record with 1-based ``pos``..``end`` overlaps this region.

        This is htslib's rule: a record matches when its aligned span
        (``bam_endpos``; unmapped reads count as one base) overlaps the region.
        """
        return pos <= self.end and end > self.start


def _wrap64(n: int) -> int:
    """Return ``n`` as C's ``long long`` arithmetic leaves it (two's complement wrap)."""
    return ((n + (1 << 63)) % (1 << 64)) - (1 << 63)


def _wrap32(n: int) -> int:
    return ((n + (1 << 31)) % (1 << 32)) - (1 << 31)


def _parse_decimal(text: str) -> tuple[int, str, int]:
    """Parse like htslib's ``hts_parse_decimal`` with thousands separators.

    htslib accumulates digits in a 64-bit ``long long`` (and the exponent in
    an ``int``) without overflow checks; the wraparound is reproduced, so
    huge coordinates select what samtools selects, and an exponent such as
    ``1e999999999`` costs nothing (``10**64`` is 0 modulo ``2**64``).

    Returns:
        (value, rest of the string, number of digits read).
    """
    m = _DECIMAL_RE.match(text)
    assert m is not None  # the pattern can match the empty string
    sign, whole, frac, e_mark, e_val, suffix = m.groups()
    int_digits = whole.replace(",", "")
    frac = frac or ""
    digits = len(int_digits) + len(frac)
    if digits == 0:
        return 0, text, 0
    n = _wrap64(int(int_digits + frac))
    exp = 0
    if e_mark:
        e_digits = e_val.lstrip("+-")
        exp = _wrap32(int(e_digits)) if e_digits else 0
        if e_val.startswith("-"):
            exp = _wrap32(-exp)
    elif suffix:
        exp = {"k": 3, "m": 6, "g": 9}[suffix.lower()]
    exp = _wrap32(exp - len(frac))
    if exp > 0:
        n = 0 if exp >= 64 else _wrap64(n * 10**exp)
    else:
        for _ in range(min(-exp, 25)):  # n is 0 after at most 20 divisions
            n = abs(n) // 10 * (-1 if n < 0 else 1)  # C division truncates toward 0
    return (_wrap64(-n) if sign == "-" else n), text[m.end() :], digits


def parse_region(text: str, lengths: Mapping[str, int], clamp: bool = True) -> Region:
    """Parse one samtools region string against the references of a dataset.

    Args:
        text: The region, e.g. ``chr1:1,000-2,000`` or ``{HLA-A*01:01}:5-9``.
        lengths: Reference name to length, in header order.
        clamp: Clamp the interval to the reference length. With False the
            interval is htslib's own (``chr1`` is ``[0, 2**63 - 1)``), which
            matters for reads extending past the reference end: samtools
            finds them with a region past the end.

    Returns:
        The region, 0-based half-open (clamped to the reference length unless
        ``clamp`` is False).

    Raises:
        RegionError: If the string is malformed, the reference unknown, the
            name ambiguous, or the end before the start.
    """
    if text == UNPLACED:
        return Region(UNPLACED, 0, 0)
    if not text:
        raise RegionError("empty region")
    quoted = text.startswith("{")
    if quoted:
        close = text.find("}")
        if close < 0:
            raise RegionError(f"region {text!r}: mismatched braces")
        if text[close + 1 : close + 2] == ":":
            name, coords = text[1:close], text[close + 2 :]
        else:
            # htslib drops the first and the last character: "{weird{name}}"
            # names "weird{name}", and "{chr1}x" names "chr1}".
            name, coords = text[1:-1], None
    else:
        colon = text.rfind(":")
        if colon < 0 or text in lengths:
            if colon >= 0 and text[:colon] in lengths:
                raise RegionError(
                    f"region {text!r} is ambiguous: use {{{text}}} or {{{text[:colon]}}}{text[colon:]}"
                )
            name, coords = text, None
        else:
            name, coords = text[:colon], text[colon + 1 :]
    if name not in lengths:
        raise RegionError(f"region {text!r}: unknown reference {name!r}")
    length = lengths[name] if clamp else POS_MAX
    if coords is None:
        return Region(name, 0, length)
    start, end = _parse_coords(text, coords)
    # Past the reference end is not an error for samtools: it matches nothing.
    start = min(start, length)
    return Region(name, start, max(start, min(end, length)))


def _parse_coords(text: str, coords: str) -> tuple[int, int]:
    # The coordinate part of htslib's hts_parse_region, step by step.
    value, rest, _ = _parse_decimal(coords)
    beg = _wrap64(value - 1)
    if beg < 0:
        if beg != -1 and rest.startswith("-") and coords:
            raise RegionError(f"region {text!r}: coordinates must be > 0")
        if rest == "" or rest[0].isdigit() or rest[0] == ",":
            # "chr1:-100" is "chr1:1-100".
            return 0, (POS_MAX if beg == -1 else _wrap64(-(beg + 1)))
        if beg < -1:
            raise RegionError(f"region {text!r}: unexpected {rest!r}")
        beg = 0  # "chr1:0-0": htslib's iterator clamps a start of -1 to 0
    if rest == "":
        end = POS_MAX
    elif rest.startswith("-"):
        end, tail, _ = _parse_decimal(rest[1:])
        if tail:
            raise RegionError(f"region {text!r}: unexpected {tail!r} after the end")
    else:
        raise RegionError(f"region {text!r}: unexpected {rest!r}")
    if end == 0:
        end = POS_MAX  # "chr1:100-" runs to the end
    if beg >= end:
        raise RegionError(f"region {text!r}: end {end} is before start {beg + 1}")
    return beg, end


def merge_intervals(intervals: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sort and merge overlapping or touching intervals (samtools' ``bed_unify``).

    Records overlap the merged intervals exactly when they overlap one of the
    originals (a record covers a contiguous span).
    """
    merged: list[list[int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((s, e) for s, e in merged)


def overlap_mask(
    pos: npt.NDArray[np.int64], end: npt.NDArray[np.int64], intervals: Sequence[tuple[int, int]]
) -> npt.NDArray[np.bool_]:
    """Which records overlap any of the intervals: htslib's rule, vectorized (FORMAT.md §9).

    A record with 1-based ``pos`` and ``end`` (``bam_endpos``; unmapped placed
    reads cover one base) overlaps the 0-based half-open ``[s, e)`` when
    ``pos <= e`` and ``end > s``, as :meth:`Region.overlaps` says of one record.

    Args:
        pos: The records' ``pos`` column.
        end: The records' ``end`` column.
        intervals: 0-based half-open intervals, in any order.
    """
    p0 = pos - 1  # 0-based first base
    merged = intervals if _sorted_disjoint(intervals) else merge_intervals(intervals)
    if len(merged) == 1:
        s, e = merged[0]
        return (p0 < e) & (end > s)
    starts = np.fromiter((s for s, _ in merged), np.int64, len(merged))
    ends = np.fromiter((e for _, e in merged), np.int64, len(merged))
    # Disjoint and sorted intervals have sorted ends too: the first interval
    # ending after a record's start is the only one to check.
    idx = np.searchsorted(ends, p0, side="right")
    ok = idx < len(ends)
    hit = np.zeros(len(p0), dtype=bool)
    hit[ok] = starts[idx[ok]] < end[ok]
    return hit


def _sorted_disjoint(intervals: Sequence[tuple[int, int]]) -> bool:
    return all(intervals[i][1] <= intervals[i + 1][0] for i in range(len(intervals) - 1))
