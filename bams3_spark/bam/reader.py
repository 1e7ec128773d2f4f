"""Opening BAM files through pysam/htslib: headers, index statistics, and records as SAM text.

The converter reads records in columns (:mod:`bams3_spark.bam.scan`); htslib's
own SAM text of a record (:func:`record_text`: ``AlignedSegment.to_string``,
exactly what ``samtools view`` prints, with float aux values made exact) is
what the few records that decoder leaves to htslib go through.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pysam

from bams3_spark.exceptions import InputFormatError, one_line
from bams3_spark.format.sam import exact_float_tags, float_tag_names, has_float_tag, same_f32
from bams3_spark.io.storage import storage_for_file


@dataclass(frozen=True)
class BamInfo:
    """What the converter needs to know about an input BAM before reading it."""

    path: str
    header_text: str
    references: tuple[tuple[str, int], ...]
    has_index: bool
    sort_order: str | None
    mapped_per_ref: tuple[int, ...] | None
    unplaced: int | None


def record_text(read: pysam.AlignedSegment) -> str:
    """A record as ``samtools view`` prints it, except float aux values, which keep their exact text."""
    text: str = read.to_string()
    i = text.find(":f:")
    if i < 0 and ":B:f" not in text:
        return text
    if ":B:f" not in text:
        # Fast path: scalar float fields whose %g text already reads back to
        # the same float32 (aligners print few digits) need no rewrite.
        try:
            while i >= 0:
                if text[i - 3] != "\t":
                    break
                end = text.find("\t", i + 3)
                body = text[i + 3 :] if end < 0 else text[i + 3 : end]
                value = read.get_tag(text[i - 2 : i])
                if not isinstance(value, float) or not same_f32(body, value):
                    break
                i = text.find(":f:", i + 3)
            else:
                return text
        except (KeyError, TypeError, ValueError):
            pass
    return _exact_floats(read, text)


def _exact_floats(read: pysam.AlignedSegment, text: str) -> str:
    # htslib prints floats with %g; recover the exact values of float fields.
    fields = text.split("\t", 11)
    if len(fields) < 12 or not has_float_tag(fields[11]):
        return text
    values = {tag: read.get_tag(tag) for tag in float_tag_names(fields[11])}
    fields[11] = exact_float_tags(fields[11], values)
    return "\t".join(fields)


def open_bam(path: str) -> pysam.AlignmentFile:
    """Open a local BAM/SAM/CRAM file, turning htslib's failures into one-line errors.

    Raises:
        FileNotFoundError: If the file does not exist.
        InputFormatError: If it is not alignment data.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    save = pysam.set_verbosity(0)
    try:
        return pysam.AlignmentFile(path, "r", check_sq=False)
    except (ValueError, OSError) as exc:
        msg = one_line(exc) if str(exc).strip() else "unreadable"
        if "alignment data" in msg or "format" in msg.lower():
            msg = "not a BAM/SAM file"
        raise InputFormatError(f"{path}: {msg}") from None
    finally:
        pysam.set_verbosity(save)


def inspect_bam(path: str) -> BamInfo:
    """Read the header (and index statistics, if indexed) of a local BAM."""
    with open_bam(path) as bam:
        if not bam.is_bam and not bam.is_cram and not bam.is_sam:
            raise InputFormatError(f"{path}: not a BAM file")
        header = bam.header
        refs = tuple(zip(bam.references, bam.lengths, strict=True))
        hd = header.to_dict().get("HD", {})
        has_index = bool(bam.is_bam or bam.is_cram) and bam.has_index()
        mapped = unplaced = None
        if has_index:
            stats = bam.get_index_statistics()
            mapped = tuple(s.total for s in stats)
            unplaced = bam.nocoordinate
        return BamInfo(
            path=path,
            # samtools' own rendering: str(header) adds a blank line to
            # headers without @SQ lines.
            header_text=str(pysam.view("-H", "--no-PG", path)),
            references=refs,
            has_index=has_index,
            sort_order=hd.get("SO"),
            mapped_per_ref=mapped,
            unplaced=unplaced,
        )


@contextmanager
def local_bam(url: str, **storage_options: Any) -> Iterator[str]:
    """Yield a local path for a BAM given as a path or URL (downloaded with its index)."""
    storage, name = storage_for_file(url, **storage_options)
    if storage.is_local:
        yield storage.full_path(name)
        return
    if not storage.exists(name):
        raise FileNotFoundError(f"{storage.url_of(name)}: not found")
    with tempfile.TemporaryDirectory(prefix="bams3-in-") as tmp:
        dest = os.path.join(tmp, name)
        with open(dest, "wb") as fh:
            fh.write(storage.read_bytes(name))
        for suffix in (".bai", ".csi"):
            if storage.exists(name + suffix):
                with open(dest + suffix, "wb") as fh:
                    fh.write(storage.read_bytes(name + suffix))
        yield dest
