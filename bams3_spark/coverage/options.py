"""Coverage options: counting modes and read filters, the columns each mode reads, ``by`` arguments."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

from bams3_spark.exceptions import InvalidArgumentError
from bams3_spark.format.flags import DEFAULT_EXCLUDE
from bams3_spark.io.bed import BedRegion, read_mosdepth_bed

#: Counting modes accepted by :class:`CoverageOptions`.
MODES: tuple[str, ...] = ("mosdepth", "fast", "samtools")

#: UNMAP | SECONDARY | QCFAIL | DUP: the default of ``mosdepth -F`` and the
#: default filter of ``samtools depth``.
DEFAULT_FLAG_EXCLUDE = DEFAULT_EXCLUDE

#: Columns the engine reads in each mode (for column projection).
FAST_COLUMNS: tuple[str, ...] = ("flag", "pos", "end", "mapq")
CIGAR_COLUMNS: tuple[str, ...] = ("flag", "pos", "end", "mapq", "cigar")
MATE_COLUMNS: tuple[str, ...] = (
    "qname", "flag", "pos", "end", "mapq", "cigar", "rnext", "pnext",
)


def required_columns(options: CoverageOptions) -> tuple[str, ...]:
    """Return the record columns :meth:`~bams3_spark.coverage.depth.DepthAccumulator.add` needs.

    Args:
        options: The coverage options.

    Returns:
        Column names in schema order.
    """
    if options.mode == "fast":
        return FAST_COLUMNS
    if options.mode == "samtools":
        return CIGAR_COLUMNS
    return MATE_COLUMNS


@dataclass(frozen=True)
class CoverageOptions:
    """How reads are filtered and counted.

    Attributes:
        mode: ``"mosdepth"`` (default), ``"fast"`` (``mosdepth -x``) or
            ``"samtools"`` (``samtools depth``).
        mapq: Reads with a MAPQ below this are ignored (``-Q`` of both tools).
        flag_exclude: Reads with any of these FLAG bits are ignored (mosdepth
            ``-F``; for samtools this is the final filter after ``-g``/``-G``).
        flag_include: If non-zero, only reads with at least one of these bits
            are counted (mosdepth ``-i``).
        count_deletions: Count ``D`` CIGAR operations (``samtools depth -J``);
            only valid with mode ``"samtools"``.
    """

    mode: str = "mosdepth"
    mapq: int = 0
    flag_exclude: int = DEFAULT_FLAG_EXCLUDE
    flag_include: int = 0
    count_deletions: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"coverage mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        for name, value, high in (
            ("mapq", self.mapq, 255),
            ("flag_exclude", self.flag_exclude, 0xFFFF),
            ("flag_include", self.flag_include, 0xFFFF),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an integer; got {value!r}")
            if not 0 <= int(value) <= high:
                raise ValueError(f"{name} must be between 0 and {high}; got {value}")
        if not isinstance(self.count_deletions, bool):
            raise ValueError(f"count_deletions must be a bool; got {self.count_deletions!r}")
        if self.count_deletions and self.mode != "samtools":
            raise ValueError("count_deletions (samtools depth -J) requires mode 'samtools'")


def coverage_options(
    *, fast_mode: bool = False, samtools: bool = False, mapq: int = 0, flag_exclude: int | None = None,
    flag_include: int = 0, count_deletions: bool = False,
) -> CoverageOptions:
    """Counting options from command-line flags (mosdepth's by default).

    Raises:
        InvalidArgumentError: For incompatible or out-of-range values.
    """
    if fast_mode and samtools:
        raise InvalidArgumentError("--fast-mode and --samtools are exclusive")
    if count_deletions and not samtools:
        raise InvalidArgumentError("--count-deletions needs --samtools (samtools depth -J)")
    mode = "fast" if fast_mode else "samtools" if samtools else "mosdepth"
    try:
        return CoverageOptions(
            mode=mode, mapq=mapq, flag_exclude=DEFAULT_FLAG_EXCLUDE if flag_exclude is None else flag_exclude,
            flag_include=flag_include, count_deletions=count_deletions,
        )
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None


#: A ``by`` argument: a window size (int or digit string), a BED file, BED
#: regions (a sequence, or a mapping by chromosome), or None for per-base depth.
ByArg = Union[int, str, "os.PathLike[str]", Sequence[BedRegion], Mapping[str, Sequence[BedRegion]], None]  # noqa: UP007


def resolve_by(by: ByArg) -> int | list[BedRegion] | None:
    """Normalise a ``by`` argument: a window size, BED regions (file order), or None.

    Raises:
        InvalidArgumentError: For a non-positive window or an unreadable BED.
        FileNotFoundError: For a missing BED file.
    """
    if by is None:
        return None
    if isinstance(by, bool):
        raise InvalidArgumentError("by must be a window size or a BED file")
    if isinstance(by, (int, np.integer)):
        if by <= 0:
            raise InvalidArgumentError(f"window size must be positive; got {by}")
        return int(by)
    if isinstance(by, str) and by.strip().isdigit():
        return resolve_by(int(by))
    if isinstance(by, (str, os.PathLike)):
        try:
            return read_mosdepth_bed(by)
        except FileNotFoundError:
            raise FileNotFoundError(f"{os.fspath(by)}: no such BED file") from None
        except UnicodeDecodeError:
            raise InvalidArgumentError(f"{os.fspath(by)}: not a BED text file") from None
        except ValueError as exc:
            raise InvalidArgumentError(f"{os.fspath(by)}: {exc}") from None
    if isinstance(by, Mapping):
        return [r for regions in by.values() for r in regions]
    return list(by)
