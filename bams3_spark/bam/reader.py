"""Reading BAM (through pysam/htslib) into record tables.

htslib formats every record as SAM text (``AlignedSegment.to_string``), which
is exactly what ``samtools view`` prints; :func:`bams3_spark.format.sam.lines_to_table`
then splits the text into columns with Arrow. Only records with ``f``/``B:f``
aux fields take a slower path that recovers their exact float32 values.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pysam

from bams3_spark.exceptions import InputFormatError, UnsortedInputError, one_line
from bams3_spark.format.layout import UNPLACED_NAME
from bams3_spark.format.sam import exact_float_tags, float_tag_names, has_float_tag, lines_to_table, same_f32
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


def _record_text(read: pysam.AlignedSegment) -> str:
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


def window_table(bam: pysam.AlignmentFile, rname: str, start: int, end: int) -> pa.Table:
    """Return the records whose alignment start lies in [start, end) (0-based).

    Placed unmapped reads count by their position. ``rname='*'`` returns the
    unplaced unmapped reads. Uses the index.
    """
    if rname == UNPLACED_NAME:
        reads: Iterable[pysam.AlignedSegment] = bam.fetch(UNPLACED_NAME)
        lines = [_record_text(r) for r in reads]
    else:
        # fetch() returns reads overlapping the window; keep those starting in it.
        lines = [_record_text(r) for r in bam.fetch(rname, start, end) if r.reference_start >= start]
    return lines_to_table(lines)


@dataclass
class StreamBatch:
    """A run of records of one window from a sequential scan."""

    tid: int
    window_start: int
    lines: list[str]


def stream_windows(path: str, chunk_size: int, max_records: int) -> Iterator[StreamBatch]:
    """Scan a coordinate-sorted BAM once, yielding records grouped by window.

    Windows with more than ``max_records`` records come in several batches.

    Raises:
        UnsortedInputError: At the first record out of coordinate order.
        InputFormatError: If the file is truncated or damaged.
    """
    with open_bam(path) as bam:
        tid, wstart, last_pos = -2, -1, -1
        lines: list[str] = []
        seen_unplaced = False
        try:
            for read in bam.fetch(until_eof=True):
                rtid = read.reference_id
                pos = read.reference_start
                if rtid < 0 or pos < 0:
                    key_tid, key_start = -1, 0
                    seen_unplaced = True
                else:
                    if seen_unplaced or rtid < tid or (rtid == tid and pos < last_pos):
                        raise UnsortedInputError(
                            f"{path}: not coordinate-sorted (record {read.query_name!r}); "
                            "run 'samtools sort' first"
                        )
                    key_tid, key_start = rtid, pos - pos % chunk_size
                    last_pos = pos
                if (key_tid, key_start) != (tid, wstart) or len(lines) >= max_records:
                    if lines:
                        yield StreamBatch(tid, wstart, lines)
                    lines = []
                    tid, wstart = key_tid, key_start
                lines.append(_record_text(read))
        except OSError as exc:
            raise InputFormatError(f"{path}: {one_line(exc)}") from None
        if lines:
            yield StreamBatch(tid, wstart, lines)


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
