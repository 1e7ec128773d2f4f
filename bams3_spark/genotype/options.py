"""Counting options of the genotyping engine: ``samtools mpileup``'s, by name and default.

Every option mirrors a ``samtools mpileup`` (1.16) option, with its default,
for runs without a reference and with BAQ off (``-B``):

* ``min_base_quality`` (``-Q``, 13): bases (and deletions, which samtools
  judges by the quality of the base after them) below it are not counted;
  applied after the mate-overlap adjustment.
* ``min_mapping_quality`` (``-q``, 0): reads with a lower MAPQ are skipped.
* ``exclude_flags`` (``--ff``, ``UNMAP,SECONDARY,QCFAIL,DUP``): reads with
  any of these bits are skipped. Unmapped reads are always skipped.
* ``require_flags`` (``--rf``, none): only reads with at least one of these bits.
* ``count_orphans`` (``-A``, off): by default reads that are paired but not
  in a proper pair are skipped, as samtools does.
* ``ignore_overlaps`` (``-x``, off): by default overlapping mates are counted
  once (htslib's overlap detection lowers the quality of one read of the pair).
* ``max_depth`` (``-d``, 8000): htslib stops adding reads that start at a
  position once that many are in its buffer; 0 for no limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from bams3_spark.exceptions import InvalidArgumentError
from bams3_spark.format.flags import DEFAULT_EXCLUDE

#: samtools' FLAG names (``samtools flags``), accepted by ``--ff``/``--rf``.
FLAG_NAMES = {
    "PAIRED": 0x1, "PROPER_PAIR": 0x2, "UNMAP": 0x4, "MUNMAP": 0x8, "REVERSE": 0x10,
    "MREVERSE": 0x20, "READ1": 0x40, "READ2": 0x80, "SECONDARY": 0x100, "QCFAIL": 0x200,
    "DUP": 0x400, "SUPPLEMENTARY": 0x800,
}

#: samtools mpileup's default ``-d``.
DEFAULT_MAX_DEPTH = 8000
#: samtools mpileup's default ``-Q``.
DEFAULT_MIN_BASE_QUALITY = 13


def parse_flags(text: str | int) -> int:
    """Parse a FLAG mask as samtools does: a number (decimal, ``0x`` hex, ``0`` octal) or names.

    Raises:
        InvalidArgumentError: For an unknown name or a value out of range.
    """
    if isinstance(text, int):
        value = text
    else:
        s = text.strip()
        try:
            value = int(s, 0)
        except ValueError:
            value = 0
            for name in s.split(","):
                bit = FLAG_NAMES.get(name.strip().upper())
                if bit is None:
                    raise InvalidArgumentError(
                        f"unknown FLAG name {name.strip()!r} in {text!r}; names are {','.join(FLAG_NAMES)}"
                    ) from None
                value |= bit
    if not 0 <= value <= 0xFFFF:
        raise InvalidArgumentError(f"FLAG value {text!r} is out of range 0..65535")
    return value


@dataclass(frozen=True)
class GenotypeOptions:
    """How reads and bases are counted (see the module docstring for each option)."""

    min_base_quality: int = DEFAULT_MIN_BASE_QUALITY
    min_mapping_quality: int = 0
    exclude_flags: int = DEFAULT_EXCLUDE
    require_flags: int = 0
    count_orphans: bool = False
    ignore_overlaps: bool = False
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        for name in ("min_base_quality", "min_mapping_quality", "max_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgumentError(f"{name} must be a non-negative integer; got {value!r}")
        for name in ("exclude_flags", "require_flags"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
                raise InvalidArgumentError(f"{name} must be a FLAG mask 0..65535; got {value!r}")

    @property
    def columns(self) -> list[str]:
        """The record columns the counting reads (mate columns only for the overlap rule)."""
        cols = ["flag", "pos", "mapq", "cigar", "seq", "qual"]
        if not self.ignore_overlaps:
            # htslib pairs mates by QNAME and skips pairs whose mate is on
            # another reference or far away (RNEXT, PNEXT, TLEN).
            cols += ["qname", "rnext", "pnext", "tlen"]
        return cols
