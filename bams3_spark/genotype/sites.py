"""Sites to genotype: every base of a BED file's intervals, or the records of a VCF (REF/ALT kept).

* BED (samtools' ``bed_read`` rules, :func:`bams3_spark.io.bed.iter_samtools_bed`):
  0-based half-open intervals, each base a site; overlapping intervals give
  each base once.
* VCF or VCF.gz (by name, or by a ``##fileformat=VCF`` first line): each
  record is a site at 1-based POS with its ID, REF and ALT; records at the
  same position stay separate sites. Only the first five columns are read,
  line by line, so that a bad line is reported with its number.

Sites must be sorted: each reference's sites together, positions not
decreasing. Anything else is one error naming the file and line.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bams3_spark.exceptions import RegionError
from bams3_spark.io.bed import iter_samtools_bed
from bams3_spark.io.storage import storage_for_file

I64 = npt.NDArray[np.int64]

_BASES = re.compile(r"[ACGTNacgtn]+")
_SYMBOLIC = re.compile(r"<[^<>,\s]+>")
_BREAKEND = re.compile(r"[ACGTNacgtn.]*[\[\]][^\s,]*|\.[ACGTNacgtn]+|[ACGTNacgtn]+\.")
_VCF_SUFFIXES = (".vcf", ".vcf.gz", ".vcf.bgz", ".vcf.bgzf")


class SitesError(RegionError):
    """A sites file that cannot be used (malformed, unsorted, unknown reference)."""


@dataclass
class Sites:
    """Sites in file order, grouped by reference.

    Attributes:
        url: The file they were read from.
        vcf: Whether they come from a VCF (then ``ident``, ``ref``, ``alt`` are set).
        chroms: Reference of each group, in file order.
        groups: ``[start, end)`` site indexes of each group.
        pos: 0-based position of each site.
        lines: Line number of each site in the file.
        ident: VCF ID of each site (``.`` if none).
        ref: VCF REF of each site.
        alt: VCF ALT alleles of each site (empty for ``.``).
    """

    url: str
    vcf: bool
    chroms: list[str] = field(default_factory=list)
    groups: list[tuple[int, int]] = field(default_factory=list)
    pos: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lines: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ident: list[str] = field(default_factory=list)
    ref: list[str] = field(default_factory=list)
    alt: list[tuple[str, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pos)

    def chrom_of(self) -> list[str]:
        """Reference name of every site."""
        out: list[str] = []
        for name, (lo, hi) in zip(self.chroms, self.groups, strict=True):
            out += [name] * (hi - lo)
        return out

    def check_references(self, lengths: dict[str, int], where: str) -> list[str]:
        """Refuse sites on references a dataset lacks; report (not drop) sites past a reference's end.

        Args:
            lengths: The dataset's reference lengths.
            where: The dataset, for messages.

        Returns:
            Warnings, one per reference with sites past its end.

        Raises:
            SitesError: For a reference the dataset does not have, naming file and line.
        """
        warns: list[str] = []
        for name, (lo, hi) in zip(self.chroms, self.groups, strict=True):
            if name not in lengths:
                raise SitesError(
                    f"{self.url} line {int(self.lines[lo])}: reference {name!r} is not in {where}"
                )
            beyond = np.flatnonzero(self.pos[lo:hi] >= lengths[name])
            if len(beyond):
                first = lo + int(beyond[0])
                warns.append(
                    f"{self.url} line {int(self.lines[first])}: {len(beyond)} site(s) on {name!r} lie past "
                    f"its end ({lengths[name]:,} bp in {where}); they are reported with no reads"
                )
        return warns


def is_vcf(url: str, head: bytes) -> bool:
    """Whether a sites file is a VCF: by its name, or by its first line."""
    name = url.lower().rstrip("/")
    if name.endswith(_VCF_SUFFIXES):
        return True
    if head[:2] == b"\x1f\x8b":
        try:
            head = gzip.decompress(head)
        except (OSError, EOFError):
            head = b""
    return head.startswith(b"##fileformat=VCF")


def read_sites(url: str, **storage_options: Any) -> Sites:
    """Read a BED or VCF sites file.

    Raises:
        SitesError: For a malformed line, bad REF/ALT or unsorted sites, naming file and line.
        OSError: If the file cannot be read.
    """
    storage, name = storage_for_file(url, **storage_options)
    raw = storage.read_bytes(name)
    if is_vcf(url, raw[:65536]):
        return _collect(url, True, _vcf_records(url, raw))
    try:
        records = [(ln, c, s, e, None) for ln, c, s, e in iter_samtools_bed(url, **storage_options)]
    except RegionError as exc:
        raise SitesError(str(exc)) from None
    return _collect(url, False, iter(records))


_Record = tuple[int, str, int, int, "tuple[str, str, tuple[str, ...]] | None"]


def _vcf_records(url: str, raw: bytes) -> Iterator[_Record]:
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise SitesError(f"{url}: damaged gzip file ({exc})") from None
    text = raw.decode("utf-8", errors="replace")
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line or line.startswith("#"):
            continue
        f = line.split("\t", 5)
        if len(f) < 5:
            raise SitesError(
                f"{url} line {lineno}: expected at least 5 tab-separated VCF columns, got {len(f)}"
            )
        chrom, pos_text, ident, ref, alt = f[:5]
        if not chrom:
            raise SitesError(f"{url} line {lineno}: empty CHROM")
        if not pos_text.isdigit() or int(pos_text) < 1:
            raise SitesError(f"{url} line {lineno}: POS must be a whole number >= 1, got {pos_text[:40]!r}")
        if not _BASES.fullmatch(ref):
            raise SitesError(f"{url} line {lineno}: REF must be bases (A, C, G, T, N), got {ref[:40]!r}")
        alleles: tuple[str, ...] = ()
        if alt != ".":
            alleles = tuple(alt.split(","))
            for a in alleles:
                if not (_BASES.fullmatch(a) or a == "*" or _SYMBOLIC.fullmatch(a) or _BREAKEND.fullmatch(a)):
                    raise SitesError(f"{url} line {lineno}: malformed ALT allele {a[:40]!r}")
                if a.upper() == ref.upper():
                    raise SitesError(f"{url} line {lineno}: ALT allele {a!r} repeats REF")
        p = int(pos_text) - 1
        yield lineno, chrom, p, p + 1, (ident or ".", ref.upper(), tuple(x.upper() for x in alleles))


def _collect(url: str, vcf: bool, records: Iterator[_Record]) -> Sites:
    sites = Sites(url, vcf)
    pos: list[int] = []
    lines: list[int] = []
    parts: list[I64] = []  # BED bases, an array per interval
    line_parts: list[I64] = []
    count = 0
    seen: dict[str, int] = {}
    current: str | None = None
    last = -1
    covered = 0  # BED: bases below this are sites already
    for lineno, chrom, p, end, extra in records:
        if chrom != current:
            if chrom in seen:
                raise SitesError(
                    f"{url} line {lineno}: sites are not sorted: {chrom!r} again after {current!r} "
                    f"(first seen on line {seen[chrom]})"
                )
            if current is not None:
                sites.groups.append((sites.groups[-1][1] if sites.groups else 0, count))
            seen[chrom] = lineno
            sites.chroms.append(chrom)
            current, last, covered = chrom, -1, 0
        if p < last:
            raise SitesError(
                f"{url} line {lineno}: sites are not sorted: {chrom}:{p + 1} after {chrom}:{last + 1}"
            )
        last = p
        if not vcf:
            # Every base of the interval; bases of overlapping intervals once.
            lo = max(p, covered)
            if end > lo:
                parts.append(np.arange(lo, end, dtype=np.int64))
                line_parts.append(np.full(end - lo, lineno, dtype=np.int64))
                count += end - lo
            covered = max(covered, end)
            continue
        count += 1
        pos.append(p)
        lines.append(lineno)
        if extra is not None:
            sites.ident.append(extra[0])
            sites.ref.append(extra[1])
            sites.alt.append(extra[2])
    if current is not None:
        sites.groups.append((sites.groups[-1][1] if sites.groups else 0, count))
    if vcf:
        sites.pos = np.asarray(pos, dtype=np.int64)
        sites.lines = np.asarray(lines, dtype=np.int64)
    elif parts:
        sites.pos = np.concatenate(parts)
        sites.lines = np.concatenate(line_parts)
    return sites

