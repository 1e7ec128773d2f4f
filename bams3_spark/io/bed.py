"""BED files, read by the rules of the tool each command mirrors.

Two dialects differ in ways users' files exercise: ``samtools view -L`` /
``--regions-file`` (any whitespace, ``NAME POS`` single bases, gzip, comments
and ``browser``/``track`` lines) and ``mosdepth --by`` (tab-separated, a name
column, reading stops at the first empty line). Coordinates are BED's:
0-based, half-open.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from bams3_spark.exceptions import RegionError
from bams3_spark.format.manifest import MAX_POSITION
from bams3_spark.io.storage import storage_for_file

logger = logging.getLogger(__name__)

#: Positions are below 2**31 (FORMAT.md), so intervals are bounded by it
#: without changing what they select.
POS_LIMIT = MAX_POSITION + 1


def read_samtools_bed(
    url: str, lengths: Mapping[str, int], **storage_options: Any
) -> tuple[dict[str, list[tuple[int, int]]], list[str]]:
    """Read a BED file with the rules of samtools' ``bed_read``.

    Blank lines, ``#`` comments and ``browser``/``track`` lines are skipped;
    fields are separated by any whitespace; ``NAME START END`` is 0-based
    half-open, and ``NAME POS`` (one number) is the single 1-based base POS.
    The file may be gzip-compressed.

    Args:
        url: Path or URL of the BED file.
        lengths: Reference names of the dataset (others are skipped, with a warning).
        **storage_options: fsspec options for a remote file.

    Returns:
        Intervals per reference (in file order), and warnings.

    Raises:
        RegionError: For a malformed line or an empty interval (which samtools'
            multi-region iterator refuses).
        OSError: If the file cannot be read.
    """
    out: dict[str, list[tuple[int, int]]] = {}
    unknown: dict[str, int] = {}
    for _lineno, ref, start, end in iter_samtools_bed(url, **storage_options):
        if ref not in lengths:
            unknown[ref] = unknown.get(ref, 0) + 1
            continue
        out.setdefault(ref, []).append((min(start, POS_LIMIT), min(end, POS_LIMIT)))
    warns = [
        f"{url}: reference {ref!r} is not in the dataset; {n} interval(s) skipped"
        for ref, n in unknown.items()
    ]
    return out, warns


def iter_samtools_bed(url: str, **storage_options: Any) -> Iterator[tuple[int, str, int, int]]:
    """Yield (line number, name, start, end) of each interval of a BED file, by samtools' ``bed_read`` rules.

    See :func:`read_samtools_bed` for the rules; intervals come in file order,
    0-based half-open.

    Raises:
        RegionError: For a malformed line or an empty interval, naming file and line.
        OSError: If the file cannot be read.
    """
    storage, name = storage_for_file(url, **storage_options)
    raw = storage.read_bytes(name)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise RegionError(f"{url}: damaged gzip file ({exc})") from None
    text = raw.decode("utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        ref = fields[0]
        numbers = _leading_numbers(fields[1:])
        if numbers is None or not numbers:
            if ref in ("browser", "track"):
                continue
            raise RegionError(f"{url} line {lineno}: expected 'NAME START END', got {line.strip()[:80]!r}")
        if len(numbers) == 1:
            if numbers[0] < 1:
                raise RegionError(f"{url} line {lineno}: position must be >= 1")
            start, end = numbers[0] - 1, numbers[0]
        else:
            start, end = numbers
        if end < start:
            if ref in ("browser", "track"):
                continue
            raise RegionError(f"{url} line {lineno}: end {end} is before start {start}")
        if end == start:
            raise RegionError(f"{url} line {lineno}: empty interval {start}-{end}")
        yield lineno, ref, start, end


def _leading_numbers(fields: list[str]) -> list[int] | None:
    """Return the one or two leading unsigned integers (sscanf ``%u %u``)."""
    numbers: list[int] = []
    for f in fields[:2]:
        digits = f[1:] if f.startswith("+") else f
        if not digits.isdigit() or not digits.isascii():
            # sscanf stops at the first non-digit: "12x" still reads 12.
            head = ""
            for ch in digits:
                if not ("0" <= ch <= "9"):
                    break
                head += ch
            if head:
                numbers.append(int(head))
            if f.startswith("-"):
                return None
            break
        numbers.append(int(digits))
    return numbers


@dataclass(frozen=True)
class BedRegion:
    """One BED region (0-based, half-open) as mosdepth reads it."""

    chrom: str
    start: int
    end: int
    name: str = ""


def _open_text(path: str | os.PathLike[str]) -> IO[str]:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", newline="")
    return open(path, encoding="utf-8", newline="")


def read_mosdepth_bed(path: str | os.PathLike[str]) -> list[BedRegion]:
    """Read a BED file with mosdepth's rules.

    Lines starting with ``#`` or ``track `` are skipped; lines with fewer than
    three tab-separated fields are skipped with a warning; the fourth field, if
    any, is the region name and further fields are ignored. mosdepth reads the
    file with ``hts_getline`` in a ``> 0`` loop, so reading stops at the first
    empty line; that is reproduced. The file may be gzip/bgzip compressed.

    Args:
        path: BED file.

    Returns:
        Regions in file order.

    Raises:
        ValueError: On a non-integer or negative coordinate or start > end.
    """
    regions: list[BedRegion] = []
    with _open_text(path) as fh:
        for raw in fh:
            line = raw.rstrip("\n")
            if line == "":
                break
            if line.startswith(("track ", "#")):
                continue
            fields = line.strip().split("\t", 5)
            if len(fields) < 3:
                logger.warning("[mosdepth] skipping bad bed line:%s", line.strip())
                continue
            try:
                start = int(fields[1])
                end = int(fields[2])
            except ValueError:
                raise ValueError(f"bad BED coordinates in line {line.strip()!r}") from None
            if start < 0 or start > end:
                raise ValueError(f"bad BED interval in line {line.strip()!r}")
            regions.append(BedRegion(fields[0], start, end, fields[3] if len(fields) > 3 else ""))
    return regions
